//! What the network tasks hand the peer drivers: packets read from the media sockets or
//! ICE-TCP connections, and the opening and closing of those connections.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::sync::mpsc;

/// A packet read from one of the sockets, or one frame of an ICE-TCP connection.
pub(super) struct Datagram {
    pub(super) data: Vec<u8>,
    pub(super) source: SocketAddr,
    pub(super) destination: SocketAddr,
    /// Whether it came over an ICE-TCP connection rather than UDP.
    pub(super) tcp: bool,
    /// When it was read, for the time it waits for its driver.
    pub(super) received_at: Instant,
}

impl Datagram {
    /// A datagram read just now.
    pub(super) fn read_now(data: Vec<u8>, source: SocketAddr, destination: SocketAddr, tcp: bool) -> Self {
        Datagram { data, source, destination, tcp, received_at: Instant::now() }
    }
}

/// What the network tasks tell the drivers.
pub(super) enum NetEvent {
    Datagram(Datagram),
    /// An ICE-TCP connection from `remote` to our `local` is open; packets for it go to
    /// `packets`.
    TcpOpened {
        local: SocketAddr,
        remote: SocketAddr,
        packets: mpsc::Sender<Vec<u8>>,
    },
    TcpClosed {
        local: SocketAddr,
        remote: SocketAddr,
    },
}
