//! Ports for servers the tests start on fixed numbers (BIND, pebble, private Redis servers, a
//! DNS listener pebble asks, a gRPC listener on every address).

use std::net::{TcpListener, UdpSocket};

/// A loopback port free for both TCP and UDP, below the kernel's ephemeral range, so no client
/// connection of a test running beside it takes the number before the server binds it (a port
/// from `bind(0)` is ephemeral: a concurrent test's outgoing connection may hold it for TCP while
/// it is free for UDP, and a DNS server then answers UDP only).
pub fn free_port() -> u16 {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000.min(ephemeral_start / 2);
    for _ in 0..1000 {
        let port = rand::random_range(low..ephemeral_start);
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_start}")
}
