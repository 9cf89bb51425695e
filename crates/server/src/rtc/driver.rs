//! A peer driver: the task that runs one [`Fanout`] (its share of the peers; the
//! [dispatcher](super::dispatch) spreads them over one driver per core). It owns only the
//! I/O and the clock: it waits for a command, a frame of the stream, a network event or
//! the fan-out's next deadline, hands it over with the time, then sends what the fan-out
//! made on the shared UDP sockets (or ICE-TCP connections) and tells the rest of the
//! server what it must know. What to take first, and every decision about the peers, is
//! the fan-out's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use str0m::net::{Protocol, Transmit};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{debug, info, trace, warn};

use super::datagram::NetEvent;
use super::dispatch::{Dispatcher, DriverIndex};
use super::fanout::{Command, Fanout, FanoutEvent, FrameInput, Turn};
use super::socket::{MediaSocket, segment_runs};
use crate::stats::Metrics;
use crate::stream::{EncoderRequests, StreamFrame};

/// Incoming datagrams waiting for a driver; past this, new ones are dropped as a full
/// network queue would.
pub(super) const DATAGRAM_QUEUE: usize = 4096;

/// What the rest of the server sends a driver.
#[derive(Debug)]
pub(crate) enum Request {
    /// Do this; answer whether the session it names exists.
    Command(Command, Option<oneshot::Sender<bool>>),
    /// Close every peer and stop.
    Shutdown,
}

/// What woke the driver.
enum Wake {
    Request(Option<Request>),
    Frame(Result<StreamFrame, broadcast::error::RecvError>),
    Network(NetEvent),
    Timeout,
}

pub(crate) struct Driver {
    index: DriverIndex,
    fanout: Fanout,
    dispatcher: Arc<Dispatcher>,
    /// The media sockets (one per host candidate), shared by every driver.
    sockets: Vec<Arc<MediaSocket>>,
    /// Open ICE-TCP connections by (local, remote) address: where their packets go.
    tcp_links: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
    frames: broadcast::Receiver<StreamFrame>,
    encoders: EncoderRequests,
    metrics: Arc<Metrics>,
    /// The datagrams taken from the fan-out and not sent yet.
    outgoing: Vec<Transmit>,
    /// Where a run of packets to one viewer is put together for one segmented send.
    segments: Vec<u8>,
}

impl Driver {
    pub(crate) fn new(
        index: DriverIndex,
        dispatcher: Arc<Dispatcher>,
        sockets: Vec<Arc<MediaSocket>>,
        frames: broadcast::Receiver<StreamFrame>,
        encoders: EncoderRequests,
        metrics: Arc<Metrics>,
    ) -> Self {
        Driver {
            index,
            fanout: Fanout::new(encoders.ladder(), metrics.clone(), Instant::now()),
            dispatcher,
            sockets,
            tcp_links: HashMap::new(),
            frames,
            encoders,
            metrics,
            outgoing: Vec::new(),
            segments: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, mut requests: mpsc::Receiver<Request>, mut events: mpsc::Receiver<NetEvent>) {
        let mut stream_open = true;
        loop {
            let deadline = self.fanout.poll_timeout(Instant::now());
            let take_frame = stream_open && self.fanout.frame_before_events();
            // A command first (a peer must be registered before its client's first datagram
            // is routed); then a frame, if the fan-out takes one now; then the network;
            // then the peers' next deadline.
            let wake = tokio::select! {
                biased;
                request = requests.recv() => Wake::Request(request),
                frame = self.frames.recv(), if take_frame => Wake::Frame(frame),
                Some(event) = events.recv() => Wake::Network(event),
                () = sleep_until(deadline.into()) => Wake::Timeout,
            };
            let started = Instant::now();
            let mut answer = None;
            let turn = match wake {
                Wake::Request(Some(Request::Command(command, reply))) => {
                    let found = self.fanout.handle_command(command, started);
                    answer = reply.map(|reply| (reply, found));
                    Turn::Other
                }
                Wake::Request(Some(Request::Shutdown) | None) => break,
                Wake::Frame(Err(broadcast::error::RecvError::Closed)) => {
                    debug!("the stream ended");
                    stream_open = false;
                    Turn::Other
                }
                Wake::Frame(Ok(frame)) => self.take_frame(FrameInput::Frame(frame), started),
                Wake::Frame(Err(broadcast::error::RecvError::Lagged(missed))) => {
                    self.take_frame(FrameInput::Missed(missed), started)
                }
                Wake::Network(NetEvent::Datagram(datagram)) => {
                    self.fanout.handle_datagram(datagram, started);
                    Turn::Network
                }
                Wake::Network(NetEvent::TcpOpened { local, remote, packets }) => {
                    self.tcp_links.insert((local, remote), packets);
                    Turn::Network
                }
                Wake::Network(NetEvent::TcpClosed { local, remote }) => {
                    self.tcp_links.remove(&(local, remote));
                    Turn::Network
                }
                Wake::Timeout => {
                    self.fanout.handle_timeout(started);
                    Turn::Other
                }
            };
            self.send_all().await;
            if let Some((reply, found)) = answer {
                // The requester may have given up waiting; nothing to undo.
                let _ = reply.send(found);
            }
            self.fanout.turn_done(turn, started, events.len(), Instant::now());
            self.pass_on_events();
        }

        self.fanout.handle_command(Command::CloseAll, Instant::now());
        self.send_all().await;
        debug!(driver = self.index, "peer driver stopped");
    }

    /// Hands the fan-out the stream's next frame, and those queued after it should it need them.
    fn take_frame(&mut self, input: FrameInput, now: Instant) -> Turn {
        let Driver { fanout, frames, .. } = self;
        fanout.handle_frame(input, std::iter::from_fn(|| queued_frame(frames)), now);
        Turn::Frame
    }

    /// Sends everything the fan-out has to send, each viewer's packets as soon as they
    /// are all made.
    async fn send_all(&mut self) {
        while let Some(transmit) = self.fanout.poll_transmit(Instant::now()) {
            self.outgoing.push(transmit);
            if !self.fanout.has_transmit_ready() {
                self.send_outgoing().await;
                self.pass_on_events();
            }
        }
        self.send_outgoing().await;
        self.pass_on_events();
    }

    /// Tells the rest of the server what the fan-out says it must know.
    fn pass_on_events(&mut self) {
        while let Some(event) = self.fanout.poll_event() {
            match event {
                FanoutEvent::Claimed(source) => self.dispatcher.claim(source, self.index),
                FanoutEvent::Released(source) => self.dispatcher.release(source, self.index),
                FanoutEvent::PeerAdded => self.dispatcher.count_peer(self.index, true),
                FanoutEvent::PeerRemoved => self.dispatcher.count_peer(self.index, false),
                FanoutEvent::KeyframeWanted(rung) => self.encoders.request_keyframe(rung),
                FanoutEvent::Watching { rung, joined } => self.encoders.watch(rung, joined),
                FanoutEvent::Busy(share) => self.report_busy(share),
            }
        }
    }

    /// Tells the dispatcher how busy this driver was, so that a server whose drivers all
    /// work nearly all the time refuses more viewers; says so when that starts and ends.
    fn report_busy(&self, share: f64) {
        let was_saturated = self.dispatcher.saturated();
        self.dispatcher.report_busy(self.index, share);
        self.metrics.drivers_busy.set(self.dispatcher.least_busy_share());
        let saturated = self.dispatcher.saturated();
        if saturated && !was_saturated {
            warn!(
                viewers = self.metrics.viewers.get(),
                "every peer driver is busy all the time: refusing new viewers until one has room"
            );
        } else if was_saturated && !saturated {
            info!(viewers = self.metrics.viewers.get(), "a peer driver has room again: taking new viewers");
        }
        trace!(driver = self.index, busy = share, "driver load");
    }

    /// Sends the datagrams taken from the fan-out: each run of same-sized UDP packets to
    /// one viewer in one segmented send, TCP packets to their connection's queue.
    async fn send_outgoing(&mut self) {
        let max_segments = self.sockets.iter().map(|socket| socket.max_segments()).min().unwrap_or(1);
        for run in segment_runs(&self.outgoing, max_segments) {
            let first = &self.outgoing[run.start];
            if first.proto == Protocol::Tcp {
                let Some(link) = self.tcp_links.get(&(first.source, first.destination)) else {
                    trace!(destination = %first.destination, "no ICE-TCP connection for this packet");
                    continue;
                };
                let length = first.contents.len();
                // A full queue is a viewer whose TCP cannot keep up: drop, as UDP would.
                if link.try_send(first.contents.to_vec()).is_ok() {
                    self.metrics.bytes_sent.inc_by(length as u64);
                }
                continue;
            }
            // Send from the candidate the peer chose; every transmit names one of ours.
            let Some(socket) = self.sockets.iter().find(|socket| socket.addr() == first.source) else {
                debug!(source = %first.source, "no socket for this source address");
                continue;
            };
            let (contents, segment_size) = if run.len() == 1 {
                (&first.contents[..], None)
            } else {
                self.segments.clear();
                self.outgoing[run.clone()].iter().for_each(|packet| self.segments.extend_from_slice(&packet.contents));
                (&self.segments[..], Some(first.contents.len()))
            };
            match socket.send(first.destination, contents, segment_size).await {
                Ok(()) => {
                    self.metrics.bytes_sent.inc_by(contents.len() as u64);
                }
                Err(error) => debug!(%error, destination = %first.destination, "send failed"),
            }
        }
        self.outgoing.clear();
    }
}

/// The next frame already queued for the driver, without waiting.
fn queued_frame(frames: &mut broadcast::Receiver<StreamFrame>) -> Option<FrameInput> {
    match frames.try_recv() {
        Ok(frame) => Some(FrameInput::Frame(frame)),
        Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(FrameInput::Missed(missed)),
        Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => None,
    }
}
