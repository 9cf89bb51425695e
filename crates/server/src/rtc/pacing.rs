//! Pacing a viewer's catch-up. A viewer is sent seconds of video at once when it joins
//! (the stream's last keyframe and the frames since) and when it lost data it could not
//! get back ([`Peer::replay`](super::peer::Peer::replay)). Written as fast as the server
//! can, such a burst reaches a viewer's slower link faster than the link drains it, and
//! what its router cannot hold is lost: behind a 10 Mbit/s link with a 64 KB buffer,
//! joiners of a 1.5 Mbit/s stream lost hundreds of packets each way (`BENCHMARKS.md`).
//!
//! So the first frame of a catch-up (a keyframe: the viewer shows it at once) is sent
//! whole, and each frame after it leaves once the ones before have had time to go at
//! [`PACING_FACTOR`] times the stream's own rate, as libwebrtc paces what it sends at 2.5
//! times its target rate. Live frames that come meanwhile queue behind, in order; a live
//! keyframe ends the catch-up (the viewer can start again from it, and needs nothing
//! queued).
//!
//! The live stream itself is not paced: each of its frames leaves whole as soon as it is
//! made, so that a viewer that has caught up waits for nothing. Pacing its keyframes too
//! would hold every frame behind them, for every viewer, for as long as a keyframe takes
//! at the pacing rate (tens of milliseconds), whatever the viewer's link.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::rtp_frame::RtpFrame;

/// How many times the stream's rate a catch-up is sent at: libwebrtc's pacing factor. A
/// viewer then catches up with the stream in a burst's length over 1.5 (the stream goes on
/// while it does), on a link only that much faster than the stream.
pub(super) const PACING_FACTOR: f64 = 2.5;

/// The slowest a catch-up is sent, in bytes per second (1 Mbit/s): for a stream whose
/// rate is not known yet, or so low that its keyframe alone would hold the next frame
/// back for long.
const MIN_PACING_RATE: f64 = 125_000.0;

/// How much of the stream its rate is measured over: a keyframe interval or so, so that
/// the keyframes' share counts.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// The shortest stretch a rate is taken over: a stream that has just started has sent its
/// first keyframe in an instant, which is no rate.
const MIN_RATE_SPAN: Duration = Duration::from_secs(1);

/// How far behind its schedule a catch-up may fall and still make up for it, by sending
/// at once the frames due meanwhile. A driver busy with hundreds of viewers wakes tens of
/// milliseconds late; a catch-up that lost that time at every frame would go slower than
/// the stream it is catching up with, and never end. Behind by more (a stalled driver),
/// it goes on from now rather than sending all it owes in one burst.
const MAX_LATENESS: Duration = Duration::from_millis(50);

/// The stream's rate, from the payload bytes of the frames it published over the last
/// [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub(super) struct StreamRate {
    /// When each frame was published, and its payload bytes; oldest first.
    frames: VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl StreamRate {
    /// Counts a frame the stream published at `published_at`.
    pub(super) fn record(&mut self, published_at: Instant, bytes: usize) {
        self.frames.push_back((published_at, bytes));
        self.bytes += bytes;
        while let Some(&(oldest, oldest_bytes)) = self.frames.front() {
            if published_at.saturating_duration_since(oldest) <= RATE_WINDOW {
                break;
            }
            self.frames.pop_front();
            self.bytes -= oldest_bytes;
        }
    }

    /// The rate a catch-up is sent at now. The window ends at the newest frame, not now:
    /// a stream paused while nobody watched is paced at the rate it had.
    pub(super) fn pacing_rate(&self) -> PacingRate {
        let span = match (self.frames.front(), self.frames.back()) {
            (Some(&(oldest, _)), Some(&(newest, _))) => newest.saturating_duration_since(oldest),
            _ => Duration::ZERO,
        };
        let stream_rate = self.bytes as f64 / span.max(MIN_RATE_SPAN).as_secs_f64();
        PacingRate { bytes_per_second: (stream_rate * PACING_FACTOR).max(MIN_PACING_RATE) }
    }
}

/// A rate frames are paced at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct PacingRate {
    bytes_per_second: f64,
}

impl PacingRate {
    #[cfg(test)]
    pub(super) fn bytes_per_second(bytes_per_second: f64) -> Self {
        PacingRate { bytes_per_second }
    }

    /// How long `bytes` take to send at this rate.
    fn time_for(self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.bytes_per_second)
    }
}

/// Frames waiting to be sent to one viewer, each with the RTP time it goes out with, and
/// when the next may leave.
#[derive(Debug)]
pub(super) struct PacedFrames {
    queue: VecDeque<(RtpFrame, u32)>,
    rate: PacingRate,
    next_send: Instant,
}

impl PacedFrames {
    /// Nothing queued.
    pub(super) fn new(now: Instant) -> Self {
        PacedFrames { queue: VecDeque::new(), rate: PacingRate { bytes_per_second: MIN_PACING_RATE }, next_send: now }
    }

    /// Starts a catch-up of `first` (a frame just sent, stamped `first_time`), paced at
    /// `rate`: what is queued after it waits for its bytes to have gone. Anything queued
    /// before is dropped.
    pub(super) fn start(&mut self, first: &RtpFrame, rate: PacingRate, now: Instant) {
        self.queue.clear();
        self.rate = rate;
        self.next_send = now + rate.time_for(first.payload_bytes());
    }

    /// Queues a frame after the others.
    pub(super) fn push(&mut self, frame: RtpFrame, time: u32) {
        self.queue.push_back((frame, time));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drops every frame queued.
    pub(super) fn clear(&mut self) {
        self.queue.clear();
    }

    /// When the next frame is due; `None` when none is queued.
    pub(super) fn next_send(&self) -> Option<Instant> {
        (!self.queue.is_empty()).then_some(self.next_send)
    }

    /// The next frame and its RTP time, if it is due at `now`; the frame after it is then
    /// due once this one has had time to go.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(RtpFrame, u32)> {
        if now < self.next_send {
            return None;
        }
        let (frame, time) = self.queue.pop_front()?;
        let paced_from = self.next_send.max(now.checked_sub(MAX_LATENESS).unwrap_or(now));
        self.next_send = paced_from + self.rate.time_for(frame.payload_bytes());
        Some((frame, time))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;
    use crate::rtc::rtp_frame::testing::frame;

    /// A delta frame of `bytes`.
    fn frame_of(bytes: usize) -> RtpFrame {
        frame(false, true, bytes)
    }

    #[test]
    fn the_stream_rate_is_measured_over_its_last_two_seconds_and_paced_at_two_and_a_half_times_it() {
        let start = Instant::now();
        let mut rate = StreamRate::default();
        assert_eq!(rate.pacing_rate(), PacingRate::bytes_per_second(MIN_PACING_RATE), "nothing measured yet");

        // 4 s of a 30 fps stream: a 60 000-byte keyframe every second, 5000-byte frames
        // between; the first two seconds twice as large, and past the window.
        for n in 0..120u32 {
            let bytes = if n % 30 == 0 { 60_000 } else { 5000 } * if n < 60 { 2 } else { 1 };
            rate.record(start + Duration::from_millis(100) * n / 3, bytes);
        }
        // The window holds frames 59 (its 2 s edge, twice as large) to 119, over 2 s.
        let window_bytes = 10_000 + 2 * 60_000 + 58 * 5000;
        assert_eq!(rate.pacing_rate(), PacingRate::bytes_per_second(f64::from(window_bytes) / 2.0 * PACING_FACTOR));
    }

    #[test]
    fn a_stream_just_started_is_taken_over_a_second_and_a_slow_one_paced_at_the_floor() {
        let start = Instant::now();
        let mut rate = StreamRate::default();
        rate.record(start, 500_000);
        rate.record(start + Duration::from_millis(33), 10_000);
        assert_eq!(rate.pacing_rate(), PacingRate::bytes_per_second(510_000.0 * PACING_FACTOR), "a second, not 33 ms");

        let mut slow = StreamRate::default();
        (0..60u32).for_each(|n| slow.record(start + Duration::from_millis(33) * n, 100));
        assert_eq!(slow.pacing_rate(), PacingRate::bytes_per_second(MIN_PACING_RATE));
    }

    #[test]
    fn each_frame_after_the_first_waits_for_the_ones_before_to_have_gone_at_the_rate() {
        let now = Instant::now();
        let mut paced = PacedFrames::new(now);
        assert_eq!(paced.next_send(), None);
        // 10 000 bytes a second: 1000 bytes take 100 ms.
        paced.start(&frame_of(2000), PacingRate::bytes_per_second(10_000.0), now);
        paced.push(frame_of(1000), 1);
        paced.push(frame_of(500), 2);
        assert_eq!(paced.next_send(), Some(now + Duration::from_millis(200)), "the first frame's 2000 bytes");
        assert!(paced.pop_due(now + Duration::from_millis(199)).is_none());

        let (_, time) = paced.pop_due(now + Duration::from_millis(200)).unwrap();
        assert_eq!(time, 1);
        assert_eq!(paced.next_send(), Some(now + Duration::from_millis(300)));
        // Taken late, it does not hold the next back by as much again.
        paced.push(frame_of(1000), 3);
        let (_, time) = paced.pop_due(now + Duration::from_millis(340)).unwrap();
        assert_eq!(time, 2);
        assert_eq!(paced.next_send(), Some(now + Duration::from_millis(350)), "its 500 bytes after 300 ms, not 340");
        assert!(paced.pop_due(now + Duration::from_millis(349)).is_none());
        assert!(paced.pop_due(now + Duration::from_millis(350)).is_some());
        assert_eq!(paced.next_send(), None, "nothing left");
        assert!(paced.pop_due(now + Duration::from_secs(9)).is_none());

        // After a long stall it paces from then, rather than sending what it owes at once.
        paced.push(frame_of(1000), 4);
        paced.push(frame_of(1000), 5);
        let late = now + Duration::from_secs(10);
        assert!(paced.pop_due(late).is_some());
        assert_eq!(paced.next_send(), Some(late - MAX_LATENESS + Duration::from_millis(100)));
    }

    #[test]
    fn starting_again_drops_what_was_queued() {
        let now = Instant::now();
        let mut paced = PacedFrames::new(now);
        paced.start(&frame_of(1000), PacingRate::bytes_per_second(10_000.0), now);
        paced.push(frame_of(1000), 1);
        paced.start(&frame_of(1000), PacingRate::bytes_per_second(20_000.0), now);
        assert!(paced.is_empty());
        paced.push(frame_of(1000), 2);
        assert_eq!(paced.next_send(), Some(now + Duration::from_millis(50)), "at the new rate");
    }
}
