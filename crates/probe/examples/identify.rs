//! Identifies what answers on one TCP address with the probe plan and a small
//! blocking driver, and says how long it took:
//!
//! ```sh
//! cargo run -p perimeter-probe --example identify -- 127.0.0.1:6379 [read-timeout-ms]
//! ```
//!
//! For trying probes by hand and timing them; the scan engine has the real,
//! asynchronous driver. Only point it at machines you are allowed to probe.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use perimeter_probe::{Identified, Next, Probe, probes_for_address};

fn run_probe(address: SocketAddr, probe: &mut dyn Probe, timeout: Duration) -> Option<Identified> {
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let cap = probe.max_response();
    let mut received = Vec::new();
    let mut next = probe.start();
    loop {
        match next {
            Next::Done(found) => return found,
            Next::Send(request) => {
                received.clear();
                if stream.write_all(&request).is_err() {
                    return probe.on_end(&received, false);
                }
            }
            Next::Receive => {}
        }
        let room = cap.saturating_sub(received.len());
        if room == 0 {
            return probe.on_end(&received, false);
        }
        let mut chunk = vec![0u8; room.min(8192)];
        match stream.read(&mut chunk) {
            Ok(0) => return probe.on_end(&received, false),
            Ok(n) => {
                received.extend_from_slice(chunk.get(..n).unwrap_or_default());
                next = probe.on_data(&received);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return probe.on_end(&received, true);
            }
            Err(_) => return probe.on_end(&received, false),
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(address) = args.next().and_then(|a| a.parse::<SocketAddr>().ok()) else {
        eprintln!("usage: identify ADDRESS:PORT [read-timeout-ms]");
        std::process::exit(2);
    };
    let timeout = Duration::from_millis(args.next().and_then(|t| t.parse().ok()).unwrap_or(500));
    let started = Instant::now();
    let mut run = Vec::new();
    let mut found = None;
    for mut probe in probes_for_address(address.ip(), address.port()) {
        run.push(probe.name());
        found = run_probe(address, probe.as_mut(), timeout);
        if found.is_some() {
            break;
        }
    }
    let elapsed = started.elapsed();
    println!("probes: {}", run.join(", "));
    match found {
        Some(found) => {
            let service = &found.service;
            println!(
                "service: {} product: {} version: {} auth: {}",
                service.name,
                service.product.as_deref().unwrap_or("-"),
                service.version.as_deref().unwrap_or("-"),
                service.auth.as_str()
            );
            for (key, value) in &service.extra {
                println!("  {key}: {value}");
            }
            for finding in &found.findings {
                println!(
                    "finding: {} ({}) {}",
                    finding.rule,
                    finding.severity,
                    finding.evidence.join("; ")
                );
            }
        }
        None => println!("service: not identified"),
    }
    println!("elapsed: {} ms", elapsed.as_millis());
}
