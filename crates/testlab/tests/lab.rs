//! The lab itself: two hosts on the bridge reach each other, nothing else.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use perimeter_testlab::{Lab, Requirement, require};

#[test]
fn hosts_reach_each_other_and_namespaces_go_away() {
    if !require(Requirement::Netns) {
        return;
    }
    let names;
    {
        let mut lab = Lab::new().expect("lab");
        let a = lab.add_host("a", &["198.18.0.1/24"]).expect("host a");
        let b = lab.add_host("b", &["198.18.0.2/24"]).expect("host b");
        names = vec![
            a.name().to_owned(),
            b.name().to_owned(),
            lab.switch().name().to_owned(),
        ];

        let listener = b
            .enter(|| {
                TcpListener::bind("198.18.0.2:0").map(|l| {
                    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                    (l, port)
                })
            })
            .expect("enter b")
            .expect("bind in b");
        let (_listener, port) = listener;
        let target: SocketAddr = format!("198.18.0.2:{port}").parse().expect("addr");
        let connected = a
            .enter(move || TcpStream::connect_timeout(&target, Duration::from_secs(2)).is_ok())
            .expect("enter a");
        assert!(connected, "a should reach b over the bridge");

        // No route beyond the lab: anything off-link is unreachable at once.
        let routes = a.ip(&["route", "show"]).expect("routes");
        assert!(
            !routes.contains("default"),
            "lab host has a default route: {routes}"
        );
    }
    let list = perimeter_testlab::run("ip", &["netns", "list"]).expect("ip netns list");
    for name in names {
        assert!(!list.contains(&name), "{name} still exists after drop");
    }
}
