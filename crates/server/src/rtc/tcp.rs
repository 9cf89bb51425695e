//! ICE over TCP (RFC 6544), for viewers whose network blocks UDP: passive TCP candidates
//! on the host addresses, each connection carrying STUN, DTLS, RTP and RTCP in RFC 4571
//! frames (a 16-bit length, then the packet).
//!
//! Each connection has a reader task, which hands the drivers (through the dispatcher) every
//! packet as a datagram from that connection, and a writer task fed by a bounded queue: when a viewer's TCP
//! cannot keep up, its packets are dropped (as UDP would lose them) rather than delaying
//! the driver or other viewers. Connections are limited in number and closed when idle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use tracing::{debug, trace};

use super::datagram::Datagram;
use super::dispatch::Dispatcher;

/// Packets queued for one connection's writer; beyond this they are dropped.
pub(super) const WRITE_QUEUE_PACKETS: usize = 512;

/// A connection silent this long is closed. A live viewer's ICE consent checks arrive every
/// few seconds, so only dead or idle connections (which would hold one of the limited
/// places) reach it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` (at `local`) until the drivers stop, at most `limit`
/// at a time.
pub(super) async fn accept(
    listener: TcpListener,
    local: SocketAddr,
    dispatcher: Arc<Dispatcher>,
    limit: Arc<Semaphore>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                trace!(%error, "TCP accept failed");
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%remote, "too many ICE-TCP connections; refusing one");
            continue;
        };
        if dispatcher.is_stopped() {
            return;
        }
        let dispatcher = dispatcher.clone();
        tokio::spawn(async move {
            serve(stream, local, remote, &dispatcher).await;
            drop(permit);
        });
    }
}

/// Runs one connection: registers its writer with the drivers, reads frames until the
/// connection ends, then tells the drivers it is gone.
async fn serve(stream: TcpStream, local: SocketAddr, remote: SocketAddr, dispatcher: &Dispatcher) {
    // Media is latency-sensitive: no Nagle.
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (packets, queue) = mpsc::channel(WRITE_QUEUE_PACKETS);
    if dispatcher.tcp_opened(local, remote, &packets).await.is_err() {
        return;
    }
    drop(packets);
    let writing = tokio::spawn(write_frames(BufWriter::new(writer), queue));
    while let Ok(Ok(length)) = timeout(IDLE_TIMEOUT, reader.read_u16()).await {
        let mut data = vec![0u8; usize::from(length)];
        if !matches!(timeout(IDLE_TIMEOUT, reader.read_exact(&mut data)).await, Ok(Ok(_))) {
            break;
        }
        let datagram = Datagram::read_now(data, remote, local, true);
        if dispatcher.deliver(datagram).is_err() {
            break;
        }
    }
    trace!(%remote, "ICE-TCP connection ended");
    writing.abort();
    dispatcher.tcp_closed(local, remote).await;
}

async fn write_frames(mut writer: BufWriter<tokio::net::tcp::OwnedWriteHalf>, mut queue: mpsc::Receiver<Vec<u8>>) {
    while let Some(packet) = queue.recv().await {
        let Ok(length) = u16::try_from(packet.len()) else { continue };
        if writer.write_u16(length).await.is_err() || writer.write_all(&packet).await.is_err() {
            return;
        }
        // Send what is queued together; flush once the queue is drained.
        if queue.is_empty() && writer.flush().await.is_err() {
            return;
        }
    }
}
