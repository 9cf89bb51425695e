//! A media socket that sends several packets to one viewer in one system call.
//!
//! A video frame leaves as a run of RTP packets of the same size (the last may be
//! shorter), all to one viewer. With UDP segmentation offload (Linux's `UDP_SEGMENT`, set
//! up by `quinn-udp`) the run goes down the network stack once, as one buffer, and is cut
//! into datagrams at the last moment (by the network card where it can), instead of paying
//! for the stack once per packet. Where the system or the card cannot, `quinn-udp` notices
//! the first failure and sends one packet per call from then on.
//!
//! Each socket has a reader task ([`read_datagrams`]) that hands what arrives to the
//! [`Dispatcher`].

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use quinn_udp::{Transmit as UdpTransmit, UdpSocketState};
use str0m::net::Transmit;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::trace;

use super::datagram::Datagram;
use super::dispatch::Dispatcher;

/// The most bytes one segmented send may carry (the IP datagram limit, less headers).
const MAX_SEGMENTED_BYTES: usize = 65_000;

/// The largest datagram read; WebRTC keeps packets under the path MTU.
const MAX_DATAGRAM: usize = 2048;

/// A UDP socket for media, with the segmentation offload state of its system.
pub(crate) struct MediaSocket {
    addr: SocketAddr,
    socket: UdpSocket,
    state: UdpSocketState,
}

impl MediaSocket {
    /// Wraps a bound socket at `addr`.
    pub(crate) fn new(addr: SocketAddr, socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new((&socket).into())?;
        Ok(MediaSocket { addr, socket, state })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) async fn recv_from(&self, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buffer).await
    }

    /// Packets one send may carry (1 where segmentation offload is unavailable).
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Sends `contents` to `destination`: one datagram, or, with a `segment_size`, as many
    /// datagrams of that size as it holds (the last may be shorter).
    pub(crate) async fn send(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let transmit = UdpTransmit { destination, ecn: None, contents, segment_size, src_ip: None };
        self.socket.async_io(Interest::WRITABLE, || self.state.try_send((&self.socket).into(), &transmit)).await
    }
}

/// Reads one media socket until the drivers stop, handing each datagram to the dispatcher.
pub(super) async fn read_datagrams(socket: Arc<MediaSocket>, dispatcher: Arc<Dispatcher>) {
    let destination = socket.addr();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, source)) => {
                let datagram = Datagram::read_now(buffer[..len].to_vec(), source, destination, false);
                if dispatcher.deliver(datagram).is_err() {
                    return;
                }
            }
            // ICMP errors (e.g. a viewer's port closed) surface here on some systems; they
            // concern one peer, not the socket.
            Err(error) => trace!(%error, "UDP receive error"),
        }
    }
}

/// Splits `transmits` into runs that can each go in one segmented send: UDP packets from
/// the same local address to the same destination, all of the first one's size except
/// perhaps the last, at most `max_segments` of them and [`MAX_SEGMENTED_BYTES`] in all.
/// Anything else (a TCP packet, a change of destination or size) starts a new run.
pub(crate) fn segment_runs(transmits: &[Transmit], max_segments: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < transmits.len() {
        let first = &transmits[start];
        let size = first.contents.len();
        let mut end = start + 1;
        let mut bytes = size;
        let mut last_was_full = true;
        while end < transmits.len() && end - start < max_segments && last_was_full {
            let next = &transmits[end];
            let joins = first.proto == str0m::net::Protocol::Udp
                && next.proto == first.proto
                && next.source == first.source
                && next.destination == first.destination
                && next.contents.len() <= size
                && bytes + next.contents.len() <= MAX_SEGMENTED_BYTES;
            if !joins {
                break;
            }
            last_was_full = next.contents.len() == size;
            bytes += next.contents.len();
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use str0m::net::{DatagramSend, Protocol};

    use super::*;

    fn packet(destination: &str, size: usize) -> Transmit {
        packet_over(Protocol::Udp, destination, size)
    }

    fn packet_over(proto: Protocol, destination: &str, size: usize) -> Transmit {
        Transmit {
            proto,
            source: "127.0.0.1:8000".parse().unwrap(),
            destination: destination.parse().unwrap(),
            contents: DatagramSend::from(vec![0u8; size]),
        }
    }

    #[test]
    fn a_frame_to_one_viewer_is_one_run_ending_with_its_short_packet() {
        let frame = [
            packet("10.0.0.1:5000", 1200),
            packet("10.0.0.1:5000", 1200),
            packet("10.0.0.1:5000", 1200),
            packet("10.0.0.1:5000", 300),
            // A packet after the short one starts again, whatever its size.
            packet("10.0.0.1:5000", 1200),
        ];
        assert_eq!(segment_runs(&frame, 64), [0..4, 4..5]);
    }

    #[test]
    fn runs_end_at_a_new_destination_a_larger_packet_tcp_or_the_limits() {
        let packets = [
            packet("10.0.0.1:5000", 1000),
            packet("10.0.0.2:5000", 1000),
            packet("10.0.0.2:5000", 1100),
            packet_over(Protocol::Tcp, "10.0.0.2:5000", 1100),
            packet_over(Protocol::Tcp, "10.0.0.2:5000", 1100),
        ];
        assert_eq!(segment_runs(&packets, 64), [0..1, 1..2, 2..3, 3..4, 4..5]);

        let many: Vec<Transmit> = (0..10).map(|_| packet("10.0.0.1:5000", 1200)).collect();
        assert_eq!(segment_runs(&many, 4), [0..4, 4..8, 8..10]);
        assert_eq!(segment_runs(&many, 1).len(), 10);

        let large: Vec<Transmit> = (0..60).map(|_| packet("10.0.0.1:5000", 1200)).collect();
        let runs = segment_runs(&large, 64);
        assert!(runs.iter().all(|run| run.len() * 1200 <= MAX_SEGMENTED_BYTES), "{runs:?}");
        assert_eq!(runs.iter().map(ExactSizeIterator::len).sum::<usize>(), 60);
    }

    #[tokio::test]
    async fn a_segmented_send_arrives_as_separate_datagrams() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let media = MediaSocket::new(socket.local_addr().unwrap(), socket).unwrap();
        let viewer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let contents: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        media.send(viewer.local_addr().unwrap(), &contents, Some(1000)).await.unwrap();

        let mut received = Vec::new();
        let mut buffer = [0u8; 2048];
        for _ in 0..3 {
            let (len, from) = viewer.recv_from(&mut buffer).await.unwrap();
            assert_eq!(from, media.addr());
            received.push(buffer[..len].to_vec());
        }
        let sizes: Vec<usize> = received.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!(received.concat(), contents);
    }
}
