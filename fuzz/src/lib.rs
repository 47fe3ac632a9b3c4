//! Shared fuzzing helpers: a driver that plays a probe conversation the way the
//! scan engine does, and checks on what a probe keeps.

use perimeter_probe::text::{MAX_BANNER_CHARS, MAX_VALUE_CHARS};
use perimeter_probe::{Identified, Next, Probe};

/// Asserts what an identification keeps is capped and printable.
pub fn check(found: &Option<Identified>) {
    let Some(found) = found else { return };
    let printable = |text: &str| text.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let service = &found.service;
    if let Some(banner) = &service.banner {
        assert!(banner.len() <= MAX_BANNER_CHARS && printable(banner));
    }
    for value in [&service.product, &service.version].into_iter().flatten() {
        assert!(value.len() <= MAX_VALUE_CHARS && printable(value));
    }
    for value in service.extra.values() {
        assert!(value.len() <= 2 * MAX_BANNER_CHARS && printable(value));
    }
    for finding in &found.findings {
        assert!(finding.subject.is_empty());
        for evidence in &finding.evidence {
            assert!(evidence.len() <= 2 * MAX_BANNER_CHARS && printable(evidence));
        }
    }
}

/// Plays `answers` (one per read) to `probe`, capping the buffer at its
/// `max_response` like the engine does.
pub fn drive(probe: &mut dyn Probe, answers: &[Vec<u8>], timed_out: bool) {
    let mut received: Vec<u8> = Vec::new();
    let mut next = probe.start();
    for answer in answers {
        match &next {
            Next::Done(found) => return check(found),
            Next::Send(_) => received.clear(),
            Next::Receive => {}
        }
        let room = probe.max_response().saturating_sub(received.len());
        if room == 0 {
            return check(&probe.on_end(&received, false));
        }
        received.extend_from_slice(answer.get(..room.min(answer.len())).unwrap_or_default());
        next = probe.on_data(&received);
    }
    match next {
        Next::Done(found) => check(&found),
        Next::Send(_) => check(&probe.on_end(&[], timed_out)),
        Next::Receive => check(&probe.on_end(&received, timed_out)),
    }
}
