//! One viewer's WebRTC session, in sans-IO style: it takes datagrams, timeouts and frames
//! already cut into RTP payloads, and gives back datagrams to send, its next deadline and
//! whether it wants a keyframe. The driver owns the sockets and the clock.
//!
//! str0m runs in RTP mode: the peer numbers and writes the shared payloads of each frame;
//! str0m adds the headers, encrypts, answers NACKs from its send buffer and reports
//! keyframe requests. With an adaptive stream the peer also reports what is known of the
//! viewer's link (the bandwidth the viewer estimates and sends as REMB, from the
//! `abs-send-time` stamps str0m writes; else the losses it reports), and sends the frames
//! of its rung, moving to another rung at that rung's keyframe, on one continuous RTP
//! stream (its own sequence numbers and timeline).
//!
//! A driver runs hundreds of peers on one task, so a panic in one session (a bug in the
//! WebRTC stack that a viewer's packets found) would end them all. Every call into the
//! session is therefore contained: a session that panics is dead from then on, is never
//! touched again, and its driver drops it like any other dead peer.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use str0m::bwe::BweKind;
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, TcpType, Transmit};
use str0m::rtp::{Extension, ExtensionMap, RtpWrite};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};
use tracing::{Span, debug, debug_span, error};

use super::SessionId;
use super::rtp_frame::RtpFrame;
use super::rung::LinkReport;
use crate::stats::Metrics;
use crate::stream::{StreamFrame, rtp_ticks};

/// A peer that has not completed ICE and DTLS by then is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A peer whose viewer has sent it nothing by then is dropped. A viewer starts its ICE
/// checks as soon as it has the answer, and the peer, ICE-lite, never checks itself: a
/// viewer none of whose packets reach the server within this time never connects (its
/// network blocks the way, or no TURN relay it has reaches us, or it never meant to).
/// Until then it holds a viewer place and, watching a file, keeps the file playing.
const FIRST_CONTACT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent video packets each peer keeps for retransmission on NACK. At 2 Mbit/s this is over a second of video,
/// far beyond any loss a viewer recovers from by NACK instead of a keyframe, and room for
/// a large keyframe. str0m's default (1000) held most of a viewer's memory.
const SEND_BUFFER_PACKETS: usize = 256;

/// How long sent video packets are kept for resending (str0m's default).
const RESEND_WINDOW: Duration = Duration::from_secs(3);

/// The largest share of the bytes sent to a viewer in a second that may be resends; beyond
/// it, str0m drops the resends asked for and the viewer waits for a keyframe. str0m's
/// default, 15%, is soon passed on a lossy link (a lost keyframe alone can pass it); this
/// lets as much be resent as sent, as libwebrtc's retransmission limit does (measured in
/// BENCHMARKS.md, "Lossy links").
const MAX_RESEND_SHARE: f32 = 0.5;

/// How far apart (at 90 kHz: 1 ms) the frames a joiner starts from are stamped; see
/// [`Peer::start_from`].
const CATCH_UP_SPACING: u32 = 90;

/// The shortest time between two [`Peer::replay`]s to one viewer: a viewer on a bad link
/// asks again and again, and each answer is a burst of video.
const REPLAY_INTERVAL: Duration = Duration::from_secs(1);

/// A frame's RTP time. The RTP clock wraps at 32 bits, as RTP timestamps do.
fn rtp_time(frame: &StreamFrame) -> u32 {
    frame.rtp_time.rebase(Frequency::NINETY_KHZ).numer() as u32
}

/// A viewer's RTP timeline: the stream clock's, shifted once for each restart of that
/// clock (WebGear_RTC's reset) the viewer lived through. A viewer can start from frames
/// kept from before a restart (a file that paused while nobody watched keeps its last
/// frames for the next viewer); the stream's next frames, stamped from zero again, must not
/// go back in time for it, or its player would take them for old ones.
#[derive(Debug, Default, Clone, Copy)]
struct Timeline {
    /// The restart of the stream clock ([`StreamFrame::clock_epoch`]) the viewer follows.
    epoch: u32,
    /// Added (wrapping) to the stream's RTP times.
    offset: u32,
}

impl Timeline {
    /// The viewer's RTP time for `frame`, given the RTP time of the last frame the viewer
    /// was sent and how long ago (none yet: `None`). The first frame of a new restart
    /// follows the last one sent by as long as passed between them (at least a tick).
    fn stamp(&mut self, frame: &StreamFrame, since_last: Option<(u32, Duration)>) -> u32 {
        let time = rtp_time(frame);
        if frame.clock_epoch != self.epoch {
            self.epoch = frame.clock_epoch;
            self.offset = match since_last {
                Some((last_time, elapsed)) => {
                    let ticks = rtp_ticks(elapsed).clamp(1, u64::from(u32::MAX / 2)) as u32;
                    last_time.wrapping_add(ticks).wrapping_sub(time)
                }
                None => 0,
            };
        }
        time.wrapping_add(self.offset)
    }
}

/// How often str0m reports each stream's statistics: with them come the losses a viewer
/// reports, all that is known of a link whose viewer sends no bandwidth estimate.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// str0m's usual RTP header extensions (Chrome's) without transport-wide sequence numbers.
/// With those a viewer sends transport-wide feedback every 50 ms for the server to
/// estimate its bandwidth itself, and str0m's estimator comes with its pacer, which lets a
/// frame's packets out one wake-up at a time instead of in one segmented send: a thousand
/// viewers fell from 30 to 6 frames a second (BENCHMARKS.md, "Slow links"). Without them a
/// viewer estimates on its side from the `abs-send-time` stamps and sends REMB.
fn extensions_without_congestion_feedback() -> ExtensionMap {
    let mut extensions = ExtensionMap::empty();
    for (id, extension) in ExtensionMap::standard().iter() {
        if !matches!(extension, Extension::TransportSequenceNumber) {
            extensions.set(id, extension.clone());
        }
    }
    extensions
}

/// A peer's identity within the server, for logs and routing.
pub(crate) type PeerId = u64;

/// Why an offer was refused. The text is shown to the client, so it says what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OfferError {
    #[error("the offer was rejected: {0}")]
    Rejected(#[source] RtcError),
    #[error(
        "the offer has no video section this server can send on: add a video transceiver \
         with direction \"recvonly\" (or \"sendrecv\")"
    )]
    NoVideo,
    #[error(
        "the offer's video section has no H.264 codec with packetization-mode=1; \
         this server sends H.264 (constrained baseline)"
    )]
    NoH264,
    #[error("invalid local ICE candidate {addr}: {source}")]
    Candidate {
        addr: SocketAddr,
        #[source]
        source: str0m::error::IceError,
    },
}

/// What a peer needs from its host to be created: where it can be reached and the DTLS
/// identity all peers share (generating one per peer would slow every join).
#[derive(Debug, Clone)]
pub(crate) struct PeerConfig {
    /// The media sockets' addresses.
    pub(crate) host_addrs: Vec<SocketAddr>,
    /// Addresses a 1:1 NAT forwards to the media sockets. Offered as host candidates too:
    /// checks sent to them arrive on (and are answered from) a media socket.
    pub(crate) public_addrs: Vec<SocketAddr>,
    /// ICE-TCP listeners' addresses, offered as passive TCP candidates (empty: UDP only).
    pub(crate) tcp_addrs: Vec<SocketAddr>,
    pub(crate) dtls_cert: DtlsCert,
    /// Whether the stream adapts: what is known of each viewer's link is gathered.
    pub(crate) adaptive: bool,
}

/// A frame sent to the viewer: its RTP time and when.
#[derive(Debug, Clone, Copy)]
struct Sent {
    time: u32,
    at: Instant,
}

/// The negotiated outgoing video track.
#[derive(Debug, Clone, Copy)]
struct VideoTrack {
    mid: Mid,
    pt: Pt,
}

/// Where a viewer's session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// The offer is answered; no datagram of the viewer's has reached the peer yet.
    Answered,
    /// The viewer's datagrams arrive; ICE and DTLS are not done.
    Connecting,
    /// Connected, and skipping delta frames, useless until the viewer has a keyframe.
    AwaitingKeyframe,
    /// Connected and following the stream.
    Playing,
    /// The session panicked: it is dead and never touched again.
    Broken,
}

impl PeerState {
    fn is_connected(self) -> bool {
        matches!(self, PeerState::AwaitingKeyframe | PeerState::Playing)
    }
}

pub(crate) struct Peer {
    id: PeerId,
    session: SessionId,
    rtc: Rtc,
    video: VideoTrack,
    created_at: Instant,
    state: PeerState,
    /// The last frame sent; `None` until the first, and until then the viewer can start
    /// from frames the stream sent before it connected.
    last_sent: Option<Sent>,
    /// The viewer's timeline against the stream clock's.
    timeline: Timeline,
    /// When the viewer was last sent the frames since a keyframe again (see
    /// [`Peer::replay`]).
    last_replay: Option<Instant>,
    /// Whether to ask the encoder for a keyframe on this peer's behalf (the driver takes
    /// the wish).
    wants_keyframe: bool,
    /// The extended sequence number of the next video packet.
    next_sequence: u64,
    /// The rung whose frames the viewer is sent.
    rung: usize,
    /// The rung the viewer is moving to at its next keyframe (`rung` when it stays).
    target_rung: usize,
    /// What is known of the viewer's link: the bandwidth it estimates (REMB), else the
    /// losses it reports.
    link: Option<LinkReport>,
    span: Span,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").field("id", &self.id).field("state", &self.state).finish_non_exhaustive()
    }
}

impl Peer {
    /// Answers a client's offer. The peer is ICE-lite: it answers the client's connectivity
    /// checks on the host addresses and never sends checks of its own.
    pub(crate) fn from_offer(
        id: PeerId,
        session: SessionId,
        offer: SdpOffer,
        config: &PeerConfig,
        now: Instant,
    ) -> Result<(Peer, SdpAnswer), OfferError> {
        let builder = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .set_dtls_cert(config.dtls_cert.clone())
            .clear_codecs()
            .enable_h264(true)
            // Never sent, but accepting an offer's audio section keeps it usable as the
            // BUNDLE transport: players that offer audio first (most WHEP players) would
            // otherwise get the ICE candidates on a rejected section and never connect.
            .enable_opus(true, false)
            .set_extension_map(extensions_without_congestion_feedback());
        let builder = if config.adaptive { builder.set_stats_interval(Some(STATS_INTERVAL)) } else { builder };
        let mut rtc = builder.build(now);
        for &addr in config.public_addrs.iter().chain(&config.host_addrs) {
            let candidate =
                Candidate::host(addr, Protocol::Udp).map_err(|source| OfferError::Candidate { addr, source })?;
            rtc.add_local_candidate(candidate);
        }
        for &addr in &config.tcp_addrs {
            let candidate = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|source| OfferError::Candidate { addr, source })?;
            rtc.add_local_candidate(candidate);
        }
        let answer = rtc.sdp_api().accept_offer(offer).map_err(OfferError::Rejected)?;

        // The answer lists every m-line; the session knows which are video we send.
        let sending_video: Vec<Mid> = answer
            .media_lines
            .iter()
            .map(|line| line.mid())
            .filter(|&mid| {
                rtc.media(mid).is_some_and(|media| media.kind() == MediaKind::Video && media.direction().is_sending())
            })
            .collect();
        if sending_video.is_empty() {
            return Err(OfferError::NoVideo);
        }
        let video = sending_video
            .into_iter()
            .find_map(|mid| Some(VideoTrack { mid, pt: h264_payload_type(&rtc, mid)? }))
            .ok_or(OfferError::NoH264)?;

        // The video we send has its stream from the answer on; its resend buffer is set
        // here whole (size, age and share), replacing the one str0m made.
        let mut api = rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(video.mid, None) else {
            return Err(OfferError::NoVideo);
        };
        stream.set_rtx_cache(SEND_BUFFER_PACKETS, RESEND_WINDOW, Some(MAX_RESEND_SHARE));

        let span = debug_span!("peer", id);
        span.in_scope(|| debug!(mid = %video.mid, pt = %video.pt, "answered offer"));
        let peer = Peer {
            id,
            session,
            rtc,
            video,
            created_at: now,
            state: PeerState::Answered,
            last_sent: None,
            timeline: Timeline::default(),
            last_replay: None,
            wants_keyframe: false,
            next_sequence: first_sequence_number(),
            rung: 0,
            target_rung: 0,
            link: None,
            span,
        };
        Ok((peer, answer))
    }

    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    /// The session id signalling knows this peer by.
    pub(crate) fn session(&self) -> &SessionId {
        &self.session
    }

    /// Runs `work` on this peer unless its session has panicked before; a panic in it
    /// marks the session dead instead of unwinding through the driver.
    fn contained<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.state == PeerState::Broken {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| work(self))) {
            Ok(value) => Some(value),
            Err(_) => {
                self.state = PeerState::Broken;
                self.span.in_scope(|| error!("the WebRTC session panicked; dropping this viewer only"));
                None
            }
        }
    }

    /// Learns an address the viewer can be reached at (a trickled ICE candidate). As an
    /// ICE-lite peer it never checks them itself; they complete the session's view of the
    /// viewer.
    pub(crate) fn add_remote_candidate(&mut self, candidate: Candidate) {
        self.contained(|peer| peer.rtc.add_remote_candidate(candidate));
    }

    /// Whether a datagram from the network belongs to this peer. One that makes the
    /// session panic belongs to nobody.
    pub(crate) fn accepts(&self, datagram: &Input) -> bool {
        self.state != PeerState::Broken
            && catch_unwind(AssertUnwindSafe(|| self.rtc.accepts(datagram))).unwrap_or(false)
    }

    /// Takes a datagram from the network (one this peer [accepts](Peer::accepts)).
    pub(crate) fn handle_datagram(&mut self, datagram: Input) {
        self.contained(|peer| {
            if peer.state == PeerState::Answered {
                peer.state = PeerState::Connecting;
            }
            peer.handle_input(datagram);
        });
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.contained(|peer| {
            if !peer.state.is_connected() && now >= peer.connect_by() {
                let why = if peer.state == PeerState::Answered { "the viewer sent nothing" } else { "never connected" };
                peer.span
                    .in_scope(|| debug!(after = ?now.saturating_duration_since(peer.created_at), "{why}; dropping"));
                peer.rtc.disconnect();
                return;
            }
            peer.handle_input(Input::Timeout(now));
        });
    }

    /// When the peer is dropped unless connected by then: [`FIRST_CONTACT_TIMEOUT`] after
    /// the offer while the viewer has sent nothing, [`CONNECT_TIMEOUT`] once it has.
    fn connect_by(&self) -> Instant {
        self.created_at + if self.state == PeerState::Answered { FIRST_CONTACT_TIMEOUT } else { CONNECT_TIMEOUT }
    }

    fn handle_input(&mut self, input: Input) {
        if let Err(error) = self.rtc.handle_input(input) {
            self.span.in_scope(|| debug!(%error, "input failed; disconnecting"));
            self.rtc.disconnect();
        }
    }

    /// Sends one frame, unless the peer is not connected yet or is waiting for a keyframe
    /// and this is not one; returns whether it did. Its packets are ready for the next
    /// [`Peer::poll`].
    pub(crate) fn send_frame(&mut self, rtp: &RtpFrame, metrics: &Metrics, now: Instant) -> bool {
        let time = self.stamp(&rtp.frame, now);
        self.contained(|peer| peer.write_frame(rtp, time, metrics, now)).unwrap_or(false)
    }

    /// Sends the viewer its rendition of one capture (one per rung watched): the rung it
    /// moves to where that one is a keyframe, else its own rung's. Returns the one sent.
    pub(crate) fn send_capture<'a>(
        &mut self,
        renditions: &'a [RtpFrame],
        metrics: &Metrics,
        now: Instant,
    ) -> Option<&'a RtpFrame> {
        let at_rung = |rung: usize| renditions.iter().find(move |rtp| rtp.frame.rung == rung);
        let moving =
            at_rung(self.target_rung).filter(|rtp| self.target_rung != self.rung && rtp.frame.encoded.keyframe);
        let rendition = moving.or_else(|| at_rung(self.rung))?;
        self.send_frame(rendition, metrics, now).then_some(rendition)
    }

    /// The RTP time `frame` goes out with, `now`, on the viewer's timeline.
    fn stamp(&mut self, frame: &StreamFrame, now: Instant) -> u32 {
        let since_last = self.last_sent.map(|sent| (sent.time, now.saturating_duration_since(sent.at)));
        self.timeline.stamp(frame, since_last)
    }

    /// Writes one frame stamped `time` (RTP, 90 kHz).
    fn write_frame(&mut self, rtp: &RtpFrame, time: u32, metrics: &Metrics, now: Instant) -> bool {
        if !self.state.is_connected() || !self.rtc.is_alive() {
            return false;
        }
        let frame = &rtp.frame;
        if frame.rung != self.rung {
            if frame.rung != self.target_rung || !frame.encoded.keyframe {
                return false;
            }
            self.span.in_scope(|| debug!(from = self.rung, to = frame.rung, "moving to another rung"));
            metrics.rung_switches.inc();
            self.rung = frame.rung;
        }
        if self.state == PeerState::AwaitingKeyframe {
            if !frame.encoded.keyframe {
                metrics.frames_skipped.inc();
                return false;
            }
            self.state = PeerState::Playing;
        }
        let mut api = self.rtc.direct_api();
        let Some(stream) = api.stream_tx_by_mid(self.video.mid, None) else {
            return false;
        };
        let last = rtp.payloads.len().saturating_sub(1);
        for (index, payload) in rtp.payloads.iter().enumerate() {
            let write = RtpWrite::new(
                self.video.pt,
                self.next_sequence.into(),
                time,
                frame.encoded.captured_at,
                payload.clone(),
            )
            .marker(index == last)
            .nackable(true);
            stream.write_rtp(write);
            self.next_sequence += 1;
        }
        // str0m releases written packets to polling only once its timers have run (its
        // queue snapshot is taken then); without this the frame would wait for the peer's
        // next timeout, which a busy driver serves last.
        self.handle_input(Input::Timeout(now));
        self.last_sent = Some(Sent { time, at: now });
        metrics.frames_sent.inc();
        true
    }

    /// Starts a viewer that has just connected from `recent` (the stream's last keyframe
    /// and the frames since), instead of waiting for a keyframe made for it. Returns
    /// whether it did; if so the viewer no longer wants a keyframe.
    ///
    /// The frames are stamped [`CATCH_UP_SPACING`] apart, ending at the newest one's own
    /// time: a player decodes them at once and shows the newest, then goes on live. With
    /// their own times a player would play them out at the stream's pace and stay as far
    /// behind the stream as the oldest of them, for good.
    pub(crate) fn start_from(
        &mut self,
        recent: &[RtpFrame],
        metrics: &Metrics,
        now: Instant,
        transmit: impl FnMut(Transmit),
    ) -> bool {
        let (Some(first), Some(newest)) = (recent.first(), recent.last()) else {
            return false;
        };
        if self.last_sent.is_some() || !self.state.is_connected() || !first.frame.encoded.keyframe {
            return false;
        }
        let span = CATCH_UP_SPACING.wrapping_mul(recent.len() as u32 - 1);
        let first_time = self.stamp(&newest.frame, now).wrapping_sub(span);
        self.write_burst(recent, first_time, CATCH_UP_SPACING, metrics, now, transmit);
        let started = self.last_sent.is_some();
        if started && self.state == PeerState::Playing {
            self.wants_keyframe = false;
        }
        started
    }

    /// Sends a viewer that asked for a keyframe (it lost data that retransmission could not
    /// bring back) the stream's last keyframe and the frames since again, instead of a
    /// keyframe made for it, which would go to every viewer, or which a source passed
    /// through cannot make at all. Returns whether it did; at most once per
    /// [`REPLAY_INTERVAL`].
    ///
    /// They are stamped one RTP tick apart after the last frame sent, well before the
    /// next (a frame is 3000 ticks at 30 fps): the viewer decodes from the keyframe up to
    /// the newest frame at once and plays on.
    pub(crate) fn replay(
        &mut self,
        recent: &[RtpFrame],
        metrics: &Metrics,
        now: Instant,
        transmit: impl FnMut(Transmit),
    ) -> bool {
        let (Some(Sent { time: last_time, .. }), Some(first)) = (self.last_sent, recent.first()) else {
            return false;
        };
        let replayed_lately = self.last_replay.is_some_and(|at| now.saturating_duration_since(at) < REPLAY_INTERVAL);
        if replayed_lately || !first.frame.encoded.keyframe {
            return false;
        }
        self.last_replay = Some(now);
        self.span.in_scope(|| debug!(frames = recent.len(), "sending the frames since the last keyframe again"));
        self.write_burst(recent, last_time.wrapping_add(1), 1, metrics, now, transmit);
        true
    }

    /// Writes `frames` stamped `spacing` RTP ticks apart from `first_time`. Each frame's
    /// packets go to `transmit` as soon as it is written: seconds of frames written at
    /// once would leave the session's send queue that large for good.
    fn write_burst(
        &mut self,
        frames: &[RtpFrame],
        first_time: u32,
        spacing: u32,
        metrics: &Metrics,
        now: Instant,
        mut transmit: impl FnMut(Transmit),
    ) {
        for (frame, index) in frames.iter().zip(0u32..) {
            let time = first_time.wrapping_add(spacing.wrapping_mul(index));
            self.contained(|peer| peer.write_frame(frame, time, metrics, now));
            self.poll(&mut transmit);
        }
    }

    /// What is known of the viewer's link so far.
    pub(crate) fn link(&self) -> Option<LinkReport> {
        self.link
    }

    /// The rung the viewer is sent, and the one it is moving to.
    pub(crate) fn rungs(&self) -> (usize, usize) {
        (self.rung, self.target_rung)
    }

    /// Puts a viewer that has been sent nothing yet on `rung`.
    pub(crate) fn start_on(&mut self, rung: usize) {
        if self.last_sent.is_none() {
            self.rung = rung;
            self.target_rung = rung;
        }
    }

    /// Moves the viewer to `rung` at that rung's next keyframe (asked for now).
    pub(crate) fn move_to(&mut self, rung: usize) {
        if rung == self.target_rung {
            return;
        }
        self.target_rung = rung;
        if rung != self.rung {
            self.wants_keyframe = true;
        }
    }

    /// Skip everything up to the next keyframe, and ask for one: the viewer missed data.
    pub(crate) fn resync(&mut self) {
        if self.state == PeerState::Playing {
            self.state = PeerState::AwaitingKeyframe;
        }
        self.wants_keyframe = true;
    }

    /// Returns (and clears) the rung on which this peer wants the encoder to make a
    /// keyframe, if it wants one.
    pub(crate) fn take_keyframe_wish(&mut self) -> Option<usize> {
        std::mem::take(&mut self.wants_keyframe).then_some(self.target_rung)
    }

    /// Drives the session until it has nothing more to do: each datagram to send goes to
    /// `transmit`. Returns when the peer next needs [`Peer::handle_timeout`], or `None`
    /// once it is dead.
    pub(crate) fn poll(&mut self, transmit: impl FnMut(Transmit)) -> Option<Instant> {
        self.contained(|peer| peer.drive(transmit)).flatten()
    }

    fn drive(&mut self, mut transmit: impl FnMut(Transmit)) -> Option<Instant> {
        while self.rtc.is_alive() {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(datagram)) => transmit(datagram),
                Ok(Output::Timeout(deadline)) => {
                    // Wake in time to enforce the connect timeout too.
                    return Some(if self.state.is_connected() { deadline } else { deadline.min(self.connect_by()) });
                }
                Ok(Output::Event(event)) => self.handle_event(event),
                Err(error) => {
                    self.span.in_scope(|| debug!(%error, "session failed; disconnecting"));
                    self.rtc.disconnect();
                }
            }
        }
        None
    }

    fn handle_event(&mut self, event: Event) {
        match event {
            Event::Connected => {
                self.span.in_scope(|| debug!(after = ?self.created_at.elapsed(), "connected"));
                self.state = PeerState::AwaitingKeyframe;
                self.resync();
            }
            // Before the viewer's first datagram, "disconnected" only says that no check
            // has come yet (the session's timers run sooner with an adaptive stream's statistics):
            // a viewer still reaching us through a slow TURN relay has until
            // FIRST_CONTACT_TIMEOUT.
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) if self.state != PeerState::Answered => {
                self.span.in_scope(|| debug!("ICE disconnected"));
                self.rtc.disconnect();
            }
            Event::KeyframeRequest(request) => {
                self.span.in_scope(|| debug!(kind = ?request.kind, "keyframe requested"));
                self.wants_keyframe = true;
            }
            Event::EgressBitrateEstimate(BweKind::Remb { estimate, .. }) => {
                self.link = Some(LinkReport::Estimate(estimate.as_u64()));
            }
            Event::MediaEgressStats(stats) if !matches!(self.link, Some(LinkReport::Estimate(_))) => {
                if let Some(lost) = stats.loss {
                    self.link = Some(LinkReport::Loss(lost));
                }
            }
            _ => {}
        }
    }

    /// Starts closing the session: the next [`Peer::poll`] sends RTCP BYE and a DTLS close
    /// alert, which tell the viewer at once.
    pub(crate) fn close(&mut self) {
        self.contained(|peer| {
            if let Err(error) = peer.rtc.close() {
                peer.span.in_scope(|| debug!(%error, "no clean close; disconnecting"));
                peer.rtc.disconnect();
            }
        });
    }

    /// Ends the session now, without waiting for anything still to be sent.
    pub(crate) fn abort(&mut self) {
        self.contained(|peer| peer.rtc.disconnect());
    }
}

/// A random first sequence number, as RTP asks (RFC 3550), below 2^15 so that it cannot
/// wrap before the viewer has learnt it.
fn first_sequence_number() -> u64 {
    let mut bytes = [0u8; 2];
    // Without randomness the sequence still works; it is only less unpredictable.
    let _ = getrandom::fill(&mut bytes);
    u64::from(u16::from_le_bytes(bytes) & 0x7fff)
}

/// The payload type to send H.264 with, preferring constrained baseline (what OpenH264
/// produces) with packetization-mode 1.
fn h264_payload_type(rtc: &Rtc, mid: Mid) -> Option<Pt> {
    let negotiated = rtc.media(mid)?.remote_pts().to_vec();
    let candidates = rtc.codec_config().params().iter().filter(|params| {
        let spec = params.spec();
        negotiated.contains(&params.pt()) && spec.codec == Codec::H264 && spec.format.packetization_mode == Some(1)
    });
    let rank = |profile: Option<u32>| match profile.map(|p| p >> 8) {
        Some(0x42e0) => 0,
        Some(0x4200) => 1,
        _ => 2,
    };
    candidates.min_by_key(|params| rank(params.spec().format.profile_level_id)).map(|params| params.pt())
}

/// A peer connected to a viewer's str0m session through memory, for the tests of this
/// module and of the driver.
#[cfg(test)]
pub(super) mod testing {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::net::{Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use str0m::media::{Direction, MediaData, MediaKind};
    use str0m::net::{Protocol, Receive, Transmit};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    use super::{LinkReport, Peer, PeerConfig, PeerId};
    use crate::rtc::SessionId;

    const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 5000);

    pub(crate) fn receive(now: Instant, transmit: &Transmit) -> Input<'_> {
        let contents = transmit.contents[..].try_into().unwrap();
        Input::Receive(
            now,
            Receive { proto: Protocol::Udp, source: transmit.source, destination: transmit.destination, contents },
        )
    }

    /// Everything `viewer` has to output now, up to its next timeout.
    pub(crate) fn outputs(viewer: &mut Rtc) -> Vec<Output> {
        std::iter::from_fn(|| match viewer.poll_output().unwrap() {
            Output::Timeout(_) => None,
            other => Some(other),
        })
        .collect()
    }

    /// Delivers `sent` to the viewer and returns the frames it reassembled.
    pub(crate) fn deliver(viewer: &mut Rtc, sent: &[Transmit], now: Instant) -> Vec<MediaData> {
        sent.iter().for_each(|transmit| viewer.handle_input(receive(now, transmit)).unwrap());
        outputs(viewer)
            .into_iter()
            .filter_map(|output| match output {
                Output::Event(Event::MediaData(data)) => Some(data),
                _ => None,
            })
            .collect()
    }

    /// Tells the peer its viewer's link carries this, as its estimator or viewer would.
    pub(crate) fn report_link(peer: &mut Peer, report: LinkReport) {
        peer.link = Some(report);
    }

    /// A viewer's str0m session and a peer answering it, connected through memory with a
    /// simulated clock; returns them and the clock.
    pub(crate) fn connected_pair() -> (Rtc, Peer, Instant) {
        connected_viewer(1, 6000, Instant::now())
    }

    /// A viewer at localhost:`port` and peer `id` answering it, connected through memory
    /// with a simulated clock started at `start`; returns them and the clock.
    pub(crate) fn connected_viewer(id: PeerId, port: u16, start: Instant) -> (Rtc, Peer, Instant) {
        connect(id, port, start, false)
    }

    /// As [`connected_viewer`], of an adaptive stream: the peer gathers what is known of
    /// the viewer's link.
    pub(crate) fn connected_adaptive_viewer(id: PeerId, port: u16, start: Instant) -> (Rtc, Peer, Instant) {
        connect(id, port, start, true)
    }

    fn connect(id: PeerId, port: u16, start: Instant, adaptive: bool) -> (Rtc, Peer, Instant) {
        let mut now = start;
        let mut viewer = Rtc::builder().clear_codecs().enable_h264(true).build(now);
        let address = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        viewer.add_local_candidate(Candidate::host(address, Protocol::Udp).unwrap());
        let mut change = viewer.sdp_api();
        change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = change.apply().unwrap();
        let dtls_cert = str0m::crypto::from_feature_flags().dtls_provider.generate_certificate().unwrap();
        let config =
            PeerConfig { host_addrs: vec![SERVER], public_addrs: vec![], tcp_addrs: vec![], dtls_cert, adaptive };
        let session = SessionId(format!("test-{id}"));
        let (mut peer, answer) = Peer::from_offer(id, session, offer, &config, now).unwrap();
        viewer.sdp_api().accept_answer(pending, answer).unwrap();

        for _ in 0..200 {
            let mut to_viewer = Vec::new();
            peer.poll(|transmit| to_viewer.push(transmit)).unwrap();
            let mut to_peer = Vec::new();
            while let Output::Transmit(transmit) = viewer.poll_output().unwrap() {
                to_peer.push(transmit);
            }
            to_viewer.iter().for_each(|transmit| viewer.handle_input(receive(now, transmit)).unwrap());
            to_peer.iter().for_each(|transmit| peer.handle_datagram(receive(now, transmit)));
            if peer.state.is_connected() && to_viewer.is_empty() && to_peer.is_empty() {
                return (viewer, peer, now);
            }
            now += Duration::from_millis(20);
            viewer.handle_input(Input::Timeout(now)).unwrap();
            peer.handle_timeout(now);
        }
        panic!("the pair never connected");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use str0m::media::{MediaData, MediaTime};
    use webgear_media::encode::EncodedFrame;

    use super::testing::{connected_pair, deliver};
    use super::*;
    use crate::rtc::rtp_frame::FramePacketizer;

    /// A frame of the stream at `time` (90 kHz), captured `now`.
    fn stream_frame(data: Vec<u8>, keyframe: bool, time: u64, now: Instant) -> StreamFrame {
        let encoded = EncodedFrame { data: Arc::from(data), keyframe, width: 16, height: 16, captured_at: now };
        StreamFrame {
            encoded,
            rtp_time: MediaTime::from_90khz(time),
            clock_epoch: 0,
            keyframes_on_request: true,
            last: false,
            pauses_unwatched: false,
            rung: 0,
            ends_capture: true,
            published_at: now,
        }
    }

    #[test]
    fn a_frame_goes_out_in_the_poll_after_it_is_written_and_the_viewer_gets_it_whole() {
        let (mut viewer, mut peer, now) = connected_pair();
        // An IDR slice of 5000 bytes: several packets.
        let mut data = vec![0, 0, 0, 1, 0x65];
        data.extend((0..5000u32).map(|i| (i % 251) as u8 | 1));
        let frame = stream_frame(data, true, 3000, now);
        let rtp = FramePacketizer::new().packetize(&frame).unwrap();
        assert!(rtp.payloads.len() > 2);

        let metrics = Metrics::default();
        peer.send_frame(&rtp, &metrics, now);
        let mut sent = Vec::new();
        peer.poll(|transmit| sent.push(transmit)).unwrap();
        assert!(
            sent.len() >= rtp.payloads.len(),
            "{} datagrams sent for a frame of {} packets",
            sent.len(),
            rtp.payloads.len()
        );

        let received = deliver(&mut viewer, &sent, now).pop().expect("the viewer reassembled the frame");
        assert_eq!(received.data.len(), frame.encoded.data.len());
        assert_eq!(received.data[..], frame.encoded.data[..]);
        assert_eq!(received.time.rebase(Frequency::NINETY_KHZ).numer(), 3000);
    }

    #[test]
    fn a_session_that_panics_is_dead_to_its_driver_and_never_touched_again() {
        let (viewer_session, mut peer, now) = connected_pair();
        drop(viewer_session);
        assert!(peer.poll(|_| {}).is_some(), "alive before");
        let touched = std::cell::Cell::new(0);
        assert!(peer.contained(|_| panic!("a bug a viewer's packets found")).is_none());
        assert!(peer.contained(|_| touched.set(touched.get() + 1)).is_none());
        assert_eq!(touched.get(), 0, "a broken session is not run again");

        // Every entry point the driver uses returns quietly, and polling says it is dead.
        let rtp = FramePacketizer::new().packetize(&stream_frame(vec![0, 0, 0, 1, 0x65, 1], true, 3000, now)).unwrap();
        peer.send_frame(&rtp, &Metrics::default(), now);
        peer.handle_timeout(now);
        peer.close();
        peer.abort();
        assert!(!peer.accepts(&Input::Timeout(now)));
        assert!(peer.poll(|_| panic!("a dead peer sends nothing")).is_none());
    }

    /// A keyframe and the frames since, `count` in all, a frame (3000 at 90 kHz) apart from
    /// 3000 on.
    fn keyframe_and_frames_since(packetizer: &mut FramePacketizer, count: u8, now: Instant) -> Vec<RtpFrame> {
        (0..count)
            .map(|n| {
                let data = vec![0, 0, 0, 1, if n == 0 { 0x65 } else { 0x41 }, n + 1];
                packetizer.packetize(&stream_frame(data, n == 0, 3000 * u64::from(n + 1), now)).unwrap()
            })
            .collect()
    }

    fn rtp_times(frames: &[MediaData]) -> Vec<u64> {
        frames.iter().map(|frame| frame.time.rebase(Frequency::NINETY_KHZ).numer()).collect()
    }

    #[test]
    fn a_joiner_gets_the_frames_since_the_keyframe_stamped_close_together_then_live_ones() {
        let (mut viewer, mut peer, now) = connected_pair();
        let mut packetizer = FramePacketizer::new();
        let recent = keyframe_and_frames_since(&mut packetizer, 4, now);
        let metrics = Metrics::default();
        let mut sent = Vec::new();
        assert!(peer.start_from(&recent, &metrics, now, |transmit| sent.push(transmit)));
        // 1 ms apart, ending at the newest frame's own time: the viewer shows it at once
        // rather than playing the others out first.
        assert_eq!(rtp_times(&deliver(&mut viewer, &sent, now)), [11_730, 11_820, 11_910, 12_000]);

        // Then the stream goes on at its own times.
        let live = packetizer.packetize(&stream_frame(vec![0, 0, 0, 1, 0x41, 9], false, 15_000, now)).unwrap();
        assert!(peer.send_frame(&live, &metrics, now));
        let mut sent = Vec::new();
        peer.poll(|transmit| sent.push(transmit)).unwrap();
        assert_eq!(rtp_times(&deliver(&mut viewer, &sent, now)), [15_000]);
    }

    #[test]
    fn a_viewer_that_started_before_the_stream_clock_restarted_goes_on_forward_in_time() {
        let (mut viewer, mut peer, now) = connected_pair();
        let mut packetizer = FramePacketizer::new();
        let metrics = Metrics::default();
        let recent = keyframe_and_frames_since(&mut packetizer, 4, now);
        let mut sent = Vec::new();
        assert!(peer.start_from(&recent, &metrics, now, |transmit| sent.push(transmit)));
        assert_eq!(rtp_times(&deliver(&mut viewer, &sent, now)).last(), Some(&12_000));

        // The clock restarted (WebGear_RTC's reset) after those frames were kept: the
        // stream's next frames are stamped from zero, 100 ms after the last one sent.
        let mut sent = Vec::new();
        for (n, time) in [(1u8, 0u64), (2, 3000)] {
            let mut frame = stream_frame(vec![0, 0, 0, 1, 0x41, n], false, time, now);
            frame.clock_epoch = 1;
            let at = now + Duration::from_millis(100) + Duration::from_millis(33) * u32::from(n - 1);
            assert!(peer.send_frame(&packetizer.packetize(&frame).unwrap(), &metrics, at));
            peer.poll(|transmit| sent.push(transmit)).unwrap();
        }
        // 9000 ticks (100 ms) after the last, then a frame later.
        assert_eq!(rtp_times(&deliver(&mut viewer, &sent, now)), [21_000, 24_000]);
    }

    #[test]
    fn a_viewer_that_lost_data_gets_the_frames_since_the_keyframe_again_just_after_the_last() {
        let (mut viewer, mut peer, now) = connected_pair();
        let metrics = Metrics::default();
        let recent = keyframe_and_frames_since(&mut FramePacketizer::new(), 5, now);
        assert!(!peer.replay(&recent, &metrics, now, |_| {}), "nothing sent yet: a joiner starts instead");
        let mut sent = Vec::new();
        assert!(peer.start_from(&recent, &metrics, now, |transmit| sent.push(transmit)));
        assert_eq!(deliver(&mut viewer, &sent, now).len(), 5);

        let mut sent = Vec::new();
        assert!(peer.replay(&recent, &metrics, now, |transmit| sent.push(transmit)));
        // One tick apart after the last frame sent (15000), long before the next (18000).
        assert_eq!(rtp_times(&deliver(&mut viewer, &sent, now)), [15_001, 15_002, 15_003, 15_004, 15_005]);
        let later = now + REPLAY_INTERVAL / 2;
        assert!(!peer.replay(&recent, &metrics, later, |_| {}), "a burst at most once per interval");
        assert!(peer.replay(&recent, &metrics, now + REPLAY_INTERVAL, |_| {}));
    }
}
