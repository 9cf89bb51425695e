//! How the decoding viewer's packets travel: one UDP socket, or ICE-TCP connections (the
//! viewer is the active side: it connects to the server's passive TCP candidates and
//! frames every packet as RFC 4571 asks, a 16-bit length then the packet).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use str0m::net::Protocol;

/// Where the viewer sends and receives.
pub(crate) enum Wire {
    Udp(UdpSocket),
    Tcp(TcpLinks),
}

/// One connection per server candidate the viewer has sent to, with what has been read of
/// the next frame.
#[derive(Default)]
pub(crate) struct TcpLinks {
    links: HashMap<SocketAddr, (TcpStream, Vec<u8>)>,
}

impl Wire {
    /// The protocol str0m is told packets arrived by.
    pub(crate) fn protocol(&self) -> Protocol {
        match self {
            Wire::Udp(_) => Protocol::Udp,
            Wire::Tcp(_) => Protocol::Tcp,
        }
    }

    /// Sends one packet to `destination` (for TCP, connecting first if need be).
    pub(crate) fn send(&mut self, packet: &[u8], destination: SocketAddr) -> std::io::Result<()> {
        match self {
            Wire::Udp(socket) => socket.send_to(packet, destination).map(drop),
            Wire::Tcp(tcp) => {
                let (stream, _) = match tcp.links.entry(destination) {
                    Entry::Occupied(link) => link.into_mut(),
                    Entry::Vacant(slot) => {
                        let stream = TcpStream::connect_timeout(&destination, Duration::from_secs(1))?;
                        stream.set_nodelay(true)?;
                        stream.set_nonblocking(true)?;
                        slot.insert((stream, Vec::new()))
                    }
                };
                let length = u16::try_from(packet.len()).map_err(|_| ErrorKind::InvalidInput)?;
                let mut frame = length.to_be_bytes().to_vec();
                frame.extend_from_slice(packet);
                // The socket is non-blocking; a frame is small, so wait out a full buffer.
                let mut written = 0;
                while written < frame.len() {
                    match stream.write(&frame[written..]) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    /// Receives one packet into `buffer` within `timeout`: its length and sender, or `None`
    /// if nothing came.
    pub(crate) fn recv(
        &mut self,
        buffer: &mut [u8],
        timeout: Duration,
    ) -> std::io::Result<Option<(usize, SocketAddr)>> {
        match self {
            Wire::Udp(socket) => {
                socket.set_read_timeout(Some(timeout))?;
                match socket.recv_from(buffer) {
                    Ok(received) => Ok(Some(received)),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Wire::Tcp(tcp) => {
                let until = Instant::now() + timeout;
                loop {
                    for (&remote, (stream, pending)) in &mut tcp.links {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk) {
                            Ok(0) => {}
                            Ok(n) => pending.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                        if pending.len() >= 2 {
                            let length = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
                            if pending.len() >= 2 + length && length <= buffer.len() {
                                buffer[..length].copy_from_slice(&pending[2..2 + length]);
                                pending.drain(..2 + length);
                                return Ok(Some((length, remote)));
                            }
                        }
                    }
                    if Instant::now() >= until {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
}
