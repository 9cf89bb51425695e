//! A peer driver: one task that owns its share of the peers (the [router](super::router)
//! spreads them over one driver per core). It feeds its peers the datagrams addressed to
//! them, their timeouts and every encoded frame of the stream, and sends what they
//! produce on the shared UDP sockets (or ICE-TCP connections). Frames come first, but the
//! datagrams that arrived during one frame's fan-out are handled before the next, so that
//! joiners' handshakes go on while the driver is busy (see [`OwedEvents`]).
//!
//! A peer that cannot keep up never slows the others: frames are written into each peer's
//! own send queue, and if the driver itself falls behind the stream, it goes on from the
//! present: each of its peers from the newest keyframe queued, or else the next one. Each
//! driver also reports the share of its time it spends working; while every driver works
//! nearly all the time, the server takes no new viewers (see [`Router::saturated`]).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Input};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{debug, info, trace, warn};

use super::SessionId;
use super::peer::{Peer, PeerId};
use super::recent::RecentFrames;
use super::router::{DriverIndex, Router};
use super::rtp_frame::{FramePacketizer, RtpFrame};
use super::socket::{MediaSocket, segment_runs};
use crate::stats::Metrics;
use crate::stream::{KeyframeRequests, StreamFrame};

/// Incoming datagrams waiting for a driver; past this, new ones are dropped as a full
/// network queue would.
pub(super) const DATAGRAM_QUEUE: usize = 4096;

/// The largest datagram read; WebRTC keeps packets under the path MTU.
const MAX_DATAGRAM: usize = 2048;

/// How long the driver sleeps when no peer has a deadline.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How long a frame may wait for this driver after the stream published it. A driver that
/// takes one later has fallen behind (a burst of joins, a saturated server) and goes on
/// from the present (see [`Driver::catch_up`]), so that its viewers are never left further
/// behind the stream than this.
const MAX_FANOUT_WAIT: Duration = Duration::from_secs(1);

/// How long a driver measures its load before reporting it: long enough that a burst of
/// joins or a large keyframe does not count as a full driver.
const BUSY_WINDOW: Duration = Duration::from_secs(2);

/// What woke the driver.
enum Wake {
    Command(Option<Command>),
    Frame(Result<StreamFrame, broadcast::error::RecvError>),
    Network(NetEvent),
    Timeout,
}

/// The network events a driver handles before its next frame: those that were waiting
/// when it finished the last, for at most as long as that frame took. Frames come first,
/// and a driver behind the stream finds one ready at every turn; without this, what
/// arrives meanwhile (a joiner's ICE checks and DTLS handshake, NACKs) would wait until it
/// caught up: seconds at capacity, past the handshake's retransmission timers. However
/// much arrives, frames keep about half of the driver's time (the budget is checked after
/// each event, so an expensive one, a joiner's handshake, may overrun it by its length).
#[derive(Debug)]
struct OwedEvents {
    count: usize,
    until: Instant,
}

impl OwedEvents {
    fn none() -> Self {
        OwedEvents { count: 0, until: Instant::now() }
    }

    /// After a frame that took `took`, with `waiting` events queued.
    fn after_frame(waiting: usize, took: Duration) -> Self {
        OwedEvents { count: waiting, until: Instant::now() + took }
    }

    fn handled_one(&mut self) {
        self.count = self.count.saturating_sub(1);
        if Instant::now() >= self.until {
            self.count = 0;
        }
    }

    fn any(&self) -> bool {
        self.count > 0
    }
}

/// The share of its time a driver spends working rather than waiting, over windows of
/// [`BUSY_WINDOW`].
struct BusyMeter {
    window_start: Instant,
    busy: Duration,
}

impl BusyMeter {
    fn new(now: Instant) -> Self {
        BusyMeter { window_start: now, busy: Duration::ZERO }
    }

    /// Counts `busy` of work ending at `now`. Once a window is over, returns the share of
    /// it (0 to 1) spent working and starts the next.
    fn record(&mut self, busy: Duration, now: Instant) -> Option<f64> {
        self.busy += busy;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < BUSY_WINDOW {
            return None;
        }
        let share = (self.busy.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        *self = BusyMeter::new(now);
        Some(share)
    }
}

/// What the rest of the server asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take over a peer that has answered its offer.
    Add(Box<Peer>),
    /// Close every peer, then acknowledge.
    CloseAll(oneshot::Sender<()>),
    /// Close one session; answers whether it existed.
    Close(SessionId, oneshot::Sender<bool>),
    /// Give a session the viewer's trickled ICE candidates; answers whether it exists.
    AddCandidates(SessionId, Vec<Candidate>, oneshot::Sender<bool>),
    /// Close every peer and stop.
    Shutdown,
}

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

/// Of frames taken in order, the newest keyframe and the frames since; the others counted.
#[derive(Default)]
struct FramesSinceKeyframe {
    frames: Vec<StreamFrame>,
    dropped: u64,
}

impl FramesSinceKeyframe {
    fn push(&mut self, frame: StreamFrame) {
        if frame.encoded.keyframe {
            self.break_off(0);
        }
        if frame.encoded.keyframe || !self.frames.is_empty() {
            self.frames.push(frame);
        } else {
            self.dropped += 1;
        }
    }

    /// `missed` frames were lost after those taken so far: the next cannot follow them.
    fn break_off(&mut self, missed: u64) {
        self.dropped += missed + self.frames.len() as u64;
        self.frames.clear();
    }
}

struct Slot {
    peer: Peer,
    deadline: Instant,
}

pub(crate) struct Driver {
    index: DriverIndex,
    router: Arc<Router>,
    peers: HashMap<PeerId, Slot>,
    /// Every peer's next deadline, earliest first: finding the next wake-up and the peers
    /// due must not cost a look at every peer on every packet.
    deadlines: BTreeSet<(Instant, PeerId)>,
    /// Remote address → the peer that accepted traffic from it, so routing a datagram is a
    /// lookup rather than asking every peer.
    routes: HashMap<SocketAddr, PeerId>,
    /// The media sockets (one per host candidate), shared by every driver.
    sockets: Vec<Arc<MediaSocket>>,
    /// Open ICE-TCP connections by (local, remote) address: where their packets go.
    tcp_links: HashMap<(SocketAddr, SocketAddr), mpsc::Sender<Vec<u8>>>,
    frames: broadcast::Receiver<StreamFrame>,
    keyframes: KeyframeRequests,
    metrics: Arc<Metrics>,
    outgoing: Vec<Transmit>,
    /// What a viewer connecting now starts from.
    recent: RecentFrames,
    /// Whether `recent` stays what the next viewer should be shown once the last one has
    /// left: a stream that pauses while nobody watches is where it was, and a source's
    /// H.264 passed through goes on being sent (and kept) whether anyone watches or not.
    /// Only a live stream the server encodes stops then (it is not encoded for nobody),
    /// leaving the frames kept stale.
    kept_frames_stay_current: bool,
    /// Whether the stream's last frame has been sent: `recent` then holds it for good.
    stream_ended: bool,
    /// Cuts each frame into RTP payloads once, for all of this driver's peers.
    packetizer: FramePacketizer,
    /// Where a run of packets to one viewer is put together for one segmented send.
    segments: Vec<u8>,
}

impl Driver {
    pub(crate) fn new(
        index: DriverIndex,
        router: Arc<Router>,
        sockets: Vec<Arc<MediaSocket>>,
        frames: broadcast::Receiver<StreamFrame>,
        keyframes: KeyframeRequests,
        metrics: Arc<Metrics>,
    ) -> Self {
        Driver {
            index,
            router,
            peers: HashMap::new(),
            deadlines: BTreeSet::new(),
            routes: HashMap::new(),
            sockets,
            tcp_links: HashMap::new(),
            frames,
            keyframes,
            metrics,
            outgoing: Vec::new(),
            recent: RecentFrames::default(),
            kept_frames_stay_current: false,
            stream_ended: false,
            packetizer: FramePacketizer::new(),
            segments: Vec::new(),
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>, mut events: mpsc::Receiver<NetEvent>) {
        let mut stream_open = true;
        let mut busy = BusyMeter::new(Instant::now());
        let mut owed = OwedEvents::none();

        loop {
            let wake = self.next_wake(&mut commands, &mut events, &owed, stream_open).await;
            let woke = Instant::now();
            match wake {
                Wake::Command(command) => match command {
                    Some(Command::Add(peer)) => self.add(*peer).await,
                    Some(Command::CloseAll(done)) => {
                        // WebGear_RTC's reset. The frames kept are dropped only if the last
                        // viewer's leaving makes them stale, as when viewers leave one by one
                        // (see `flush`). The reset restarts the stream clock too; a joiner
                        // starting from frames stamped before goes on along a timeline of
                        // its own (`Peer::send_frame`).
                        self.close_all().await;
                        // The requester may have given up waiting; nothing to undo.
                        let _ = done.send(());
                    }
                    Some(Command::Close(session, done)) => {
                        let found = self.close_session(&session).await;
                        let _ = done.send(found);
                    }
                    Some(Command::AddCandidates(session, candidates, done)) => {
                        let found = self.add_candidates(&session, candidates);
                        let _ = done.send(found);
                    }
                    Some(Command::Shutdown) | None => break,
                },
                Wake::Frame(frame) => {
                    stream_open = self.take_frame(frame).await;
                    owed = OwedEvents::after_frame(events.len(), woke.elapsed());
                }
                Wake::Network(event) => {
                    self.handle_event(event).await;
                    owed.handled_one();
                }
                Wake::Timeout => self.timeouts().await,
            }
            let done = Instant::now();
            if let Some(share) = busy.record(done - woke, done) {
                self.report_busy(share);
            }
        }

        self.close_all().await;
        debug!(driver = self.index, "peer driver stopped");
    }

    /// Waits for what to do next: a command first (a peer must be registered before its
    /// client's first datagram is routed); then a frame, unless network events are
    /// [owed](OwedEvents); then the network; then the peers' next deadline.
    async fn next_wake(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        events: &mut mpsc::Receiver<NetEvent>,
        owed: &OwedEvents,
        stream_open: bool,
    ) -> Wake {
        let deadline = self.next_deadline();
        tokio::select! {
            biased;
            command = commands.recv() => Wake::Command(command),
            frame = self.frames.recv(), if stream_open && !owed.any() => Wake::Frame(frame),
            Some(event) = events.recv() => Wake::Network(event),
            () = sleep_until(deadline.into()) => Wake::Timeout,
        }
    }

    async fn handle_event(&mut self, event: NetEvent) {
        match event {
            NetEvent::Datagram(datagram) => self.route(datagram).await,
            NetEvent::TcpOpened { local, remote, packets } => {
                self.tcp_links.insert((local, remote), packets);
            }
            NetEvent::TcpClosed { local, remote } => {
                self.tcp_links.remove(&(local, remote));
            }
        }
    }

    /// Sends a frame from the stream to every peer, or catches up with the stream if this
    /// driver has fallen behind it. Returns whether the stream goes on.
    async fn take_frame(&mut self, frame: Result<StreamFrame, broadcast::error::RecvError>) -> bool {
        match frame {
            Ok(frame) if frame.published_at.elapsed() > MAX_FANOUT_WAIT => {
                debug!(waited = ?frame.published_at.elapsed(), driver = self.index, "driver fell behind the stream");
                self.catch_up(Some(frame)).await;
            }
            Ok(frame) => self.send_frame(&frame).await,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                debug!(missed, driver = self.index, "driver fell behind the stream and missed frames");
                self.metrics.frames_dropped.inc_by(missed);
                self.catch_up(None).await;
            }
            Err(broadcast::error::RecvError::Closed) => {
                debug!("the stream ended");
                return false;
            }
        }
        true
    }

    /// Goes on from the present after falling behind the stream. The frames still queued
    /// (and `late`, taken too late) are nearly as late as any missed, so none is sent as
    /// it came: each peer starts again from the newest keyframe among them and the frames
    /// since, sent at once as to a viewer that lost data ([`Peer::replay`]), or else from
    /// the next keyframe. So the stream's last frame ("The End", a keyframe) is kept for
    /// everyone coming later whenever it is among them.
    async fn catch_up(&mut self, late: Option<StreamFrame>) {
        let since_keyframe = self.queued_frames_since_keyframe(late);
        self.recent.clear();
        for frame in &since_keyframe {
            if self.packetize_and_keep(frame).is_none() {
                break;
            }
        }
        let from = if self.recent.frames().is_empty() { "the next keyframe" } else { "a keyframe queued" };
        debug!(driver = self.index, peers = self.peers.len(), "its peers start again from {from}");
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            if let Some(slot) = self.peers.get_mut(&id) {
                slot.peer.resync();
            }
            // Replays the frames kept to the peer, or asks for a keyframe.
            self.flush(id).await;
        }
    }

    /// Takes every frame queued for this driver, after `late`; returns the newest keyframe
    /// among them and the frames since, and counts the others as dropped.
    fn queued_frames_since_keyframe(&mut self, late: Option<StreamFrame>) -> Vec<StreamFrame> {
        let mut taken = FramesSinceKeyframe::default();
        late.into_iter().for_each(|frame| taken.push(frame));
        loop {
            match self.frames.try_recv() {
                Ok(frame) => taken.push(frame),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => taken.break_off(missed),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
            }
        }
        self.metrics.frames_dropped.inc_by(taken.dropped);
        taken.frames
    }

    /// Tells the router how busy this driver was, so that a server whose drivers all work
    /// nearly all the time refuses more viewers; says so when that starts and ends.
    fn report_busy(&self, share: f64) {
        let was_saturated = self.router.saturated();
        self.router.report_busy(self.index, share);
        self.metrics.drivers_busy.set(self.router.least_loaded_share());
        let saturated = self.router.saturated();
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

    /// Closes every peer: each sends its goodbyes, then ends, so none is left when this
    /// returns.
    async fn close_all(&mut self) {
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        debug!(peers = ids.len(), "closing every peer");
        for id in ids {
            self.close_peer(id).await;
        }
    }

    /// Closes one peer: it sends its goodbyes, then ends and is removed.
    async fn close_peer(&mut self, id: PeerId) {
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.close();
        }
        self.flush(id).await;
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.abort();
        }
        self.flush(id).await;
    }

    fn find_session(&self, session: &SessionId) -> Option<PeerId> {
        self.peers.iter().find(|(_, slot)| slot.peer.session() == session).map(|(&id, _)| id)
    }

    /// Closes one session (sending its goodbyes); false if there is no such session.
    async fn close_session(&mut self, session: &SessionId) -> bool {
        let Some(id) = self.find_session(session) else {
            return false;
        };
        self.close_peer(id).await;
        true
    }

    fn add_candidates(&mut self, session: &SessionId, candidates: Vec<Candidate>) -> bool {
        let Some(slot) = self.find_session(session).and_then(|id| self.peers.get_mut(&id)) else {
            return false;
        };
        candidates.into_iter().for_each(|candidate| slot.peer.add_remote_candidate(candidate));
        true
    }

    fn next_deadline(&self) -> Instant {
        let idle = Instant::now() + IDLE_WAKE;
        self.deadlines.first().map_or(idle, |&(deadline, _)| deadline.min(idle))
    }

    async fn add(&mut self, peer: Peer) {
        let id = peer.id();
        let now = Instant::now();
        // Counted as a viewer since its offer was admitted.
        self.peers.insert(id, Slot { peer, deadline: now });
        self.deadlines.insert((now, id));
        self.router.count_peer(self.index, true);
        self.flush(id).await;
    }

    /// Cuts a frame into RTP payloads and keeps it for viewers joining. If it cannot be
    /// cut, every viewer misses it and must start again from a keyframe: returns `None`.
    fn packetize_and_keep(&mut self, frame: &StreamFrame) -> Option<RtpFrame> {
        let rtp = match self.packetizer.packetize(frame) {
            Ok(rtp) => rtp,
            Err(error) => {
                debug!(%error, "could not packetize a frame; every peer resyncs");
                self.peers.values_mut().for_each(|slot| slot.peer.resync());
                self.recent.clear();
                return None;
            }
        };
        self.recent.record(&rtp);
        self.kept_frames_stay_current = frame.pauses_unwatched || !frame.keyframes_on_request;
        self.stream_ended |= frame.last;
        Some(rtp)
    }

    async fn send_frame(&mut self, frame: &StreamFrame) {
        let Some(rtp) = self.packetize_and_keep(frame) else {
            return;
        };
        // Each peer's packets leave as soon as they are made, while its session is still
        // in the cache, so a viewer waits only for the viewers served before it.
        let now = Instant::now();
        let captured_at = frame.encoded.captured_at;
        let mut last_wait = None;
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            let sent = self.peers.get_mut(&id).is_some_and(|slot| slot.peer.send_frame(&rtp, &self.metrics, now));
            self.flush(id).await;
            if sent {
                let wait = captured_at.elapsed();
                Metrics::observe(&self.metrics.capture_to_send_seconds, wait);
                last_wait = Some(wait);
            }
        }
        if let Some(wait) = last_wait {
            Metrics::observe(&self.metrics.capture_to_last_send_seconds, wait);
        }
    }

    async fn route(&mut self, datagram: Datagram) {
        let now = Instant::now();
        Metrics::observe(&self.metrics.datagram_wait_seconds, now.saturating_duration_since(datagram.received_at));
        let Ok(contents) = datagram.data.as_slice().try_into() else {
            trace!(source = %datagram.source, "ignoring a datagram that is not STUN, DTLS or RTP");
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: if datagram.tcp { Protocol::Tcp } else { Protocol::Udp },
                source: datagram.source,
                destination: datagram.destination,
                contents,
            },
        );
        let known = self
            .routes
            .get(&datagram.source)
            .copied()
            .filter(|id| self.peers.get(id).is_some_and(|slot| slot.peer.accepts(&input)));
        let owner = known.or_else(|| self.peers.iter().find(|(_, slot)| slot.peer.accepts(&input)).map(|(&id, _)| id));
        let Some(id) = owner else {
            trace!(source = %datagram.source, "no peer accepts this datagram");
            self.routes.remove(&datagram.source);
            self.router.release(datagram.source, self.index);
            return;
        };
        if self.routes.insert(datagram.source, id) != Some(id) {
            self.router.claim(datagram.source, self.index);
        }
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.handle_datagram(input);
        }
        self.flush(id).await;
    }

    async fn timeouts(&mut self) {
        let now = Instant::now();
        let due: Vec<PeerId> =
            self.deadlines.iter().take_while(|&&(deadline, _)| deadline <= now).map(|&(_, id)| id).collect();
        for id in due {
            if let Some(slot) = self.peers.get_mut(&id) {
                slot.peer.handle_timeout(now);
            }
            self.flush(id).await;
        }
    }

    /// Sends everything a peer has to send, passes on its wish for a keyframe, records its
    /// next deadline, and removes it once it is dead.
    async fn flush(&mut self, id: PeerId) {
        let Some(slot) = self.peers.get_mut(&id) else {
            return;
        };
        let outgoing = &mut self.outgoing;
        let mut deadline = slot.peer.poll(|transmit| outgoing.push(transmit));
        // A connection completes while polling: start the viewer at once if it can be.
        if deadline.is_some()
            && slot.peer.start_from(self.recent.frames(), &self.metrics, Instant::now(), |transmit| {
                outgoing.push(transmit);
            })
        {
            deadline = slot.peer.poll(|transmit| outgoing.push(transmit));
        }
        if slot.peer.take_keyframe_wish() {
            // A keyframe made for one viewer goes to all of them: while the last one and
            // the frames since are kept, the viewer gets those (again) instead. Otherwise
            // the encoder makes one (it coalesces requests); a source passed through
            // cannot, and the viewer waits for the source's next.
            if deadline.is_some()
                && slot.peer.replay(self.recent.frames(), &self.metrics, Instant::now(), |transmit| {
                    outgoing.push(transmit);
                })
            {
                self.metrics.keyframe_requests.inc();
                deadline = slot.peer.poll(|transmit| outgoing.push(transmit));
            } else {
                self.keyframes.request();
            }
        }
        self.deadlines.remove(&(slot.deadline, id));
        match deadline {
            Some(deadline) => {
                slot.deadline = deadline;
                self.deadlines.insert((deadline, id));
            }
            None => {
                self.peers.remove(&id);
                if self.peers.is_empty() && !self.kept_frames_stay_current && !self.stream_ended {
                    // A live stream goes on unencoded while nobody watches; frames kept from
                    // before would show the next viewer a stale picture first. Once a
                    // stream has ended, its last picture ("The End") is what everyone
                    // coming later is shown.
                    self.recent.clear();
                }
                let (router, index) = (&self.router, self.index);
                self.routes.retain(|&source, owner| {
                    let keep = *owner != id;
                    if !keep {
                        router.release(source, index);
                    }
                    keep
                });
                router.count_peer(index, false);
                self.metrics.viewers.dec();
                debug!(id, "peer removed");
            }
        }
        self.send_outgoing().await;
    }

    /// Sends what [`Driver::flush`] collected: each run of same-sized UDP packets to one
    /// viewer in one segmented send, TCP packets to their connection's queue.
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

/// Reads one media socket until the drivers stop, handing each datagram to the router.
pub(super) async fn read_datagrams(socket: Arc<MediaSocket>, router: Arc<Router>) {
    let destination = socket.addr();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buffer).await {
            Ok((len, source)) => {
                let datagram = Datagram::read_now(buffer[..len].to_vec(), source, destination, false);
                if router.deliver(datagram).is_err() {
                    return;
                }
            }
            // ICMP errors (e.g. a viewer's port closed) surface here on some systems; they
            // concern one peer, not the socket.
            Err(error) => trace!(%error, "UDP receive error"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use str0m::media::MediaTime;
    use webgear_media::EncodedFrame;

    use super::*;
    use crate::rtc::peer::testing::connected_pair;
    use crate::stream::FANOUT_CAPACITY;

    /// Frame `number` of a stream, published `published_at`.
    fn frame_published(number: u32, keyframe: bool, published_at: Instant) -> StreamFrame {
        let nal_header = if keyframe { 0x65 } else { 0x41 };
        let encoded = EncodedFrame {
            data: Arc::from([0, 0, 0, 1, nal_header, 1, 2, 3].as_slice()),
            keyframe,
            width: 16,
            height: 16,
            captured_at: published_at,
        };
        StreamFrame {
            encoded,
            rtp_time: MediaTime::from_90khz(u64::from(number) * 3000),
            clock_epoch: 0,
            keyframes_on_request: true,
            last: false,
            pauses_unwatched: false,
            published_at,
        }
    }

    /// Frame `number` of a stream whose only keyframe is frame 0, published now.
    fn frame(number: u32) -> StreamFrame {
        frame_published(number, number == 0, Instant::now())
    }

    /// A driver with no peers yet, and the stream it takes frames from (which keeps
    /// `capacity`).
    fn driver_without_peers(capacity: usize) -> (broadcast::Sender<StreamFrame>, Driver) {
        let metrics = Arc::new(Metrics::default());
        let (stream, frames) = broadcast::channel(capacity);
        let (network, _) = mpsc::channel(1);
        let router = Arc::new(Router::new(vec![network]));
        let keyframes = KeyframeRequests::new(metrics.clone());
        (stream, Driver::new(0, router, Vec::new(), frames, keyframes, metrics))
    }

    /// The stream numbers of the frames kept for joiners.
    fn kept(driver: &Driver) -> Vec<u64> {
        driver.recent.frames().iter().map(|rtp| rtp.frame.rtp_time.numer() / 3000).collect()
    }

    #[tokio::test]
    async fn a_driver_that_fell_behind_the_stream_goes_on_from_the_present() {
        let (stream, mut driver) = driver_without_peers(4);
        // Ten frames while the driver was busy: it can still get only the last four.
        (0..10).for_each(|number| {
            stream.send(frame(number)).unwrap();
        });
        let missed = driver.frames.recv().await;
        assert!(matches!(missed, Err(broadcast::error::RecvError::Lagged(6))), "{missed:?}");
        assert!(driver.take_frame(missed).await, "the stream goes on");
        assert_eq!(driver.frames.len(), 0, "frames as late as the missed ones are not sent");
        assert_eq!(driver.metrics.frames_dropped.get(), 10);
        assert!(kept(&driver).is_empty(), "no keyframe was queued: joiners wait for the next");
        stream.send(frame(10)).unwrap();
        let next = driver.frames.recv().await.unwrap();
        assert_eq!(next.rtp_time, frame(10).rtp_time);
    }

    #[tokio::test]
    async fn a_driver_that_fell_behind_as_the_stream_ended_keeps_its_last_frame_for_later_viewers() {
        let (stream, mut driver) = driver_without_peers(4);
        (0..9).for_each(|number| {
            stream.send(frame(number)).unwrap();
        });
        // "The End", a keyframe, is among the frames still queued when the driver looks.
        let mut the_end = frame(0);
        the_end.last = true;
        stream.send(the_end).unwrap();
        let missed = driver.frames.recv().await;
        assert!(matches!(missed, Err(broadcast::error::RecvError::Lagged(6))), "{missed:?}");
        assert!(driver.take_frame(missed).await);
        assert_eq!(driver.frames.len(), 0, "the other frames as late as the missed ones are skipped");
        assert!(driver.stream_ended);
        let kept: Vec<bool> = driver.recent.frames().iter().map(|rtp| rtp.frame.last).collect();
        assert_eq!(kept, [true], "viewers coming later start from \"The End\"");
    }

    /// A restreamer's "GOP cache": on connecting, it sends the group of pictures so far at
    /// once (here 5 s at 30 fps), passed through.
    #[tokio::test]
    async fn a_group_of_pictures_sent_at_once_is_taken_whole_and_kept_for_joiners() {
        let (stream, mut driver) = driver_without_peers(FANOUT_CAPACITY);
        (0..150).for_each(|number| {
            let passed_through = StreamFrame { keyframes_on_request: false, ..frame(number) };
            stream.send(passed_through).unwrap();
        });
        while !driver.frames.is_empty() {
            let frame = driver.frames.recv().await;
            assert!(frame.is_ok(), "{frame:?}");
            driver.take_frame(frame).await;
        }
        assert_eq!(driver.metrics.frames_dropped.get(), 0);
        assert_eq!(kept(&driver), (0..150).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn a_driver_taking_frames_too_late_starts_its_viewers_again_from_the_newest_keyframe_queued() {
        let (stream, mut driver) = driver_without_peers(FANOUT_CAPACITY);
        let (_viewer, peer, connected_at) = connected_pair();
        // The pair connected on a simulated clock, which may be ahead of the real one.
        tokio::time::sleep_until(connected_at.into()).await;
        driver.add(peer).await;
        let metrics = driver.metrics.clone();
        stream.send(frame(0)).unwrap();
        let first = driver.frames.recv().await;
        driver.take_frame(first).await;
        assert_eq!(metrics.frames_sent.get(), 1, "the viewer is watching");

        // Frames that waited too long for the driver; the newest keyframe among them is 3.
        let long_ago = Instant::now() - MAX_FANOUT_WAIT * 2;
        (1..6).for_each(|number| {
            stream.send(frame_published(number, number == 3, long_ago)).unwrap();
        });
        let late = driver.frames.recv().await;
        driver.take_frame(late).await;
        assert_eq!(driver.frames.len(), 0, "the frames queued are taken at once");
        assert_eq!(metrics.frames_dropped.get(), 2, "frames 1 and 2 are dropped");
        assert_eq!(kept(&driver), [3, 4, 5]);
        assert_eq!(metrics.frames_sent.get(), 4, "the viewer is sent frames 3 to 5 at once");

        // And goes on from there without waiting for a keyframe.
        stream.send(frame(6)).unwrap();
        let next = driver.frames.recv().await;
        driver.take_frame(next).await;
        assert_eq!((metrics.frames_sent.get(), metrics.frames_skipped.get()), (5, 0));
    }

    /// What the driver would do next, as a letter: a Command, a Frame, a Network event.
    async fn next(driver: &mut Driver, channels: &mut DriverChannels, owed: &OwedEvents) -> char {
        match driver.next_wake(&mut channels.commands, &mut channels.events, owed, true).await {
            Wake::Command(_) => 'C',
            Wake::Frame(_) => 'F',
            Wake::Network(_) => 'N',
            Wake::Timeout => 'T',
        }
    }

    struct DriverChannels {
        /// Kept open: no command comes.
        _commander: mpsc::Sender<Command>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Receiver<NetEvent>,
    }

    /// A driver behind the stream (frames queued), with network events waiting too.
    fn driver_behind_with_events_waiting(waiting: usize) -> (broadcast::Sender<StreamFrame>, Driver, DriverChannels) {
        let (stream, driver) = driver_without_peers(FANOUT_CAPACITY);
        (0..10).for_each(|number| {
            stream.send(frame(number)).unwrap();
        });
        let (commander, commands) = mpsc::channel(1);
        let (network, events) = mpsc::channel(DATAGRAM_QUEUE);
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for _ in 0..waiting {
            network.try_send(NetEvent::TcpClosed { local: addr, remote: addr }).unwrap();
        }
        (stream, driver, DriverChannels { _commander: commander, commands, events })
    }

    #[tokio::test]
    async fn a_driver_behind_the_stream_handles_what_waited_during_a_frame_before_the_next() {
        let (_stream, mut driver, mut channels) = driver_behind_with_events_waiting(2);
        let mut owed = OwedEvents::none();
        assert_eq!(next(&mut driver, &mut channels, &owed).await, 'F', "frames come first");
        owed = OwedEvents::after_frame(channels.events.len(), Duration::from_secs(60));
        let mut order = String::new();
        for _ in 0..3 {
            let wake = next(&mut driver, &mut channels, &owed).await;
            if wake == 'N' {
                owed.handled_one();
            }
            order.push(wake);
        }
        assert_eq!(order, "NNF", "the two events that waited, then the next frame");
    }

    #[tokio::test]
    async fn the_events_handled_between_frames_take_no_longer_than_the_frame_took() {
        let (_stream, mut driver, mut channels) = driver_behind_with_events_waiting(5);
        // A frame that took no time at all: one event, then the next frame.
        let mut owed = OwedEvents::after_frame(channels.events.len(), Duration::ZERO);
        assert_eq!(next(&mut driver, &mut channels, &owed).await, 'N');
        owed.handled_one();
        assert_eq!(next(&mut driver, &mut channels, &owed).await, 'F', "the rest wait for the frame after");
        assert_eq!(channels.events.len(), 4);
    }

    #[test]
    fn of_the_frames_taken_the_newest_keyframe_and_those_since_are_kept() {
        let now = Instant::now();
        let mut taken = FramesSinceKeyframe::default();
        [(0, true), (1, false)].into_iter().for_each(|(number, key)| taken.push(frame_published(number, key, now)));
        // Frames 2 and 3 were missed: 4 cannot follow 1.
        taken.break_off(2);
        [(4, false), (5, true), (6, false)]
            .into_iter()
            .for_each(|(number, key)| taken.push(frame_published(number, key, now)));
        let numbers: Vec<u64> = taken.frames.iter().map(|frame| frame.rtp_time.numer() / 3000).collect();
        assert_eq!((numbers, taken.dropped), (vec![5, 6], 5));
    }

    #[test]
    fn the_busy_meter_reports_the_share_of_each_window_spent_working() {
        let start = Instant::now();
        let mut meter = BusyMeter::new(start);
        let ms = Duration::from_millis;
        assert_eq!(meter.record(ms(500), start + ms(600)), None, "the window is not over");
        let share = meter.record(ms(1000), start + ms(2000)).expect("the window is over");
        assert!((share - 0.75).abs() < 1e-9, "{share}");
        // The next window starts afresh.
        let share = meter.record(ms(100), start + ms(4000)).unwrap();
        assert!((share - 0.05).abs() < 1e-9, "{share}");
        // Work longer than the window (a stalled driver) is all of it, no more.
        assert_eq!(meter.record(ms(9000), start + ms(8000)), Some(1.0));
    }
}
