#![no_main]
//! The UDP plan as an engine runs it: a question for a port, any number of
//! datagrams back, each through `identify_udp` (and so `sniff_udp`), folded
//! together with `merge`.

use libfuzzer_sys::fuzz_target;
use perimeter_probe::udp::{self, UdpRequest};

fuzz_target!(|input: (u8, u16, u16, Vec<Vec<u8>>)| {
    let (request, id, port, replies) = input;
    let request = UdpRequest::ALL[usize::from(request) % UdpRequest::ALL.len()];
    let sent = request.payload(id);
    let mut found: Option<perimeter_probe::Identified> = None;
    for reply in &replies {
        let Some(more) = udp::identify_udp(port, &sent, reply) else {
            continue;
        };
        perimeter_fuzz::check(&Some(more.clone()));
        match &mut found {
            Some(found) => udp::merge(found, more),
            None => found = Some(more),
        }
    }
    if let Some(found) = &found {
        assert!(found.service.extra.len() <= udp::MAX_MERGED_EXTRA);
    }
    perimeter_fuzz::check(&found);
});
