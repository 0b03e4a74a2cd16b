//! Small address helpers shared by every boundary that looks at a peer's IP.

use std::net::IpAddr;

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as dual-stack listeners report IPv4 peers) as
/// the IPv4 address it carries; any other address unchanged. Compare and store addresses in this
/// form so one client is one address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
