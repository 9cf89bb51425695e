//! Counters shared by the capture thread, the peer driver and the web layer, and the
//! [`Stats`] snapshot users and tests read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Live counters. Every field is updated with relaxed atomics: they are statistics, not
/// synchronisation.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) encoders_running: AtomicUsize,
    pub(crate) viewers: AtomicUsize,
    pub(crate) frames_encoded: AtomicU64,
    pub(crate) frames_passed_through: AtomicU64,
    pub(crate) keyframes_encoded: AtomicU64,
    pub(crate) keyframe_requests: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_skipped: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            encoders_running: self.encoders_running.load(Ordering::Relaxed),
            viewers: self.viewers.load(Ordering::Relaxed),
            frames_encoded: self.frames_encoded.load(Ordering::Relaxed),
            frames_passed_through: self.frames_passed_through.load(Ordering::Relaxed),
            keyframes_encoded: self.keyframes_encoded.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            frames_skipped: self.frames_skipped.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of what the server is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Encoders running right now: one per stream, however many viewers watch it.
    pub encoders_running: usize,
    /// Viewers (peer connections) currently held, connected or still connecting.
    pub viewers: usize,
    /// Frames encoded since the start.
    pub frames_encoded: u64,
    /// Frames the source delivered already encoded (H.264 from an RTSP camera) and that
    /// were sent on without decoding or encoding.
    pub frames_passed_through: u64,
    /// Of those, keyframes.
    pub keyframes_encoded: u64,
    /// Keyframe requests received (joins, PLI, FIR, recovery); several may be served by
    /// one keyframe.
    pub keyframe_requests: u64,
    /// Frames handed to viewers, counted once per viewer.
    pub frames_sent: u64,
    /// Frames a viewer skipped while waiting for a keyframe (after joining, falling
    /// behind or losing data), counted once per viewer.
    pub frames_skipped: u64,
}
