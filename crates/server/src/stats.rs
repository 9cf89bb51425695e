//! Counters shared by the capture thread, the peer driver and the web layer: the [`Stats`]
//! snapshot users and tests read, and the Prometheus text served at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The upper bounds of the latency histograms' buckets, in milliseconds: fine where a
/// frame's budget lies (one frame is 33 ms at 30 fps; capture to send should stay under
/// 15 ms), coarse beyond, so a quantile can be read against such targets.
const LATENCY_BUCKETS_MS: [f64; 21] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 33.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0,
    1000.0, 2000.0,
];

/// Live counters, registered once under the `webgear` prefix. Every update is a relaxed
/// atomic: they are statistics, not synchronisation.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) encoders_running: Gauge,
    /// Viewers held, counted from the moment their offer is admitted.
    pub(crate) viewers: Gauge,
    /// The share of its time the least loaded peer driver spent working over its last
    /// window; new viewers are refused from 0.95.
    pub(crate) drivers_busy: Gauge<f64, AtomicU64>,
    pub(crate) frames_encoded: Counter,
    pub(crate) frames_unwatched: Counter,
    pub(crate) frames_passed_through: Counter,
    pub(crate) keyframes_encoded: Counter,
    pub(crate) keyframe_requests: Counter,
    pub(crate) frames_sent: Counter,
    pub(crate) frames_skipped: Counter,
    pub(crate) frames_dropped: Counter,
    /// Viewers moved from one rung of the ladder to another.
    pub(crate) rung_switches: Counter,
    pub(crate) bytes_sent: Counter,
    pub(crate) offers_refused: Counter,
    /// Transforming and encoding one frame, in the capture thread.
    pub(crate) encode_seconds: Histogram,
    /// From a frame's capture to the moment its packets for a viewer were handed to the
    /// network: once per viewer and frame.
    pub(crate) capture_to_send_seconds: Histogram,
    /// The same wait for the last viewer a peer driver served the frame to: once per frame
    /// and driver (with viewers).
    pub(crate) capture_to_last_send_seconds: Histogram,
    /// How long a datagram from a viewer (ICE, DTLS, RTCP) waited for its peer driver:
    /// joiners' handshakes queue here when the drivers are busy.
    pub(crate) datagram_wait_seconds: Histogram,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let latency = || Histogram::new(LATENCY_BUCKETS_MS.map(|ms| ms / 1000.0));
        let mut metrics = Metrics {
            encoders_running: Gauge::default(),
            viewers: Gauge::default(),
            drivers_busy: Gauge::default(),
            frames_encoded: Counter::default(),
            frames_unwatched: Counter::default(),
            frames_passed_through: Counter::default(),
            keyframes_encoded: Counter::default(),
            keyframe_requests: Counter::default(),
            frames_sent: Counter::default(),
            frames_skipped: Counter::default(),
            frames_dropped: Counter::default(),
            rung_switches: Counter::default(),
            bytes_sent: Counter::default(),
            offers_refused: Counter::default(),
            encode_seconds: latency(),
            capture_to_send_seconds: latency(),
            capture_to_last_send_seconds: latency(),
            datagram_wait_seconds: latency(),
            registry: Registry::with_prefix("webgear"),
        };
        metrics.register_all();
        metrics
    }
}

impl Metrics {
    /// Registers every metric (each shares its value with the registered copy).
    fn register_all(&mut self) {
        let registry = &mut self.registry;
        let gauges = [
            (
                "encoders_running",
                "Encoders running: one per stream, however many watch (kept, idle, while nobody does)",
                &self.encoders_running,
            ),
            ("viewers", "Viewers held, connected or still connecting", &self.viewers),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        registry.register(
            "drivers_busy_ratio",
            "Share of the last 2 s the least loaded peer driver spent working; new viewers are refused from 0.95",
            self.drivers_busy.clone(),
        );
        let counters = [
            ("frames_encoded", "Frames encoded", &self.frames_encoded),
            ("frames_unwatched", "Frames read while nobody watched, and so not encoded", &self.frames_unwatched),
            (
                "frames_passed_through",
                "Frames sent on as the source encoded them (H.264 passthrough)",
                &self.frames_passed_through,
            ),
            ("keyframes_encoded", "Keyframes encoded", &self.keyframes_encoded),
            (
                "keyframe_requests",
                "Keyframe requests (joins, PLI, FIR, recovery); one keyframe may serve several, and a viewer may be sent the last keyframe and the frames since again instead",
                &self.keyframe_requests,
            ),
            ("frames_sent", "Frames handed to viewers, once per viewer", &self.frames_sent),
            (
                "frames_skipped",
                "Frames a viewer skipped waiting for a keyframe (joining, lagging, lost data), once per viewer",
                &self.frames_skipped,
            ),
            (
                "frames_dropped",
                "Frames a peer driver (one per core) dropped, having fallen behind the stream; its viewers start again from a keyframe",
                &self.frames_dropped,
            ),
            (
                "rung_switches",
                "Viewers moved from one rung of the adaptive stream's ladder to another, as their links allowed",
                &self.rung_switches,
            ),
            (
                "offers_refused",
                "Offers refused: the server held its maximum of viewers, or its peer drivers were all busy",
                &self.offers_refused,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register_with_unit("sent", "Media bytes sent to viewers", Unit::Bytes, self.bytes_sent.clone());
        let histograms = [
            ("encode", "Time to transform and encode one frame", &self.encode_seconds),
            (
                "capture_to_send",
                "Time from a frame's capture until its packets for a viewer were sent, once per viewer and frame",
                &self.capture_to_send_seconds,
            ),
            (
                "capture_to_last_send",
                "Time from a frame's capture until the last viewer of a peer driver (one per core) was sent it",
                &self.capture_to_last_send_seconds,
            ),
            (
                "datagram_wait",
                "Time a datagram from a viewer (ICE, DTLS, RTCP) waited for its peer driver (one per core) to handle it",
                &self.datagram_wait_seconds,
            ),
        ];
        for (name, help, histogram) in histograms {
            registry.register_with_unit(name, help, Unit::Seconds, histogram.clone());
        }
    }

    /// Viewers held right now.
    pub(crate) fn viewers_held(&self) -> usize {
        usize::try_from(self.viewers.get()).unwrap_or(0)
    }

    /// Counts one more viewer unless `max` are held already. `false` when full.
    pub(crate) fn admit_viewer(&self, max: usize) -> bool {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let admitted = self
            .viewers
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| (held < max).then_some(held + 1));
        if admitted.is_err() {
            self.offers_refused.inc();
        }
        admitted.is_ok()
    }

    pub(crate) fn observe(histogram: &Histogram, duration: Duration) {
        histogram.observe(duration.as_secs_f64());
    }

    /// Every metric in the Prometheus text format.
    pub(crate) fn prometheus_text(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let count = |gauge: &Gauge| usize::try_from(gauge.get()).unwrap_or(0);
        Stats {
            encoders_running: count(&self.encoders_running),
            viewers: self.viewers_held(),
            frames_encoded: self.frames_encoded.get(),
            frames_unwatched: self.frames_unwatched.get(),
            frames_passed_through: self.frames_passed_through.get(),
            keyframes_encoded: self.keyframes_encoded.get(),
            keyframe_requests: self.keyframe_requests.get(),
            frames_sent: self.frames_sent.get(),
            frames_skipped: self.frames_skipped.get(),
            frames_dropped: self.frames_dropped.get(),
            rung_switches: self.rung_switches.get(),
            bytes_sent: self.bytes_sent.get(),
            offers_refused: self.offers_refused.get(),
        }
    }
}

/// A point-in-time view of what the server is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Encoders running right now: one per stream, however many viewers watch it. While
    /// nobody watches, the encoder is kept but idle (see `frames_unwatched`).
    pub encoders_running: usize,
    /// Viewers (peer connections) currently held, connected or still connecting.
    pub viewers: usize,
    /// Frames encoded since the start.
    pub frames_encoded: u64,
    /// Frames read from a live source while nobody watched, and so neither transformed nor
    /// encoded. (Other sources, such as files, are not read while nobody watches.)
    pub frames_unwatched: u64,
    /// Frames the source delivered already encoded (H.264 from an RTSP camera) and that
    /// were sent on without decoding or encoding.
    pub frames_passed_through: u64,
    /// Keyframes among the frames encoded.
    pub keyframes_encoded: u64,
    /// Keyframe requests received (joins, PLI, FIR, recovery); several may be served by
    /// one keyframe, and a viewer may be sent the last keyframe and the frames since
    /// again instead.
    pub keyframe_requests: u64,
    /// Frames handed to viewers, counted once per viewer.
    pub frames_sent: u64,
    /// Frames a viewer skipped while waiting for a keyframe (after joining, falling
    /// behind or losing data), counted once per viewer.
    pub frames_skipped: u64,
    /// Frames a peer driver (there is one per core) dropped because it had fallen behind
    /// the stream (a saturated server), counted once per driver. Its viewers then start
    /// again from a keyframe.
    pub frames_dropped: u64,
    /// Viewers moved from one rung of the ladder to another.
    pub rung_switches: u64,
    /// Media bytes sent to viewers (RTP, RTCP, DTLS and STUN, as UDP payload).
    pub bytes_sent: u64,
    /// Offers refused because the server held its maximum number of viewers, or because
    /// its peer drivers were busy all the time (more viewers would slow everyone down).
    pub offers_refused: u64,
}
