//! Where peers can reach the server: the host addresses offered as ICE candidates, and one
//! UDP socket per address, all on the same port.
//!
//! ICE matches each datagram to the local candidate it arrived on, so each advertised
//! address gets its own socket rather than one wildcard socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;

/// The addresses to offer as host candidates when the server listens on `listen_ip`: that
/// address itself, or for a wildcard address every IPv4 interface address (loopback last,
/// link-local skipped).
pub(crate) fn host_ips(listen_ip: IpAddr) -> io::Result<Vec<IpAddr>> {
    if !listen_ip.is_unspecified() {
        return Ok(vec![listen_ip]);
    }
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|interface| interface.ip())
        .filter(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_link_local() && !v4.is_unspecified()))
        .collect();
    ips.sort_by_key(|ip| (ip.is_loopback(), *ip));
    ips.dedup();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    Ok(ips)
}

/// Binds one UDP socket per address, all on `port` (0: the port the first bind picks), and
/// returns each with its local address.
pub(crate) async fn bind_all(ips: &[IpAddr], port: u16) -> io::Result<Vec<(SocketAddr, UdpSocket)>> {
    let mut sockets = Vec::with_capacity(ips.len());
    let mut port = port;
    for &ip in ips {
        let socket = UdpSocket::bind(SocketAddr::new(ip, port)).await.map_err(|error| {
            io::Error::new(error.kind(), format!("could not bind UDP {ip}:{port} for media: {error}"))
        })?;
        let addr = socket.local_addr()?;
        port = addr.port();
        sockets.push((addr, socket));
    }
    Ok(sockets)
}
