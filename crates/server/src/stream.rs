//! A stream: one capture thread that reads the source, applies the transforms, encodes
//! once, and publishes each encoded frame to every subscriber (the peer driver).
//!
//! A source that already delivers H.264 and needs no transform ([`OpenedSource::H264`]: an
//! RTSP camera, a suitable file or network stream) is passed through: its access units
//! are published as they are and no encoder runs, except to draw "The End" or "No Input"
//! when the source is gone. A live stream plays decoded and encoded while its H.264 is
//! checked ([`OpenedSource::FramesUntilH264`]), then passes through from a keyframe on.
//!
//! The stream clock is the capture time: a frame's RTP timestamp is the time since the
//! stream started, at 90 kHz, so pauses and dropped frames never make the clock drift.
//! When the source ends, the stream sends one "The End" frame, marked as its last (the
//! peer drivers keep it for viewers who come later), and ends; in infinite mode it streams
//! "No Input" frames instead, until it is stopped.
//! Keyframes are produced on request ([`EncoderRequests`]), coalesced so that a burst of
//! joins or PLIs costs one keyframe.
//!
//! The stream is encoded at each rung of its [`Ladder`] that a viewer is on (or moving to):
//! the full-size picture, then the same picture scaled down for each lower rung, each by an
//! encoder of its own and published as a frame of that rung with the same capture time.
//! H.264 passed through is the top rung as it is; it is decoded once for the lower rungs,
//! and only while someone is on one.
//!
//! A source that waits for its reader (a file, numbered images, the test pattern, a custom
//! stream) is read only while someone watches, as in WebGear_RTC, which reads its source
//! as viewers pull frames: a file plays from its start for whoever comes first, pauses
//! when the last viewer leaves, and goes on from there for the next one. The stream clock
//! stops with it, so the stream's timeline has no gap. A live source is read all along (it
//! stays live) and its frames, while nobody watches, are neither transformed nor encoded:
//! an idle server costs what its source costs. The first frame encoded once a viewer is
//! admitted again is a keyframe.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use str0m::media::MediaTime;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};
use webgear_media::decode::H264Decoder;
use webgear_media::encode::{EncodedFrame, EncoderError, H264Encoder, H264EncoderConfig};
use webgear_media::frame::I420Frame;
use webgear_media::source::connections::LiveConnections;
use webgear_media::source::ffmpeg_h264::PendingH264;
use webgear_media::source::open::OpenedSource;
use webgear_media::source::{EncodedSource, FrameSource, SourceError};
use webgear_media::transform::stabilize::Stabilizer;
use webgear_media::transform::{
    FrameScaler, FrameSizeReducer, NO_INPUT, THE_END, blank_frame, halve, halved_size, make_grayscale, scaled_size,
};

use crate::ladder::{Ladder, Rung};
use crate::stats::Metrics;

/// Encoded frames a subscriber may be behind the stream by before it misses some: room for
/// a source that sends a whole group of pictures at once (a restreamer's "GOP cache", as
/// it sends on connecting: up to 10 s at 30 fps), which would otherwise be lost but for its
/// last second. Each is held only until every subscriber has taken it. How late a
/// subscriber may be is bounded by time, not by this: see [`StreamFrame::published_at`].
pub(crate) const FANOUT_CAPACITY: usize = 300;

/// The first wait before reopening a source that is gone; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The size of blank frames when the source ended before producing any frame.
const BLANK_SIZE: (u32, u32) = (640, 360);

/// How often a stream whose source waits for a viewer looks for one.
const VIEWER_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Keyframes forced on request are at least this far apart; requests in between are
/// served by the next one.
const MIN_KEYFRAME_INTERVAL: Duration = Duration::from_millis(250);

/// One encoded frame as the peers send it.
#[derive(Debug, Clone)]
pub(crate) struct StreamFrame {
    pub(crate) encoded: EncodedFrame,
    /// Capture time since the stream clock started, at 90 kHz.
    pub(crate) rtp_time: MediaTime,
    /// How many times the stream clock had been restarted ([`StreamClock::reset`]) when
    /// this frame was stamped: frames of different restarts are on different timelines.
    pub(crate) clock_epoch: u32,
    /// Whether the stream's encoder made this frame, and so makes a keyframe soon when a
    /// viewer asks for one. A source's H.264 passed through has keyframes only when the
    /// source makes them.
    pub(crate) keyframes_on_request: bool,
    /// The stream's last frame ("The End"), after which nothing comes.
    pub(crate) last: bool,
    /// The stream pauses while nobody watches (its source waits for its reader): what it
    /// showed last is still where it is when the next viewer comes.
    pub(crate) pauses_unwatched: bool,
    /// The rung of the stream's ladder it belongs to (0: the full-size one).
    pub(crate) rung: usize,
    /// The last of its capture's renditions (one per rung watched, published together):
    /// the fan-out sends each viewer the one of its rung, and moves a viewer to another
    /// rung where that rung's rendition is a keyframe, never showing one capture twice.
    pub(crate) ends_capture: bool,
    /// When the stream handed it to its subscribers. One taking it much later has fallen
    /// behind the stream, and goes on from the present instead of sending it late.
    pub(crate) published_at: Instant,
}

/// What one rung's viewers ask of its encoder.
#[derive(Debug, Default)]
struct RungRequests {
    /// Viewers on the rung or moving to it, over every peer driver.
    watchers: AtomicUsize,
    /// A keyframe is wanted; requests are coalesced.
    keyframe: AtomicBool,
}

/// What the viewers ask of the stream's encoders: which rungs of the ladder to encode
/// (those someone is on or moving to) and keyframes. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct EncoderRequests {
    ladder: Arc<Ladder>,
    rungs: Arc<[RungRequests]>,
    metrics: Arc<Metrics>,
}

impl EncoderRequests {
    /// Requests for a new stream's encoders, none pending and no rung watched.
    pub(crate) fn new(ladder: Ladder, metrics: Arc<Metrics>) -> Self {
        let rungs = ladder.rungs().iter().map(|_| RungRequests::default()).collect();
        EncoderRequests { ladder: Arc::new(ladder), rungs, metrics }
    }

    /// The ladder the stream is encoded at.
    pub(crate) fn ladder(&self) -> &Ladder {
        &self.ladder
    }

    /// Asks for a keyframe on `rung`.
    pub(crate) fn request_keyframe(&self, rung: usize) {
        if let Some(requests) = self.rungs.get(rung) {
            self.metrics.keyframe_requests.inc();
            requests.keyframe.store(true, Ordering::Relaxed);
        }
    }

    /// One viewer more (`joined`) or fewer on `rung`.
    pub(crate) fn watch(&self, rung: usize, joined: bool) {
        let Some(requests) = self.rungs.get(rung) else {
            return;
        };
        if joined {
            requests.watchers.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never below zero, whatever the order of events.
            let _ = requests.watchers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Whether `rung` is to be encoded: someone is on it; the top rung also while viewers
    /// are admitted but none is on a rung yet.
    fn wanted(&self, rung: usize) -> bool {
        let watchers = |rung: usize| self.rungs.get(rung).map_or(0, |r| r.watchers.load(Ordering::Relaxed));
        watchers(rung) > 0 || (rung == 0 && (0..self.rungs.len()).all(|rung| watchers(rung) == 0))
    }

    /// Takes (clears) a pending keyframe request for `rung`.
    fn take_keyframe_request(&self, rung: usize) -> bool {
        self.rungs.get(rung).is_some_and(|requests| requests.keyframe.swap(false, Ordering::Relaxed))
    }

    /// Forgets the requests made until now: a keyframe was just made.
    fn clear_keyframe_request(&self, rung: usize) {
        if let Some(requests) = self.rungs.get(rung) {
            requests.keyframe.store(false, Ordering::Relaxed);
        }
    }
}

/// Why a stream could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The encoder could not be created.
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    /// A thread of the stream (capturing, or opening the source) could not be started.
    #[error("could not start a thread for the stream: {0}")]
    Thread(#[source] std::io::Error),
}

/// Opens the stream's source again after it ended or failed: network streams reconnect.
pub(crate) type Reopen = Arc<dyn Fn() -> Result<OpenedSource, SourceError> + Send + Sync>;

/// An opening of the source under way on a thread of its own: its result, once it has one.
pub(crate) type PendingOpen = mpsc::Receiver<Result<OpenedSource, SourceError>>;

/// Opens the source on a thread of its own, so that a source slow to open (a live stream
/// whose sender has not started) holds up nobody.
pub(crate) fn open_in_background(open: Reopen) -> std::io::Result<PendingOpen> {
    let (done, result) = mpsc::channel();
    thread::Builder::new().name("webgear-open".into()).spawn(move || {
        // Nobody listening means the stream stopped meanwhile.
        let _ = done.send(open());
    })?;
    Ok(result)
}

/// What a stream starts with.
pub(crate) enum StreamStart {
    /// The source, opened.
    Playing(OpenedSource),
    /// In infinite mode, a source still opening: "No Input" plays until it has opened, or
    /// failed and is opened again.
    Opening(PendingOpen),
    /// In infinite mode, a source that could not be opened: "No Input" plays while it is
    /// opened again.
    Gone,
}

/// How a stream treats its frames, beyond the size reduction.
#[derive(Clone, Default)]
pub(crate) struct StreamSettings {
    /// Keep streaming "No Input" frames after the source is gone.
    pub(crate) infinite: bool,
    /// Drop the colour of every frame.
    pub(crate) grayscale: bool,
    /// Steady the picture, averaging the camera's path over this many frames.
    pub(crate) stabilize: Option<u32>,
    /// Wait this long before streaming the source (vidgear's `time_delay`). A live source is
    /// read meanwhile and what it sends dropped, so that the stream starts live.
    pub(crate) start_delay: Duration,
    /// The rungs to encode at.
    pub(crate) ladder: Ladder,
    /// In infinite mode, how to get the source back once it is gone.
    pub(crate) reopen: Option<Reopen>,
    /// The live streams the source connects to (through its settings), closed when the
    /// stream stops.
    pub(crate) connections: LiveConnections,
}

impl std::fmt::Debug for StreamSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSettings")
            .field("infinite", &self.infinite)
            .field("grayscale", &self.grayscale)
            .field("stabilize", &self.stabilize)
            .field("start_delay", &self.start_delay)
            .field("ladder", &self.ladder)
            .field("reopens", &self.reopen.is_some())
            .field("connections", &self.connections)
            .finish()
    }
}

/// Restarts the stream clock: the next frame's RTP timestamp is zero again. A viewer whose
/// frames came from before goes on along its own timeline (see `rtc::peer`).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamClock {
    reset_requested: Arc<AtomicBool>,
}

impl StreamClock {
    pub(crate) fn reset(&self) {
        self.reset_requested.store(true, Ordering::Relaxed);
    }
}

/// The stream clock, as the capture thread keeps it: frames are stamped with their
/// capture time since it started, at 90 kHz, and each later than the last. Capture times
/// do not always go forward: a camera's frames are timed by its own clock (kept near
/// ours, but ahead of it when they come in a burst), and a frame the server draws ("The
/// End", "No Input") by ours; a player would take a frame stamped before the last for a
/// late one.
#[derive(Debug)]
struct RtpClock {
    start: Instant,
    /// How many times the clock has been restarted.
    epoch: u32,
    /// The last capture stamped since the last restart, and its time in 90 kHz ticks.
    last: Option<(Instant, u64)>,
}

impl RtpClock {
    fn new(start: Instant) -> Self {
        RtpClock { start, epoch: 0, last: None }
    }

    /// Starts again from zero `now` (WebGear_RTC's reset).
    fn restart(&mut self, now: Instant) {
        *self = RtpClock { start: now, epoch: self.epoch.wrapping_add(1), last: None };
    }

    /// Leaves out a pause of `paused`: the frames after it go on from the ones before.
    fn stop_for(&mut self, paused: Duration) {
        self.start += paused;
    }

    /// The RTP time of a frame captured `captured_at`: a tick after the last one stamped
    /// if it was captured no later, unless it is the same capture (at another rung).
    fn stamp(&mut self, captured_at: Instant) -> MediaTime {
        let ticks = match self.last {
            Some((last_capture, last)) if last_capture == captured_at => last,
            Some((_, last)) => rtp_ticks(captured_at.saturating_duration_since(self.start)).max(last + 1),
            None => rtp_ticks(captured_at.saturating_duration_since(self.start)),
        };
        self.last = Some((captured_at, ticks));
        MediaTime::from_90khz(ticks)
    }
}

/// `duration` in ticks of the RTP video clock (90 kHz).
pub(crate) fn rtp_ticks(duration: Duration) -> u64 {
    (duration.as_micros() * 9 / 100) as u64
}

/// A running stream. Dropping it stops the capture thread and waits for it.
#[derive(Debug)]
pub(crate) struct VideoStream {
    frames: broadcast::Sender<StreamFrame>,
    requests: EncoderRequests,
    clock: StreamClock,
    stop: Arc<AtomicBool>,
    connections: LiveConnections,
    thread: Option<JoinHandle<()>>,
}

impl VideoStream {
    /// Starts the capture thread. Raw frames need an encoder: `start` fails if it cannot
    /// be created.
    pub(crate) fn start(
        start: StreamStart,
        reducer: FrameSizeReducer,
        settings: StreamSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StreamError> {
        let input_rate = match &start {
            StreamStart::Playing(input) => input.frame_rate(),
            StreamStart::Opening(_) | StreamStart::Gone => None,
        };
        let frame_rate = input_rate.filter(|rate| *rate >= 1.0).unwrap_or(30.0);
        let mut encoders: Vec<RungEncoder> =
            settings.ladder.rungs().iter().map(|&rung| RungEncoder::new(rung, frame_rate as f32)).collect();
        // Counted from here, so the encoder is visible as soon as `start` returns, and until
        // the thread ends however it ends (or fails to start). "No Input" frames and lower
        // rungs start theirs when they need one.
        if let StreamStart::Playing(OpenedSource::Frames(_) | OpenedSource::FramesUntilH264(..)) = start {
            encoders[0].running(&metrics)?;
        }
        let (frames, _) = broadcast::channel(FANOUT_CAPACITY);
        let requests = EncoderRequests::new(settings.ladder.clone(), metrics.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let connections = settings.connections.clone();
        let clock = StreamClock::default();
        let mut capture = Capture {
            reducer,
            stabilizer: settings.stabilize.map(Stabilizer::new),
            settings,
            // Until a source starts (only a camera or a network stream is waited for).
            live: true,
            frame_interval: Duration::from_secs_f64(1.0 / frame_rate),
            rtp_clock: RtpClock::new(Instant::now()),
            frames: frames.clone(),
            requests: requests.clone(),
            clock: clock.clone(),
            stop: stop.clone(),
            metrics,
            encoders,
            scaler: FrameScaler::default(),
            decoder: None,
            idle: false,
            dropping_until: None,
            ended: false,
        };
        let thread = thread::Builder::new()
            .name("webgear-capture".into())
            .spawn(move || capture.run(start))
            .map_err(StreamError::Thread)?;
        Ok(VideoStream { frames, requests, clock, stop, connections, thread: Some(thread) })
    }

    /// A new receiver of every frame encoded from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StreamFrame> {
        self.frames.subscribe()
    }

    pub(crate) fn encoder_requests(&self) -> EncoderRequests {
        self.requests.clone()
    }

    pub(crate) fn clock(&self) -> StreamClock {
        self.clock.clone()
    }

    /// Stops the capture thread and waits for it to finish its current frame.
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // A live stream still being opened (its sender not there yet) or stalled would
        // otherwise keep its ffmpeg, and maybe the capture thread, waiting.
        self.connections.close_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the capture thread panicked");
        }
    }
}

impl Drop for VideoStream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An encoder, counted in the metrics for as long as it lives.
struct RunningEncoder {
    encoder: H264Encoder,
    metrics: Arc<Metrics>,
}

impl RunningEncoder {
    fn new(config: H264EncoderConfig, metrics: &Arc<Metrics>) -> Result<Self, EncoderError> {
        let encoder = H264Encoder::new(config)?;
        metrics.encoders_running.inc();
        Ok(RunningEncoder { encoder, metrics: metrics.clone() })
    }
}

impl Drop for RunningEncoder {
    fn drop(&mut self) {
        self.metrics.encoders_running.dec();
    }
}

/// One rung's encoder, as the capture thread keeps it.
struct RungEncoder {
    rung: Rung,
    config: H264EncoderConfig,
    /// The full-size rung's is created at start for raw frames, and dropped for H.264
    /// passed through but while blank frames stand in for a source that is gone. A lower
    /// rung's runs only while someone is on the rung.
    encoder: Option<RunningEncoder>,
    last_keyframe: Option<Instant>,
    /// The last picture was not encoded at this rung: the next one must be a keyframe.
    resting: bool,
}

impl RungEncoder {
    fn new(rung: Rung, frame_rate: f32) -> Self {
        let config = H264EncoderConfig { bitrate_bps: rung.bitrate, frame_rate };
        RungEncoder { rung, config, encoder: None, last_keyframe: None, resting: true }
    }

    /// The encoder, started if none runs.
    fn running(&mut self, metrics: &Arc<Metrics>) -> Result<&mut H264Encoder, EncoderError> {
        let encoder = match self.encoder.take() {
            Some(encoder) => encoder,
            None => RunningEncoder::new(self.config, metrics)?,
        };
        Ok(&mut self.encoder.insert(encoder).encoder)
    }
}

/// The capture thread's state.
struct Capture {
    reducer: FrameSizeReducer,
    stabilizer: Option<Stabilizer>,
    settings: StreamSettings,
    /// Whether the source being read goes on whether read or not ([`FrameSource::is_live`]),
    /// as the last input to start said.
    live: bool,
    frame_interval: Duration,
    rtp_clock: RtpClock,
    frames: broadcast::Sender<StreamFrame>,
    requests: EncoderRequests,
    clock: StreamClock,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// One per rung of the ladder, the full-size one first.
    encoders: Vec<RungEncoder>,
    /// Scales the full-size picture down for lower rungs that are not half the one above.
    scaler: FrameScaler,
    /// Decodes H.264 passed through, while someone is on a lower rung.
    decoder: Option<H264Decoder>,
    /// Whether the last frame read was left unencoded because nobody watched, or the
    /// source was left unread until a viewer came.
    idle: bool,
    /// The end of a live source's start delay, until which what it sends is dropped.
    dropping_until: Option<Instant>,
    /// Set once the source has ended for good: the frame published next is the last.
    ended: bool,
}

impl Capture {
    /// Plays the source, then (in infinite mode) "No Input" until the source is back, and
    /// so on; a stream starting without its source starts with "No Input".
    fn run(&mut self, start: StreamStart) {
        let (mut input, mut opening) = match start {
            StreamStart::Playing(input) => (Some(input), None),
            StreamStart::Opening(pending) => (None, Some(pending)),
            StreamStart::Gone => (None, None),
        };
        if !self.settings.start_delay.is_zero() {
            let start_at = Instant::now() + self.settings.start_delay;
            if input.as_ref().is_some_and(OpenedSource::is_live) {
                // Left unread, a live source would queue what it sends meanwhile (or
                // overflow) and start seconds late, racing through the backlog.
                debug!(delay = ?self.settings.start_delay, "dropping the live source's frames before the start");
                self.dropping_until = Some(start_at);
            } else {
                debug!(delay = ?self.settings.start_delay, "waiting before reading the source");
                // In small steps, so stopping the stream does not wait for the whole delay.
                while !self.stopping() && Instant::now() < start_at {
                    thread::sleep(start_at.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
                }
            }
        }
        let mut last_size = None;
        loop {
            if let Some(mut playing) = input.take() {
                self.live = playing.is_live();
                let played = match &mut playing {
                    OpenedSource::Frames(source) => self.play_frames(source.as_mut(), None, &mut last_size),
                    OpenedSource::FramesUntilH264(source, h264) => {
                        self.play_frames(source.as_mut(), Some(h264), &mut last_size)
                    }
                    OpenedSource::H264(source) => {
                        self.pass_through(source.as_mut(), &mut last_size);
                        Ok(None)
                    }
                };
                let played = match played {
                    Ok(Some(h264)) => {
                        // Only the decoding goes: stopping the source would end the live
                        // stream the H.264 comes from.
                        drop(playing);
                        info!("passing the source's H.264 through from its next keyframe: no encoder runs");
                        self.encoders[0].encoder = None;
                        input = Some(OpenedSource::H264(h264));
                        continue;
                    }
                    Ok(None) => Ok(()),
                    Err(error) => Err(error),
                };
                playing.stop();
                if let Err(error) = played {
                    warn!(%error, "stopping the stream");
                    return;
                }
                if self.stopping() {
                    return;
                }
                if !self.settings.infinite {
                    let (width, height) = last_size.unwrap_or(BLANK_SIZE);
                    let picture = blank_frame(width, height, THE_END, Instant::now());
                    self.ended = true;
                    if let Err(error) = self.publish_picture(&picture, true) {
                        warn!(%error, "could not send the last frame");
                    }
                    return;
                }
            }
            let (width, height) = last_size.unwrap_or(BLANK_SIZE);
            match self.no_input_until_reopened(width, height, opening.take()) {
                Ok(Some(reopened)) => {
                    if matches!(reopened, OpenedSource::H264(_)) {
                        // Passed through again: the blank frames' encoder is not needed.
                        self.encoders[0].encoder = None;
                    }
                    input = Some(reopened);
                }
                Ok(None) => return,
                Err(error) => {
                    warn!(%error, "stopping the stream");
                    return;
                }
            }
        }
    }

    /// Before each read of a source that waits for its reader (a file, numbered images,
    /// the test pattern, a custom stream): while nobody watches, waits for a viewer to be
    /// admitted (or the stream to stop) without reading it, so that a file is not played
    /// for nobody. The stream clock is moved on by the wait: the timeline goes on from
    /// where it stopped, as the source does.
    fn pause_while_unwatched(&mut self) {
        if self.live || self.metrics.viewers.get() > 0 {
            return;
        }
        debug!("nobody watches: the source waits for a viewer");
        let paused_at = Instant::now();
        while !self.stopping() && self.metrics.viewers.get() == 0 {
            thread::sleep(VIEWER_CHECK_INTERVAL);
        }
        self.rtp_clock.stop_for(paused_at.elapsed());
        // Whoever comes starts from a keyframe, and the stabilizer's path does not span
        // the pause (see `watched`).
        self.idle = true;
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether a live source's start delay still runs.
    fn dropping(&self) -> bool {
        self.dropping_until.is_some_and(|until| Instant::now() < until)
    }

    /// What a source's `read` gave: the next item, or `None` once the source ended or
    /// failed (logged, as either hands over to "The End" or "No Input"). A live source
    /// fails when the stream stops, which closes its connection: that is no failure.
    fn until_gone<T>(&self, read: Result<Option<T>, SourceError>) -> Option<T> {
        match read {
            Ok(Some(item)) => return Some(item),
            Ok(None) if !self.stopping() => info!("the source ended"),
            Err(error) if !self.stopping() => warn!(%error, "the source failed"),
            Ok(None) => debug!("the source closed as the stream stopped"),
            Err(error) => debug!(%error, "the source closed as the stream stopped"),
        }
        None
    }

    /// Streams the source's frames until it ends or fails (`Ok(None)`), the stream stops
    /// (`Ok(None)`), the encoder fails (`Err`), or the source's H.264, checked meanwhile
    /// (`h264`), is ready to be passed through instead (`Ok(Some)`).
    fn play_frames(
        &mut self,
        source: &mut dyn FrameSource,
        h264: Option<&PendingH264>,
        last_size: &mut Option<(u32, u32)>,
    ) -> Result<Option<Box<dyn EncodedSource>>, EncoderError> {
        if self.until_gone(source.prepare().map(Some)).is_none() {
            return Ok(None);
        }
        while !self.stopping() {
            if let Some(ready) = h264.and_then(PendingH264::ready) {
                return Ok(Some(ready));
            }
            self.pause_while_unwatched();
            let Some(frame) = self.until_gone(source.read()) else {
                return Ok(None);
            };
            if self.dropping() || !self.watched() {
                continue;
            }
            let started = Instant::now();
            let mut picture = self.reducer.apply(frame.into_i420());
            if let Some(stabilizer) = &mut self.stabilizer {
                picture = stabilizer.apply(picture);
            }
            if self.settings.grayscale {
                make_grayscale(&mut picture);
            }
            *last_size = Some((picture.width(), picture.height()));
            self.publish_picture(&picture, false)?;
            Metrics::observe(&self.metrics.encode_seconds, started.elapsed());
        }
        Ok(None)
    }

    /// Publishes the source's H.264 as it is until the source ends or fails, or the stream
    /// stops. Access units before the first keyframe are dropped: nobody could decode them.
    /// Keyframe requests cannot reach the source; viewers that ask wait for its next one.
    fn pass_through(&mut self, source: &mut dyn EncodedSource, last_size: &mut Option<(u32, u32)>) {
        if self.until_gone(source.prepare().map(Some)).is_none() {
            return;
        }
        let mut seen_keyframe = false;
        while !self.stopping() {
            self.pause_while_unwatched();
            let Some(access_unit) = self.until_gone(source.read()) else {
                return;
            };
            if self.dropping() {
                continue;
            }
            seen_keyframe |= access_unit.keyframe;
            if !seen_keyframe {
                continue;
            }
            if access_unit.width > 0 && access_unit.height > 0 {
                *last_size = Some((access_unit.width, access_unit.height));
            }
            self.metrics.frames_passed_through.inc();
            let mut capture = vec![(access_unit.clone(), false, 0)];
            capture.extend(self.encode_decoded(&access_unit).into_iter().map(|(encoded, rung)| (encoded, true, rung)));
            self.publish_capture(capture);
        }
    }

    /// Decodes an access unit passed through and encodes it at the lower rungs someone is
    /// on. The decoder runs only while someone is; started anew, it waits for the source's
    /// next keyframe. A picture that fails is left out, logged.
    fn encode_decoded(&mut self, access_unit: &EncodedFrame) -> Vec<(EncodedFrame, usize)> {
        if !(1..self.encoders.len()).any(|rung| self.requests.wanted(rung)) {
            self.decoder = None;
            (1..self.encoders.len()).for_each(|rung| self.rest(rung));
            return Vec::new();
        }
        let decoder = match &mut self.decoder {
            Some(decoder) => decoder,
            None => match H264Decoder::new() {
                Ok(decoder) => self.decoder.insert(decoder),
                Err(error) => {
                    warn!(%error, "cannot decode the source for the lower rungs");
                    return Vec::new();
                }
            },
        };
        let picture = match decoder.decode(access_unit) {
            Ok(Some(frame)) => frame.into_i420(),
            Ok(None) => return Vec::new(),
            Err(error) => {
                debug!(%error, "a picture for the lower rungs could not be decoded");
                return Vec::new();
            }
        };
        self.encode_rungs(&picture, 1, false).unwrap_or_else(|error| {
            warn!(%error, "a picture for the lower rungs could not be encoded");
            Vec::new()
        })
    }

    /// Streams "No Input" frames at the source's pace while the source is gone. A source
    /// that can be opened again (a network stream) is retried in the background, waiting
    /// twice as long after each failure (`opening` is an attempt already under way); once
    /// it opens, it is returned and streaming resumes for every viewer. `Ok(None)` when the
    /// stream stops first.
    fn no_input_until_reopened(
        &mut self,
        width: u32,
        height: u32,
        opening: Option<PendingOpen>,
    ) -> Result<Option<OpenedSource>, EncoderError> {
        info!("streaming \"{NO_INPUT}\" frames while the source is gone");
        let mut backoff = FIRST_RETRY;
        let mut next_attempt = Instant::now() + backoff;
        let mut attempt = opening;
        let mut next_frame = Instant::now();
        while !self.stopping() {
            if let Some(pending) = &attempt {
                match pending.try_recv() {
                    Ok(Ok(source)) => {
                        info!("the source is back");
                        return Ok(Some(source));
                    }
                    Ok(Err(error)) => {
                        debug!(%error, retry_in = ?backoff, "the source is still gone");
                        attempt = None;
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_RETRY);
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => attempt = None,
                }
            } else if let Some(reopen) = self.settings.reopen.clone()
                && Instant::now() >= next_attempt
            {
                match open_in_background(reopen) {
                    Ok(pending) => attempt = Some(pending),
                    Err(error) => warn!(%error, "could not start a thread to reopen the source"),
                }
            }
            if self.watched() {
                let picture = blank_frame(width, height, NO_INPUT, Instant::now());
                self.publish_picture(&picture, false)?;
            }
            next_frame += self.frame_interval;
            thread::sleep(next_frame.saturating_duration_since(Instant::now()));
        }
        Ok(None)
    }

    /// Encodes one full-size picture at every rung someone is on and publishes it. The
    /// stream's last frame ("The End") goes out at the top rung whoever is on it, so that
    /// viewers coming later are shown it.
    fn publish_picture(&mut self, picture: &I420Frame, force_keyframe: bool) -> Result<(), EncoderError> {
        let encoded = self.encode_rungs(picture, 0, force_keyframe)?;
        self.publish_capture(encoded.into_iter().map(|(encoded, rung)| (encoded, true, rung)).collect());
        Ok(())
    }

    /// Encodes `picture` (full size) at the rungs from `first_rung` down that someone is
    /// on.
    fn encode_rungs(
        &mut self,
        picture: &I420Frame,
        first_rung: usize,
        force_keyframe: bool,
    ) -> Result<Vec<(EncodedFrame, usize)>, EncoderError> {
        let mut encoded_rungs = Vec::new();
        // The picture of the last rung scaled, which the next may be halved from.
        let mut above: Option<I420Frame> = None;
        for rung in first_rung..self.encoders.len() {
            let last_frame_at_top = rung == 0 && self.ended;
            if !(self.requests.wanted(rung) || last_frame_at_top) {
                self.rest(rung);
                continue;
            }
            let force_keyframe = self.keyframe_due(rung) || force_keyframe;
            if rung > 0 {
                let size = scaled_size(picture.width(), picture.height(), self.encoders[rung].rung.scale);
                let larger = above.as_ref().unwrap_or(picture);
                let scaled = if halved_size(larger.width(), larger.height()) == size {
                    halve(larger)
                } else {
                    self.scaler.scale(picture, size.0, size.1)
                };
                above = Some(scaled);
            }
            let rung_picture = above.as_ref().unwrap_or(picture);
            let Some(encoded) = self.encoders[rung].running(&self.metrics)?.encode(rung_picture, force_keyframe)?
            else {
                continue;
            };
            self.metrics.frames_encoded.inc();
            if encoded.keyframe {
                self.metrics.keyframes_encoded.inc();
                debug!(rung, forced = force_keyframe, bytes = encoded.data.len(), "keyframe");
            }
            encoded_rungs.push((encoded, rung));
        }
        Ok(encoded_rungs)
    }

    /// Publishes one capture's renditions, each `(frame, made by the stream's encoder,
    /// rung)`, together.
    fn publish_capture(&mut self, capture: Vec<(EncodedFrame, bool, usize)>) {
        let last = capture.len().saturating_sub(1);
        for (index, (encoded, keyframes_on_request, rung)) in capture.into_iter().enumerate() {
            self.publish(encoded, keyframes_on_request, rung, index == last);
        }
    }

    /// Leaves `rung` unencoded for now: a lower rung's encoder stops, and whichever picture
    /// it encodes next is a keyframe.
    fn rest(&mut self, rung: usize) {
        let encoder = &mut self.encoders[rung];
        encoder.resting = true;
        if rung > 0 {
            encoder.encoder = None;
        }
    }

    /// Hands one encoded frame of `rung` to every subscriber, timestamped on the stream
    /// clock; `keyframes_on_request` when the stream's encoder made it.
    fn publish(&mut self, encoded: EncodedFrame, keyframes_on_request: bool, rung: usize, ends_capture: bool) {
        if self.clock.reset_requested.swap(false, Ordering::Relaxed) {
            debug!("stream clock reset");
            self.rtp_clock.restart(Instant::now());
        }
        if encoded.keyframe {
            self.encoders[rung].last_keyframe = Some(Instant::now());
            // Every request made until now is served by this keyframe: it is published
            // below, after the requesting peers started waiting for one.
            self.requests.clear_keyframe_request(rung);
        }
        let rtp_time = self.rtp_clock.stamp(encoded.captured_at);
        // Sending fails only when nobody is subscribed, which is not an error.
        let pauses_unwatched = !self.live;
        let frame = StreamFrame {
            encoded,
            rtp_time,
            clock_epoch: self.rtp_clock.epoch,
            keyframes_on_request,
            last: self.ended,
            pauses_unwatched,
            rung,
            ends_capture,
            published_at: Instant::now(),
        };
        let _ = self.frames.send(frame);
    }

    /// Whether anyone watches the frame just read; counts it as unwatched if not. Passing
    /// from idle to watched asks for a keyframe and restarts the stabilizer, whose path
    /// would otherwise span the gap.
    fn watched(&mut self) -> bool {
        let watched = self.metrics.viewers.get() > 0;
        if watched == self.idle {
            self.idle = !watched;
            if watched {
                debug!("a viewer came: encoding again");
                self.encoders.iter_mut().for_each(|encoder| encoder.resting = true);
                self.stabilizer = self.settings.stabilize.map(Stabilizer::new);
            } else {
                debug!("nobody watches: frames are read but not encoded");
            }
        }
        if !watched {
            self.metrics.frames_unwatched.inc();
        }
        watched
    }

    /// Whether to force a keyframe at `rung` now: the first frame after it rested (or after
    /// an idle spell), or a request is pending and the rung's last keyframe is old enough.
    /// A request that is not yet due stays pending.
    fn keyframe_due(&mut self, rung: usize) -> bool {
        let encoder = &mut self.encoders[rung];
        if std::mem::take(&mut encoder.resting) {
            return true;
        }
        let recent = encoder.last_keyframe.is_some_and(|at| at.elapsed() < MIN_KEYFRAME_INTERVAL);
        !recent && self.requests.take_keyframe_request(rung)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(time: MediaTime) -> u64 {
        time.rebase(str0m::media::Frequency::NINETY_KHZ).numer()
    }

    #[test]
    fn frames_are_stamped_forward_even_when_captured_out_of_order() {
        let start = Instant::now();
        let mut clock = RtpClock::new(start);
        let at = |millis| start + Duration::from_millis(millis);
        assert_eq!(ticks(clock.stamp(at(100))), 9000);
        // A camera's frame timed ahead of our clock, then "The End" drawn by ours.
        assert_eq!(ticks(clock.stamp(at(200))), 18_000);
        assert_eq!(ticks(clock.stamp(at(150))), 18_001);
        assert_eq!(ticks(clock.stamp(at(300))), 27_000);
        // The same capture at another rung.
        assert_eq!(ticks(clock.stamp(at(300))), 27_000);

        // A pause is left out; a restart counts from zero on a new epoch.
        clock.stop_for(Duration::from_secs(1));
        assert_eq!(ticks(clock.stamp(at(1400))), 36_000);
        clock.restart(at(2000));
        assert_eq!((ticks(clock.stamp(at(2000))), clock.epoch), (0, 1));
    }
}
