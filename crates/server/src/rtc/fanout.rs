//! The fan-out core of one peer driver, in sans-IO style (as str0m's `Rtc`): the peers
//! it holds, their deadlines, which remote address belongs to which peer, the frames kept
//! for joiners, catching up with the stream, and how busy the driver is. It never reads
//! the clock, a socket or a channel: the [driver](super::driver) hands it what happened
//! with the time (`handle_*(.., now)`), then takes what it has to send
//! ([`Fanout::poll_transmit`]), what the rest of the server must know
//! ([`Fanout::poll_event`]) and when to wake it next ([`Fanout::poll_timeout`]).
//!
//! A frame goes to one peer at a time, as [`Fanout::poll_transmit`] is called, so that each
//! viewer's packets can leave as soon as they are made: a viewer waits only for the viewers
//! served before it. Every input's transmits are drained before the next input.
//!
//! An adaptive stream comes at several rungs (sizes and bitrates), each frame at each rung
//! someone watches: every peer is sent the frames of its own rung, which it chooses from
//! what it knows of its viewer's link ([`RungChoice`]); the fan-out tells the encoders which
//! rungs are watched, and measures what each rung needs.
//!
//! A peer that cannot keep up never slows the others: frames are written into each peer's
//! own send queue. A driver that falls behind the stream (a burst of joins, a saturated
//! server) goes on from the present: each of its peers from the newest keyframe queued, or
//! else the next one.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Input};
use tracing::{debug, trace};

use super::SessionId;
use super::datagram::Datagram;
use super::peer::{Peer, PeerId};
use super::recent::{RecentFrames, SinceKeyframe};
use super::rtp_frame::{FramePacketizer, RtpFrame};
use super::rung::RungChoice;
use crate::ladder::Ladder;
use crate::stats::Metrics;
use crate::stream::StreamFrame;

/// How long the driver sleeps when no peer has a deadline.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How long a frame may wait for the driver after the stream published it. A driver that
/// takes one later has fallen behind and goes on from the present (see
/// [`Fanout::catch_up`]), so that its viewers are never left further behind the stream
/// than this.
const MAX_FANOUT_WAIT: Duration = Duration::from_secs(1);

/// How long a driver measures its load before reporting it: long enough that a burst of
/// joins or a large keyframe does not count as a full driver.
const BUSY_WINDOW: Duration = Duration::from_secs(2);

/// How often each peer's rung is chosen again.
const RUNG_CHOICE_INTERVAL: Duration = Duration::from_millis(200);

/// Over how long a rung's rate is measured: long enough to take in a keyframe or two.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// What each RTP packet adds to its payload on the wire: RTP header and extensions, SRTP
/// tag, UDP and IP headers.
const PACKET_OVERHEAD: usize = 64;

/// What the rest of the server asks of the fan-out.
#[derive(Debug)]
pub(crate) enum Command {
    /// Take over a peer that has answered its offer.
    Add(Box<Peer>),
    /// Close every peer (WebGear_RTC's reset).
    CloseAll,
    /// Close one session.
    Close(SessionId),
    /// Give a session the viewer's trickled ICE candidates.
    AddCandidates(SessionId, Vec<Candidate>),
}

/// What the driver took from the stream.
#[derive(Debug)]
pub(crate) enum FrameInput {
    Frame(StreamFrame),
    /// The driver fell so far behind that the stream dropped this many frames for it.
    Missed(u64),
}

/// What the rest of the server must know.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FanoutEvent {
    /// A peer here talks from this address: send its datagrams to this driver.
    Claimed(SocketAddr),
    /// No peer here talks from this address any more.
    Released(SocketAddr),
    /// A peer was taken over.
    PeerAdded,
    /// A peer ended and was removed.
    PeerRemoved,
    /// A viewer needs a keyframe at this rung that only the encoder can make.
    KeyframeWanted(usize),
    /// One viewer more (`joined`) or fewer is on this rung or moving to it.
    Watching { rung: usize, joined: bool },
    /// The share of its time (0 to 1) the driver worked over the window just ended.
    Busy(f64),
}

/// What one turn of the driver was, for [`Fanout::turn_done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// It sent the stream's next frame.
    Frame,
    /// It handled an event from the network.
    Network,
    /// A command, a timeout, the stream's end.
    Other,
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
    until: Option<Instant>,
}

impl OwedEvents {
    fn none() -> Self {
        OwedEvents { count: 0, until: None }
    }

    /// After a frame that took `took` until `now`, with `waiting` events queued.
    fn after_frame(waiting: usize, took: Duration, now: Instant) -> Self {
        OwedEvents { count: waiting, until: Some(now + took) }
    }

    fn handled_one(&mut self, now: Instant) {
        self.count = self.count.saturating_sub(1);
        if self.until.is_none_or(|until| now >= until) {
            self.count = 0;
        }
    }

    fn any(&self) -> bool {
        self.count > 0
    }
}

/// The share of its time a driver spends working rather than waiting, over windows of
/// [`BUSY_WINDOW`].
#[derive(Debug)]
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

struct Slot {
    peer: Peer,
    deadline: Instant,
    choice: RungChoice,
    next_choice: Instant,
    /// The rungs the peer was last counted on: the one it is sent and the one it moves to.
    watching: [usize; 2],
}

/// The bits a rung sent over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
struct RateMeter {
    sent: VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl RateMeter {
    fn record(&mut self, bytes: usize, at: Instant) {
        self.sent.push_back((at, bytes));
        self.bytes += bytes;
        while let Some(&(first, bytes)) = self.sent.front()
            && at.saturating_duration_since(first) > RATE_WINDOW
        {
            self.sent.pop_front();
            self.bytes -= bytes;
        }
    }

    /// Bits per second over the window, once it spans at least half of one.
    fn rate(&self) -> Option<u64> {
        let (first, last) = (self.sent.front()?.0, self.sent.back()?.0);
        let span = last.saturating_duration_since(first);
        (span >= RATE_WINDOW / 2).then(|| (self.bytes as f64 * 8.0 / span.as_secs_f64()) as u64)
    }
}

/// One rung's frames, as this driver has them.
struct RungFrames {
    /// Cuts each frame into RTP payloads once, for all of this driver's peers on the rung
    /// (it remembers the rung's parameter sets).
    packetizer: FramePacketizer,
    /// What a viewer starting on the rung starts from.
    recent: RecentFrames,
    /// The encoder's target, until the rate is measured.
    configured: u64,
    sent: RateMeter,
    /// Peers here on the rung or moving to it.
    watchers: usize,
}

impl RungFrames {
    /// What a viewer on the rung needs, in bits per second: what the rung has sent lately
    /// (an encoder may overshoot its target; H.264 passed through has none), packets and
    /// all.
    fn rate(&self) -> u64 {
        self.sent.rate().unwrap_or(self.configured + self.configured / 16)
    }
}

/// Work that goes to the driver's peers one at a time, as their packets are taken.
enum Job {
    /// Send each peer its rung's rendition of one capture.
    Capture(Vec<RtpFrame>),
    /// Start again from the frames kept (the driver caught up with the stream).
    Resync,
    /// Serve a deadline that has passed.
    Timeout,
}

/// A job and the peers still to do it for.
struct Pending {
    job: Job,
    peers: Vec<PeerId>,
    /// How long the last peer sent the frame waited for it since its capture.
    last_wait: Option<Duration>,
}

/// The state of one driver's peers; see the module docs.
pub(crate) struct Fanout {
    peers: HashMap<PeerId, Slot>,
    /// Every peer's next deadline, earliest first: finding the next wake-up and the peers
    /// due must not cost a look at every peer on every packet.
    deadlines: BTreeSet<(Instant, PeerId)>,
    /// Remote address → the peer that accepted traffic from it, so routing a datagram is a
    /// lookup rather than asking every peer.
    routes: HashMap<SocketAddr, PeerId>,
    /// Each rung's frames, the full-size one first.
    rungs: Vec<RungFrames>,
    /// Whether viewers are moved between rungs as their links allow.
    adaptive: bool,
    /// Whether the top rung's frames kept what the next viewer should be shown once the last one has
    /// left: a stream that pauses while nobody watches is where it was, and a source's
    /// H.264 passed through goes on being sent (and kept) whether anyone watches or not.
    /// Only a live stream the server encodes stops then (it is not encoded for nobody),
    /// leaving the frames kept stale.
    kept_frames_stay_current: bool,
    /// Whether the stream's last frame has been sent: the frames kept then hold it for good.
    stream_ended: bool,
    /// The renditions taken so far of the capture whose last is still to come.
    capture: Vec<RtpFrame>,
    pending: Option<Pending>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<FanoutEvent>,
    owed: OwedEvents,
    busy: BusyMeter,
    metrics: Arc<Metrics>,
}

impl Fanout {
    /// A fan-out of a stream encoded at `ladder`, with no peers yet, started `now`.
    pub(crate) fn new(ladder: &Ladder, metrics: Arc<Metrics>, now: Instant) -> Self {
        let rungs = ladder
            .rungs()
            .iter()
            .map(|rung| RungFrames {
                packetizer: FramePacketizer::new(),
                recent: RecentFrames::default(),
                configured: u64::from(rung.bitrate),
                sent: RateMeter::default(),
                watchers: 0,
            })
            .collect();
        Fanout {
            peers: HashMap::new(),
            deadlines: BTreeSet::new(),
            routes: HashMap::new(),
            rungs,
            adaptive: ladder.rungs().len() > 1,
            kept_frames_stay_current: false,
            stream_ended: false,
            capture: Vec::new(),
            pending: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            owed: OwedEvents::none(),
            busy: BusyMeter::new(now),
            metrics,
        }
    }

    /// Does what the rest of the server asks; answers whether the session named exists
    /// (true for commands that name none).
    pub(crate) fn handle_command(&mut self, command: Command, now: Instant) -> bool {
        self.finish_pending(now);
        match command {
            Command::Add(mut peer) => {
                let id = peer.id();
                let choice = self.start_rung();
                peer.start_on(choice.target());
                self.watch(choice.target(), true);
                self.watch(choice.target(), true);
                let watching = [choice.target(); 2];
                // Counted as a viewer since its offer was admitted.
                self.peers.insert(id, Slot { peer: *peer, deadline: now, choice, next_choice: now, watching });
                self.deadlines.insert((now, id));
                self.events.push_back(FanoutEvent::PeerAdded);
                self.flush(id, now);
                true
            }
            Command::CloseAll => {
                // The frames kept are dropped only if the last viewer's leaving makes them
                // stale, as when viewers leave one by one (see `remove`). The reset restarts
                // the stream clock too; a joiner starting from frames stamped before goes on
                // along a timeline of its own (`Peer::send_frame`).
                let ids: Vec<PeerId> = self.peers.keys().copied().collect();
                debug!(peers = ids.len(), "closing every peer");
                ids.into_iter().for_each(|id| self.close_peer(id, now));
                true
            }
            Command::Close(session) => {
                let Some(id) = self.find_session(&session) else {
                    return false;
                };
                self.close_peer(id, now);
                true
            }
            Command::AddCandidates(session, candidates) => {
                let Some(slot) = self.find_session(&session).and_then(|id| self.peers.get_mut(&id)) else {
                    return false;
                };
                candidates.into_iter().for_each(|candidate| slot.peer.add_remote_candidate(candidate));
                true
            }
        }
    }

    /// Takes the stream's next frame (or word that frames were missed). `queued` yields the
    /// frames still waiting after it; they are taken only if the driver has fallen behind.
    pub(crate) fn handle_frame(&mut self, input: FrameInput, queued: impl Iterator<Item = FrameInput>, now: Instant) {
        self.finish_pending(now);
        match input {
            FrameInput::Frame(frame) if now.saturating_duration_since(frame.published_at) > MAX_FANOUT_WAIT => {
                debug!(waited = ?now.saturating_duration_since(frame.published_at), "driver fell behind the stream");
                self.catch_up(FrameInput::Frame(frame), queued);
            }
            FrameInput::Frame(frame) => {
                if let Some(rtp) = self.packetize(&frame) {
                    self.capture.push(rtp);
                }
                // Kept for joiners only as it is sent: a viewer starting from it meanwhile
                // would be sent it again.
                if frame.ends_capture && !self.capture.is_empty() {
                    let capture = std::mem::take(&mut self.capture);
                    capture.iter().for_each(|rtp| self.keep(rtp));
                    self.start_job(Job::Capture(capture));
                }
            }
            FrameInput::Missed(missed) => {
                debug!(missed, "driver fell behind the stream and missed frames");
                self.catch_up(FrameInput::Missed(missed), queued);
            }
        }
    }

    /// Takes a datagram from the network, for the peer it belongs to, if any.
    pub(crate) fn handle_datagram(&mut self, datagram: Datagram, now: Instant) {
        self.finish_pending(now);
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
            self.events.push_back(FanoutEvent::Released(datagram.source));
            return;
        };
        if self.routes.insert(datagram.source, id) != Some(id) {
            self.events.push_back(FanoutEvent::Claimed(datagram.source));
        }
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.handle_datagram(input);
        }
        self.flush(id, now);
    }

    /// Serves the peers whose deadline has passed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.finish_pending(now);
        let due: Vec<PeerId> =
            self.deadlines.iter().take_while(|&&(deadline, _)| deadline <= now).map(|&(_, id)| id).collect();
        if !due.is_empty() {
            self.pending = Some(Pending { job: Job::Timeout, peers: due, last_wait: None });
        }
    }

    /// The next datagram to send. Work that goes to every peer (a frame) is done for one
    /// more peer whenever the datagrams made so far have all been taken.
    pub(crate) fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        while self.transmits.is_empty() && self.pending.is_some() {
            self.work_on_next_peer(now);
        }
        self.transmits.pop_front()
    }

    /// Whether a datagram made so far is still to be taken: when none is, the next
    /// [`Fanout::poll_transmit`] starts on another peer, and what was taken can be sent.
    pub(crate) fn has_transmit_ready(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// The next thing the rest of the server must know.
    pub(crate) fn poll_event(&mut self) -> Option<FanoutEvent> {
        self.events.pop_front()
    }

    /// When [`Fanout::handle_timeout`] is next due.
    pub(crate) fn poll_timeout(&self, now: Instant) -> Instant {
        let idle = now + IDLE_WAKE;
        self.deadlines.first().map_or(idle, |&(deadline, _)| deadline.min(idle))
    }

    /// Whether the driver should take the stream's next frame before the network events
    /// waiting: false while events that waited during the last frame are owed their turn.
    pub(crate) fn frame_before_events(&self) -> bool {
        !self.owed.any()
    }

    /// Ends a turn of the driver that started at `started` and ends at `now` (its
    /// transmits all taken), with `events_waiting` network events then queued.
    pub(crate) fn turn_done(&mut self, turn: Turn, started: Instant, events_waiting: usize, now: Instant) {
        let took = now.saturating_duration_since(started);
        match turn {
            Turn::Frame => self.owed = OwedEvents::after_frame(events_waiting, took, now),
            Turn::Network => self.owed.handled_one(now),
            Turn::Other => {}
        }
        if let Some(share) = self.busy.record(took, now) {
            self.events.push_back(FanoutEvent::Busy(share));
        }
    }

    fn start_job(&mut self, job: Job) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        self.pending = Some(Pending { job, peers, last_wait: None });
    }

    /// Does what is pending for every peer left, before another input is taken.
    fn finish_pending(&mut self, now: Instant) {
        while self.pending.is_some() {
            self.work_on_next_peer(now);
        }
    }

    fn work_on_next_peer(&mut self, now: Instant) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let Some(id) = pending.peers.pop() else {
            if let (Job::Capture(_), Some(wait)) = (&pending.job, pending.last_wait) {
                Metrics::observe(&self.metrics.capture_to_last_send_seconds, wait);
            }
            return;
        };
        if let Some(slot) = self.peers.get_mut(&id) {
            match &pending.job {
                // Captures at rungs the peer is neither on nor moving to are none of its
                // business.
                Job::Capture(renditions) if !renditions.iter().any(|rtp| slot.watching.contains(&rtp.frame.rung)) => {
                    self.pending = Some(pending);
                    return;
                }
                Job::Capture(renditions) => {
                    if let Some(rtp) = slot.peer.send_capture(renditions, &self.metrics, now) {
                        let wait = now.saturating_duration_since(rtp.frame.encoded.captured_at);
                        Metrics::observe(&self.metrics.capture_to_send_seconds, wait);
                        pending.last_wait = Some(wait);
                    }
                }
                // Replays the frames kept to the peer (in `flush`), or asks for a keyframe.
                Job::Resync => slot.peer.resync(),
                Job::Timeout => slot.peer.handle_timeout(now),
            }
            self.flush(id, now);
        }
        self.pending = Some(pending);
    }

    /// Goes on from the present after falling behind the stream. The frames still queued
    /// (and the one taken too late) are nearly as late as any missed, so none is sent as
    /// it came: each peer starts again from the newest keyframe among them and the frames
    /// since, sent at once as to a viewer that lost data ([`Peer::replay`]), or else from
    /// the next keyframe. So the stream's last frame ("The End", a keyframe) is kept for
    /// everyone coming later whenever it is among them.
    fn catch_up(&mut self, first: FrameInput, queued: impl Iterator<Item = FrameInput>) {
        // The renditions taken of an unfinished capture go with those queued: the peers
        // start again from what is kept.
        let unfinished: Vec<FrameInput> = self.capture.drain(..).map(|rtp| FrameInput::Frame(rtp.frame)).collect();
        let first = unfinished.into_iter().chain(std::iter::once(first));
        let mut taken: Vec<SinceKeyframe<StreamFrame>> = self.rungs.iter().map(|_| SinceKeyframe::default()).collect();
        for input in first.chain(queued) {
            match input {
                FrameInput::Frame(frame) => {
                    if let Some(rung) = taken.get_mut(frame.rung) {
                        rung.push(frame, usize::MAX, usize::MAX);
                    }
                }
                FrameInput::Missed(missed) => taken.iter_mut().for_each(|rung| rung.break_off(missed)),
            }
        }
        for rung in taken {
            self.metrics.frames_dropped.inc_by(rung.dropped());
            let frames = rung.into_frames();
            if let Some(rung) = frames.first().and_then(|frame| self.rungs.get_mut(frame.rung)) {
                rung.recent.clear();
            }
            for frame in frames {
                if self.packetize_and_keep(&frame).is_none() {
                    break;
                }
            }
        }
        debug!(peers = self.peers.len(), "its peers start again from a keyframe queued, or the next");
        self.start_job(Job::Resync);
    }

    /// Cuts a frame into RTP payloads and keeps it for viewers joining. If it cannot be
    /// cut, every viewer misses it and must start again from a keyframe: returns `None`.
    fn packetize_and_keep(&mut self, frame: &StreamFrame) -> Option<RtpFrame> {
        let rtp = self.packetize(frame)?;
        self.keep(&rtp);
        Some(rtp)
    }

    /// Cuts a frame into RTP payloads (see [`Fanout::packetize_and_keep`]).
    fn packetize(&mut self, frame: &StreamFrame) -> Option<RtpFrame> {
        let rung = self.rungs.get_mut(frame.rung)?;
        let rtp = match rung.packetizer.packetize(frame) {
            Ok(rtp) => rtp,
            Err(error) => {
                debug!(%error, rung = frame.rung, "could not packetize a frame; every peer on the rung resyncs");
                rung.recent.clear();
                self.peers
                    .values_mut()
                    .filter(|slot| slot.peer.rungs().0 == frame.rung)
                    .for_each(|slot| slot.peer.resync());
                return None;
            }
        };
        Some(rtp)
    }

    /// Keeps a frame cut into payloads for viewers joining, once it is sent.
    fn keep(&mut self, rtp: &RtpFrame) {
        let frame = &rtp.frame;
        let Some(rung) = self.rungs.get_mut(frame.rung) else {
            return;
        };
        rung.recent.record(rtp);
        rung.sent.record(rtp.payload_bytes() + rtp.payloads.len() * PACKET_OVERHEAD, frame.published_at);
        if frame.rung == 0 {
            self.kept_frames_stay_current = frame.pauses_unwatched || !frame.keyframes_on_request;
        }
        self.stream_ended |= frame.last;
    }

    /// Where a joiner starts: on the top rung, as sharp as the stream gets, until its link
    /// says otherwise; once the stream has ended, where its last frame is kept.
    fn start_rung(&self) -> RungChoice {
        if self.stream_ended {
            let kept = self.rungs.iter().position(|rung| !rung.recent.frames().is_empty());
            return RungChoice::fixed(kept.unwrap_or(0));
        }
        RungChoice::fixed(0)
    }

    /// What a viewer on each rung needs, in bits per second.
    fn rates(&self) -> Vec<u64> {
        self.rungs.iter().map(RungFrames::rate).collect()
    }

    /// Counts one of a peer's places more (`joined`) or fewer on `rung`, and tells the
    /// encoders. A rung this driver's peers all left has its frames kept dropped unless
    /// they stay what the next viewer should be shown (see `kept_frames_stay_current`).
    fn watch(&mut self, rung: usize, joined: bool) {
        let Some(frames) = self.rungs.get_mut(rung) else {
            return;
        };
        if joined {
            frames.watchers += 1;
        } else {
            frames.watchers = frames.watchers.saturating_sub(1);
            let stays_current = rung == 0 && (self.kept_frames_stay_current || self.stream_ended);
            if frames.watchers == 0 && !stays_current {
                // Not encoded while nobody is on it: what was kept would be stale.
                frames.recent.clear();
            }
        }
        self.events.push_back(FanoutEvent::Watching { rung, joined });
    }

    /// Chooses the peer's rung again from what it knows of its viewer's link, at most every
    /// [`RUNG_CHOICE_INTERVAL`], and counts it where it is.
    fn choose_rung(&mut self, id: PeerId, now: Instant) {
        if !self.adaptive {
            return;
        }
        let due = self.peers.get(&id).is_some_and(|slot| now >= slot.next_choice);
        let rates = if due { self.rates() } else { Vec::new() };
        let Some(slot) = self.peers.get_mut(&id) else {
            return;
        };
        if due {
            slot.next_choice = now + RUNG_CHOICE_INTERVAL;
            // Not before the rung's rate is known: a small picture may need a fraction of
            // its encoder's target.
            let (rung, _) = slot.peer.rungs();
            let measured = self.rungs.get(rung).is_some_and(|rung| rung.sent.rate().is_some());
            if let Some(report) = slot.peer.link().filter(|_| measured) {
                let was = slot.choice.target();
                let target = slot.choice.update(report, &rates, now);
                if target != was {
                    debug!(id, ?report, ?rates, from = was, to = target, "the viewer's link calls for another rung");
                }
                slot.peer.move_to(target);
            }
        }
        let (sent, moving_to) = slot.peer.rungs();
        let was = std::mem::replace(&mut slot.watching, [sent, moving_to]);
        if was != [sent, moving_to] {
            was.into_iter().for_each(|rung| self.watch(rung, false));
            [sent, moving_to].into_iter().for_each(|rung| self.watch(rung, true));
        }
    }

    fn find_session(&self, session: &SessionId) -> Option<PeerId> {
        self.peers.iter().find(|(_, slot)| slot.peer.session() == session).map(|(&id, _)| id)
    }

    /// Closes one peer: it sends its goodbyes, then ends and is removed.
    fn close_peer(&mut self, id: PeerId, now: Instant) {
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.close();
        }
        self.flush(id, now);
        if let Some(slot) = self.peers.get_mut(&id) {
            slot.peer.abort();
        }
        self.flush(id, now);
    }

    /// Chooses the peer's rung, takes everything it has to send, passes on its wish for a
    /// keyframe, records its next deadline, and removes it once it is dead.
    fn flush(&mut self, id: PeerId, now: Instant) {
        // First, so that a move's wish for a keyframe is passed on below.
        self.choose_rung(id, now);
        let Some(slot) = self.peers.get_mut(&id) else {
            return;
        };
        let transmits = &mut self.transmits;
        let mut deadline = slot.peer.poll(|transmit| transmits.push_back(transmit));
        let (rung, _) = slot.peer.rungs();
        let recent = self.rungs.get(rung).map_or(&[][..], |rung| rung.recent.frames());
        // A connection completes while polling: start the viewer at once if it can be.
        if deadline.is_some()
            && slot.peer.start_from(recent, &self.metrics, now, |transmit| transmits.push_back(transmit))
        {
            deadline = slot.peer.poll(|transmit| transmits.push_back(transmit));
        }
        if let Some(wanted) = slot.peer.take_keyframe_wish() {
            // A keyframe made for one viewer goes to all of them on its rung: while the
            // last one and the frames since are kept, the viewer gets those (again)
            // instead. Otherwise the encoder makes one (it coalesces requests); a source
            // passed through cannot, and the viewer waits for the source's next. A viewer
            // moving to another rung waits for a keyframe made there: the frames kept would
            // be a burst on a link that just proved too small, or not yet large enough.
            if deadline.is_some()
                && wanted == rung
                && slot.peer.replay(recent, &self.metrics, now, |transmit| transmits.push_back(transmit))
            {
                self.metrics.keyframe_requests.inc();
                deadline = slot.peer.poll(|transmit| transmits.push_back(transmit));
            } else {
                self.events.push_back(FanoutEvent::KeyframeWanted(wanted));
            }
        }
        self.deadlines.remove(&(slot.deadline, id));
        match deadline {
            Some(deadline) => {
                slot.deadline = deadline;
                self.deadlines.insert((deadline, id));
            }
            None => self.remove(id),
        }
    }

    fn remove(&mut self, id: PeerId) {
        let Some(slot) = self.peers.remove(&id) else {
            return;
        };
        // A live stream goes on unencoded while nobody watches; frames kept from before
        // would show the next viewer a stale picture first. Once a stream has ended, its
        // last picture ("The End") is what everyone coming later is shown.
        slot.watching.into_iter().for_each(|rung| self.watch(rung, false));
        let events = &mut self.events;
        self.routes.retain(|&source, owner| {
            let keep = *owner != id;
            if !keep {
                events.push_back(FanoutEvent::Released(source));
            }
            keep
        });
        events.push_back(FanoutEvent::PeerRemoved);
        self.metrics.viewers.dec();
        debug!(id, "peer removed");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use str0m::media::MediaTime;
    use str0m::{Output, Rtc};
    use webgear_media::encode::EncodedFrame;

    use super::*;
    use crate::rtc::peer::testing::{
        connected_adaptive_viewer, connected_pair, connected_viewer, deliver, outputs, report_link,
    };
    use crate::rtc::rung::LinkReport;

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
            rung: 0,
            ends_capture: true,
            published_at,
        }
    }

    /// Frame `number` of a stream whose only keyframe is frame 0, published `now`.
    fn frame(number: u32, now: Instant) -> FrameInput {
        FrameInput::Frame(frame_published(number, number == 0, now))
    }

    /// The stream numbers of the frames kept for joiners.
    fn kept(fanout: &Fanout) -> Vec<u64> {
        fanout.rungs[0].recent.frames().iter().map(|rtp| rtp.frame.rtp_time.numer() / 3000).collect()
    }

    fn transmits(fanout: &mut Fanout, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| fanout.poll_transmit(now)).collect()
    }

    fn events(fanout: &mut Fanout) -> Vec<FanoutEvent> {
        std::iter::from_fn(|| fanout.poll_event()).collect()
    }

    /// The frames a viewer reassembled from `sent`, as stream numbers.
    fn received(viewer: &mut Rtc, sent: &[Transmit], now: Instant) -> Vec<u64> {
        deliver(viewer, sent, now).iter().map(|data| data.time.numer() / 3000).collect()
    }

    /// What `viewer` sends by `now`, as the driver would hand it to the fan-out.
    fn datagrams_from(viewer: &mut Rtc, now: Instant) -> Vec<Datagram> {
        viewer.handle_input(Input::Timeout(now)).unwrap();
        outputs(viewer)
            .into_iter()
            .filter_map(|output| match output {
                Output::Transmit(transmit) => Some(Datagram {
                    data: transmit.contents.to_vec(),
                    source: transmit.source,
                    destination: transmit.destination,
                    tcp: false,
                    received_at: now,
                }),
                _ => None,
            })
            .collect()
    }

    /// Frame `number` at `rung` (of three), published `now`: a kilobyte per rung above it,
    /// ending with the rung and the number, so that the viewer can tell which it got.
    fn frame_at_rung(number: u8, rung: u8, keyframe: bool, now: Instant) -> FrameInput {
        let nal_header = if keyframe { 0x65 } else { 0x41 };
        let mut frame = frame_published(u32::from(number), keyframe, now);
        let mut data = vec![0, 0, 0, 1, nal_header];
        data.extend(std::iter::repeat_n(rung + 1, 1000 * usize::from(3 - rung)));
        data.extend([rung + 1, number + 1]);
        frame.encoded.data = Arc::from(data);
        frame.rung = usize::from(rung);
        frame.ends_capture = rung == 2;
        FrameInput::Frame(frame)
    }

    /// Serves every deadline up to `until` and returns what was sent meanwhile.
    fn transmits_until(fanout: &mut Fanout, now: Instant, until: Instant) -> Vec<Transmit> {
        let mut sent = transmits(fanout, now);
        let mut at = now;
        while fanout.poll_timeout(at) <= until {
            at = fanout.poll_timeout(at).max(at + Duration::from_micros(100));
            fanout.handle_timeout(at);
            sent.extend(transmits(fanout, at));
        }
        sent
    }

    #[test]
    fn a_viewer_follows_its_estimate_to_another_rung_at_that_rung_s_keyframe_on_one_continuous_stream() {
        let (mut viewer, peer, start) = connected_adaptive_viewer(1, 6000, Instant::now());
        let id = peer.id();
        let metrics = Arc::new(Metrics::default());
        let mut fanout = Fanout::new(&Ladder::default_for(2_000_000), metrics.clone(), start);
        fanout.handle_command(Command::Add(Box::new(peer)), start);
        transmits(&mut fanout, start);
        let added = events(&mut fanout);
        assert!(added.contains(&FanoutEvent::Watching { rung: 0, joined: true }), "a joiner starts on top: {added:?}");

        // Each capture comes at every rung, four a second; rung 1 has a keyframe at frames
        // 0 and 10 only. The rungs need about 123, 83 and 43 kbit/s.
        let mut got = Vec::new();
        let mut wanted = Vec::new();
        for number in 0..12u8 {
            let now = start + Duration::from_millis(250) * u32::from(number);
            if number == 2 {
                // The viewer's link turns out to carry 80 kbit/s: rung 1. Nothing moves
                // until the rungs' rates are measured (frame 4), and the link has carried
                // less than rung 0 for a second (frame 8).
                report_link(&mut fanout.peers.get_mut(&id).unwrap().peer, LinkReport::Estimate(80_000));
            }
            for rung in 0..3 {
                let keyframe = number == 0 || (rung == 1 && number == 10);
                fanout.handle_frame(frame_at_rung(number, rung, keyframe, now), std::iter::empty(), now);
                let sent = transmits_until(&mut fanout, now, now + Duration::from_millis(200));
                for data in deliver(&mut viewer, &sent, now) {
                    assert!(data.contiguous, "no gap in sequence numbers");
                    got.push((data.data[data.data.len() - 2] - 1, data.data[data.data.len() - 1] - 1));
                }
                wanted.extend(events(&mut fanout).into_iter().filter(|e| matches!(e, FanoutEvent::KeyframeWanted(_))));
            }
        }
        let expected: Vec<(u8, u8)> = (0..12).map(|number| (u8::from(number >= 10), number)).collect();
        assert_eq!(got, expected, "(rung, frame) the viewer got: every frame, moving at rung 1's keyframe");
        assert_eq!(wanted, [FanoutEvent::KeyframeWanted(1)], "a keyframe is asked of rung 1");
        assert_eq!(metrics.rung_switches.get(), 1);
        assert_eq!(fanout.rungs.iter().map(|rung| rung.watchers).collect::<Vec<_>>(), [0, 2, 0]);
    }

    #[test]
    fn a_driver_that_fell_behind_the_stream_goes_on_from_the_present() {
        let now = Instant::now();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        // Ten frames while the driver was busy: the stream dropped six of them for it.
        let mut queued = (6..10).map(|number| frame(number, now));
        fanout.handle_frame(FrameInput::Missed(6), &mut queued, now);
        assert_eq!(queued.count(), 0, "frames as late as the missed ones are all taken, none sent");
        assert_eq!(fanout.metrics.frames_dropped.get(), 10);
        assert!(kept(&fanout).is_empty(), "no keyframe was queued: joiners wait for the next");
        fanout.handle_frame(frame(10, now), std::iter::from_fn(|| panic!("not behind")), now);
        assert_eq!(fanout.metrics.frames_dropped.get(), 10);
    }

    #[test]
    fn a_driver_that_fell_behind_as_the_stream_ended_keeps_its_last_frame_for_later_viewers() {
        let now = Instant::now();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        // "The End", a keyframe, is among the frames still queued when the driver looks.
        let mut the_end = frame_published(9, true, now);
        the_end.last = true;
        let queued = (6..9).map(|number| frame(number, now)).chain([FrameInput::Frame(the_end)]);
        fanout.handle_frame(FrameInput::Missed(6), queued, now);
        assert!(fanout.stream_ended);
        let kept: Vec<bool> = fanout.rungs[0].recent.frames().iter().map(|rtp| rtp.frame.last).collect();
        assert_eq!(kept, [true], "viewers coming later start from \"The End\"");
    }

    /// A restreamer's "GOP cache": on connecting, it sends the group of pictures so far at
    /// once (here 5 s at 30 fps), passed through.
    #[test]
    fn a_group_of_pictures_sent_at_once_is_taken_whole_and_kept_for_joiners() {
        let now = Instant::now();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        for number in 0..150 {
            let passed_through =
                StreamFrame { keyframes_on_request: false, ..frame_published(number, number == 0, now) };
            fanout.handle_frame(FrameInput::Frame(passed_through), std::iter::empty(), now);
        }
        assert_eq!(fanout.metrics.frames_dropped.get(), 0);
        assert_eq!(kept(&fanout), (0..150).collect::<Vec<u64>>());
    }

    #[test]
    fn a_driver_taking_frames_too_late_starts_its_viewers_again_from_the_newest_keyframe_queued() {
        let (mut viewer, peer, now) = connected_pair();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        fanout.handle_command(Command::Add(Box::new(peer)), now);
        transmits(&mut fanout, now);
        fanout.handle_frame(frame(0, now), std::iter::empty(), now);
        assert_eq!(received(&mut viewer, &transmits(&mut fanout, now), now), [0], "the viewer is watching");

        // Frames that waited too long for the driver; the newest keyframe among them is 3.
        let later = now + MAX_FANOUT_WAIT * 2;
        let mut late = (1..6).map(|number| FrameInput::Frame(frame_published(number, number == 3, now)));
        let first = late.next().unwrap();
        fanout.handle_frame(first, &mut late, later);
        assert_eq!(late.count(), 0, "the frames queued are taken at once");
        assert_eq!(fanout.metrics.frames_dropped.get(), 2, "frames 1 and 2 are dropped");
        assert_eq!(kept(&fanout), [3, 4, 5]);
        // The viewer is sent frames 3 to 5 at once, stamped one tick apart after frame 0.
        assert_eq!(received(&mut viewer, &transmits(&mut fanout, later), later).len(), 3);

        // And goes on from there without waiting for a keyframe.
        fanout.handle_frame(FrameInput::Frame(frame_published(6, false, later)), std::iter::empty(), later);
        assert_eq!(received(&mut viewer, &transmits(&mut fanout, later), later), [6]);
        assert_eq!(fanout.metrics.frames_skipped.get(), 0);
    }

    #[test]
    fn each_viewer_s_packets_are_ready_before_the_next_viewer_is_sent_the_frame() {
        let start = Instant::now();
        let (mut first, first_peer, at) = connected_viewer(1, 6001, start);
        let (mut second, second_peer, then) = connected_viewer(2, 6002, start);
        let now = at.max(then);
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        fanout.handle_command(Command::Add(Box::new(first_peer)), now);
        fanout.handle_command(Command::Add(Box::new(second_peer)), now);
        transmits(&mut fanout, now);

        fanout.handle_frame(frame(0, now), std::iter::empty(), now);
        let mut batches = vec![Vec::new()];
        while let Some(transmit) = fanout.poll_transmit(now) {
            batches.last_mut().unwrap().push(transmit);
            if !fanout.has_transmit_ready() {
                batches.push(Vec::new());
            }
        }
        batches.retain(|batch| !batch.is_empty());
        assert_eq!(batches.len(), 2, "one batch of packets a viewer");
        let destinations: Vec<u16> = batches.iter().map(|batch| batch[0].destination.port()).collect();
        assert!(destinations == [6001, 6002] || destinations == [6002, 6001], "{destinations:?}");
        for batch in &batches {
            assert!(batch.iter().all(|transmit| transmit.destination == batch[0].destination));
            let viewer = if batch[0].destination.port() == 6001 { &mut first } else { &mut second };
            assert_eq!(received(viewer, batch, now), [0]);
        }
        assert_eq!(fanout.metrics.frames_sent.get(), 2);
    }

    #[test]
    fn a_joiner_with_no_keyframe_kept_asks_the_encoder_for_one_once_connected() {
        let (_viewer, peer, now) = connected_pair();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        fanout.handle_command(Command::Add(Box::new(peer)), now);
        transmits(&mut fanout, now);
        let watching = FanoutEvent::Watching { rung: 0, joined: true };
        assert_eq!(events(&mut fanout), [watching, watching, FanoutEvent::PeerAdded, FanoutEvent::KeyframeWanted(0)]);
    }

    #[test]
    fn a_viewer_s_address_is_claimed_on_its_first_datagram_and_released_when_it_goes_silent() {
        let (mut viewer, peer, mut now) = connected_pair();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        fanout.handle_command(Command::Add(Box::new(peer)), now);
        transmits(&mut fanout, now);
        events(&mut fanout);

        // The viewer's consent checks reach the fan-out, which routes them to the peer.
        let mut sent = Vec::new();
        while sent.is_empty() {
            now += Duration::from_millis(500);
            sent = datagrams_from(&mut viewer, now);
        }
        let source = sent[0].source;
        sent.into_iter().for_each(|datagram| fanout.handle_datagram(datagram, now));
        assert_eq!(events(&mut fanout), [FanoutEvent::Claimed(source)]);

        // Then nothing more from it: the session times out, on the simulated clock.
        let mut removed = Vec::new();
        for _ in 0..600 {
            now = fanout.poll_timeout(now);
            fanout.handle_timeout(now);
            transmits(&mut fanout, now);
            removed.extend(events(&mut fanout));
            if removed.contains(&FanoutEvent::PeerRemoved) {
                break;
            }
        }
        assert!(removed.contains(&FanoutEvent::Released(source)), "{removed:?}");
        assert!(removed.contains(&FanoutEvent::PeerRemoved), "{removed:?}");
        assert!(fanout.peers.is_empty());
        assert_eq!(fanout.poll_timeout(now), now + IDLE_WAKE, "no deadline left");
    }

    #[test]
    fn a_driver_behind_the_stream_handles_what_waited_during_a_frame_before_the_next() {
        let now = Instant::now();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        assert!(fanout.frame_before_events(), "frames come first");
        // A frame that took a minute, with two network events waiting at its end.
        let done = now + Duration::from_secs(60);
        fanout.turn_done(Turn::Frame, now, 2, done);
        let mut order = String::new();
        for _ in 0..3 {
            if fanout.frame_before_events() {
                order.push('F');
            } else {
                order.push('N');
                fanout.turn_done(Turn::Network, done, 1, done + Duration::from_millis(1));
            }
        }
        assert_eq!(order, "NNF", "the two events that waited, then the next frame");
    }

    #[test]
    fn the_events_handled_between_frames_take_no_longer_than_the_frame_took() {
        let now = Instant::now();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), now);
        // A frame that took 10 ms, with five events waiting: the first takes all of that.
        let ms = Duration::from_millis;
        fanout.turn_done(Turn::Frame, now, 5, now + ms(10));
        assert!(!fanout.frame_before_events());
        fanout.turn_done(Turn::Network, now + ms(10), 4, now + ms(20));
        assert!(fanout.frame_before_events(), "the rest wait for the frame after");
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

    #[test]
    fn the_fan_out_reports_how_busy_its_driver_was_once_a_window_is_over() {
        let start = Instant::now();
        let mut fanout = Fanout::new(&Ladder::single(2_000_000), Arc::new(Metrics::default()), start);
        let ms = Duration::from_millis;
        fanout.turn_done(Turn::Other, start + ms(1000), 0, start + ms(1500));
        assert!(events(&mut fanout).is_empty());
        fanout.turn_done(Turn::Frame, start + ms(1500), 0, start + ms(2000));
        assert_eq!(events(&mut fanout), [FanoutEvent::Busy(0.5)]);
    }
}
