//! Where peers can reach the server: the host addresses offered as ICE candidates (one UDP
//! socket each, all on the same port), and the public addresses of a 1:1 NAT in front of
//! them.
//!
//! ICE matches each datagram to the local candidate it arrived on, so each host address
//! gets its own socket rather than one wildcard socket. A public address has no socket of
//! its own: the NAT forwards its traffic to a host address, and the answers go back out
//! through the NAT.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, UdpSocket};

/// The addresses to offer as host candidates and listen on.
///
/// `chosen` (the `host_addresses` option) names IP addresses or interfaces (all of an
/// interface's addresses). Without it the listen address decides: a specific address
/// offers only itself; `0.0.0.0` every IPv4 interface address; `::` every IPv4 and IPv6
/// address. Link-local addresses are skipped (they need a scope a browser cannot give),
/// and loopback comes last.
pub(crate) fn host_ips(listen_ip: IpAddr, chosen: &[String]) -> io::Result<Vec<IpAddr>> {
    if chosen.is_empty() && !listen_ip.is_unspecified() {
        return Ok(vec![listen_ip]);
    }
    let interfaces = if_addrs::get_if_addrs()?;
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_unicast_link_local() && !v6.is_unspecified(),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    if chosen.is_empty() {
        let want_v6 = listen_ip.is_ipv6();
        ips.extend(interfaces.iter().map(|i| i.ip()).filter(|ip| usable(ip) && (ip.is_ipv4() || want_v6)));
        if ips.is_empty() {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    } else {
        for name in chosen {
            if let Ok(ip) = name.parse::<IpAddr>() {
                ips.push(ip);
                continue;
            }
            let before = ips.len();
            ips.extend(interfaces.iter().filter(|i| i.name == *name).map(|i| i.ip()).filter(usable));
            if ips.len() == before {
                let mut known: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                known.dedup();
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "host address {name:?} is neither an IP address nor an interface with one (interfaces: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6(), *ip));
    ips.dedup();
    Ok(ips)
}

/// Binds one UDP socket per address, all on `port` (0: the port the first bind picks), and
/// returns each with its local address.
pub(crate) async fn bind_all(ips: &[IpAddr], port: u16) -> io::Result<Vec<(SocketAddr, UdpSocket)>> {
    let mut sockets = Vec::with_capacity(ips.len());
    let mut port = port;
    for &ip in ips {
        let socket = UdpSocket::bind(SocketAddr::new(ip, port)).await.map_err(|error| {
            io::Error::new(error.kind(), format!("could not bind UDP {} for media: {error}", SocketAddr::new(ip, port)))
        })?;
        let addr = socket.local_addr()?;
        port = addr.port();
        sockets.push((addr, socket));
    }
    Ok(sockets)
}

/// Binds one TCP listener per address for ICE-TCP, all on `port` (0: the port the first
/// bind picks).
pub(crate) async fn bind_tcp_all(ips: &[IpAddr], port: u16) -> io::Result<Vec<(SocketAddr, TcpListener)>> {
    let mut listeners = Vec::with_capacity(ips.len());
    let mut port = port;
    for &ip in ips {
        let listener = TcpListener::bind(SocketAddr::new(ip, port)).await.map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("could not listen on TCP {} for ICE-TCP media: {error}", SocketAddr::new(ip, port)),
            )
        })?;
        let addr = listener.local_addr()?;
        port = addr.port();
        listeners.push((addr, listener));
    }
    Ok(listeners)
}

/// The public addresses (`public_addresses`: IPs, or host names looked up now) on the
/// media port.
pub(crate) async fn public_addrs(names: &[String], port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for name in names {
        if let Ok(ip) = name.parse::<IpAddr>() {
            addrs.push(SocketAddr::new(ip, port));
            continue;
        }
        let found = tokio::net::lookup_host((name.as_str(), port)).await.map_err(|error| {
            io::Error::new(error.kind(), format!("could not look up public address {name:?}: {error}"))
        })?;
        addrs.extend(found);
    }
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn a_specific_listen_address_offers_only_itself() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(host_ips(ip, &[]).unwrap(), [ip]);
    }

    #[test]
    fn wildcards_offer_every_usable_address_loopback_last() {
        let v4 = host_ips(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &[]).unwrap();
        assert!(v4.iter().all(IpAddr::is_ipv4), "{v4:?}");
        assert_eq!(v4.last(), Some(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{v4:?}");
        let dual = host_ips(IpAddr::V6(Ipv6Addr::UNSPECIFIED), &[]).unwrap();
        assert!(dual.contains(&IpAddr::V6(Ipv6Addr::LOCALHOST)), "{dual:?}");
        assert!(v4.iter().all(|ip| dual.contains(ip)), "{v4:?} ⊄ {dual:?}");
        assert!(dual.iter().all(|ip| !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())), "{dual:?}");
    }

    #[test]
    fn chosen_addresses_are_ips_or_interfaces() {
        let unspecified = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let loopback = host_ips(unspecified, &["lo".to_owned()]).unwrap();
        assert!(loopback.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{loopback:?}");
        let ip = host_ips(unspecified, &["127.0.0.1".to_owned()]).unwrap();
        assert_eq!(ip, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let error = host_ips(unspecified, &["nosuch0".to_owned()]).unwrap_err().to_string();
        assert!(error.contains("\"nosuch0\"") && error.contains("lo"), "{error}");
    }

    #[tokio::test]
    async fn public_addresses_are_ips_or_names_on_the_media_port() {
        let names = ["203.0.113.7".to_owned(), "localhost".to_owned()];
        let addrs = public_addrs(&names, 8000).await.unwrap();
        assert_eq!(addrs[0], "203.0.113.7:8000".parse().unwrap());
        assert!(addrs.iter().any(|addr| addr.ip().is_loopback() && addr.port() == 8000), "{addrs:?}");
        let error = public_addrs(&["no-such-host.invalid".to_owned()], 8000).await.unwrap_err().to_string();
        assert!(error.contains("no-such-host.invalid"), "{error}");
    }
}
