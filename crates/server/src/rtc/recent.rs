//! Frames since a keyframe. A viewer joining now starts from the stream's last keyframe and
//! the frames since, within limits ([`RecentFrames`]). Joins come in bursts (a page shared,
//! a reconnect wave), and each joiner would otherwise wait for a keyframe: one forced from
//! the encoder (at most every 250 ms, and sent to every viewer), or a passed-through
//! source's next one. A viewer that lost data is sent them again (see `Peer::replay`), and
//! a driver that fell behind the stream goes on from the newest keyframe it has queued.

use super::rtp_frame::RtpFrame;
use crate::stream::StreamFrame;

/// The most frames kept when the stream's encoder makes keyframes on request (a second at
/// 30 fps). A viewer joining later than that gets a keyframe made for it instead. A forced
/// keyframe goes to every viewer (several times a P-frame's size, and the encoder's rate
/// control starves the frames around it), so during a wave of joins this is what keeps
/// keyframes to about one a second (see BENCHMARKS.md).
const ENCODED_FRAMES: usize = 30;

/// The most frames kept of a source's H.264 passed through, which has keyframes only when
/// the source makes them: its whole group of pictures, up to 10 s at 30 fps.
const PASSED_THROUGH_FRAMES: usize = 300;

/// The most RTP payload bytes kept of a source passed through: a joiner is sent them all
/// at once, and each peer driver holds them.
const PASSED_THROUGH_BYTES: usize = 8 << 20;

/// A frame as [`SinceKeyframe`] sees it.
pub(super) trait KeptFrame {
    /// The stream frame it carries.
    fn stream_frame(&self) -> &StreamFrame;
    /// The bytes it holds, against a byte limit.
    fn bytes(&self) -> usize;
}

impl KeptFrame for StreamFrame {
    fn stream_frame(&self) -> &StreamFrame {
        self
    }

    fn bytes(&self) -> usize {
        self.encoded.data.len()
    }
}

impl KeptFrame for RtpFrame {
    fn stream_frame(&self) -> &StreamFrame {
        &self.frame
    }

    fn bytes(&self) -> usize {
        self.payload_bytes()
    }
}

/// Of frames taken in stream order, the newest keyframe and the frames since, while they
/// stay within the limits; nothing from the moment they do not until the next keyframe.
/// The frames not kept are counted.
#[derive(Debug)]
pub(super) struct SinceKeyframe<T> {
    frames: Vec<T>,
    bytes: usize,
    dropped: u64,
}

impl<T> Default for SinceKeyframe<T> {
    fn default() -> Self {
        SinceKeyframe { frames: Vec::new(), bytes: 0, dropped: 0 }
    }
}

impl<T: KeptFrame> SinceKeyframe<T> {
    /// Takes the next frame, keeping at most `max_frames` of `max_bytes` in all.
    pub(super) fn push(&mut self, frame: T, max_frames: usize, max_bytes: usize) {
        let keyframe = frame.stream_frame().encoded.keyframe;
        if keyframe {
            self.break_off(0);
        } else if self.frames.is_empty() {
            self.dropped += 1;
            return;
        }
        let bytes = self.bytes + frame.bytes();
        // A keyframe is kept whatever its size: nobody could start without it.
        if keyframe || (self.frames.len() < max_frames && bytes <= max_bytes) {
            self.frames.push(frame);
            self.bytes = bytes;
        } else {
            self.break_off(1);
        }
    }

    /// `missed` frames were lost after those taken so far: the next cannot follow them.
    pub(super) fn break_off(&mut self, missed: u64) {
        self.dropped += missed + self.frames.len() as u64;
        self.frames.clear();
        self.bytes = 0;
    }

    /// The keyframe first, then the frames since; empty when there are none to start from.
    pub(super) fn frames(&self) -> &[T] {
        &self.frames
    }

    /// Frames taken but not kept (those given up when the next keyframe came count too).
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Gives up the frames kept.
    pub(super) fn into_frames(self) -> Vec<T> {
        self.frames
    }
}

/// What a viewer connecting now starts from: the last keyframe sent and the frames since,
/// within the limits that suit the stream's kind.
#[derive(Debug, Default)]
pub(super) struct RecentFrames(SinceKeyframe<RtpFrame>);

impl RecentFrames {
    /// Takes note of the frame just sent to the viewers.
    pub(super) fn record(&mut self, rtp: &RtpFrame) {
        let (max_frames, max_bytes) = if rtp.frame.keyframes_on_request {
            (ENCODED_FRAMES, usize::MAX)
        } else {
            (PASSED_THROUGH_FRAMES, PASSED_THROUGH_BYTES)
        };
        self.0.push(rtp.clone(), max_frames, max_bytes);
    }

    /// Forgets every frame: viewers joining now wait for the next keyframe.
    pub(super) fn clear(&mut self) {
        self.0.break_off(0);
    }

    /// The keyframe first, then the frames since; empty when there are none to start from.
    pub(super) fn frames(&self) -> &[RtpFrame] {
        self.0.frames()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use str0m::media::MediaTime;
    use webgear_media::encode::EncodedFrame;

    use super::*;
    use crate::stream::StreamFrame;

    /// A frame of `payload_bytes` in one payload.
    fn frame(keyframe: bool, keyframes_on_request: bool, payload_bytes: usize) -> RtpFrame {
        let now = Instant::now();
        let encoded =
            EncodedFrame { data: Arc::from([0u8].as_slice()), keyframe, width: 16, height: 16, captured_at: now };
        let frame = StreamFrame {
            encoded,
            rtp_time: MediaTime::from_90khz(0),
            clock_epoch: 0,
            keyframes_on_request,
            last: false,
            pauses_unwatched: false,
            rung: 0,
            ends_capture: true,
            published_at: now,
        };
        RtpFrame { frame, payloads: Arc::from([Arc::from(vec![0u8; payload_bytes])]) }
    }

    #[test]
    fn of_the_frames_taken_the_newest_keyframe_and_those_since_are_kept_and_the_others_counted() {
        let mut taken = SinceKeyframe::default();
        let take = |taken: &mut SinceKeyframe<RtpFrame>, key: bool| taken.push(frame(key, true, 100), 10, usize::MAX);
        [true, false].into_iter().for_each(|key| take(&mut taken, key));
        // Frames 2 and 3 were missed: 4 cannot follow 1.
        taken.break_off(2);
        [false, true, false].into_iter().for_each(|key| take(&mut taken, key));
        let keyframes: Vec<bool> = taken.frames().iter().map(|rtp| rtp.frame.encoded.keyframe).collect();
        assert_eq!((keyframes, taken.dropped()), (vec![true, false], 5));
    }

    #[test]
    fn nothing_is_kept_before_a_keyframe_and_a_keyframe_starts_afresh() {
        let mut recent = RecentFrames::default();
        recent.record(&frame(false, true, 100));
        assert!(recent.frames().is_empty());
        recent.record(&frame(true, true, 100));
        recent.record(&frame(false, true, 100));
        assert_eq!(recent.frames().len(), 2);
        recent.record(&frame(true, true, 100));
        assert_eq!(recent.frames().len(), 1);
        assert!(recent.frames()[0].frame.encoded.keyframe);
    }

    #[test]
    fn a_few_encoded_frames_are_kept_then_none_until_the_next_keyframe() {
        let mut recent = RecentFrames::default();
        (0..ENCODED_FRAMES).for_each(|n| recent.record(&frame(n == 0, true, 100)));
        assert_eq!(recent.frames().len(), ENCODED_FRAMES);
        recent.record(&frame(false, true, 100));
        assert!(recent.frames().is_empty(), "a joiner now gets a keyframe made for it");
        recent.record(&frame(false, true, 100));
        assert!(recent.frames().is_empty());
    }

    #[test]
    fn a_passed_through_group_of_pictures_is_kept_up_to_its_frame_and_byte_limits() {
        let mut recent = RecentFrames::default();
        (0..PASSED_THROUGH_FRAMES).for_each(|n| recent.record(&frame(n == 0, false, 1000)));
        assert_eq!(recent.frames().len(), PASSED_THROUGH_FRAMES);
        recent.record(&frame(false, false, 1000));
        assert!(recent.frames().is_empty());

        let large = PASSED_THROUGH_BYTES / 4;
        recent.record(&frame(true, false, large));
        (0..3).for_each(|_| recent.record(&frame(false, false, large)));
        assert_eq!(recent.frames().len(), 4, "exactly at the byte limit");
        recent.record(&frame(false, false, 1));
        assert!(recent.frames().is_empty(), "past it");
        // A keyframe alone is kept whatever its size.
        recent.record(&frame(true, false, 2 * PASSED_THROUGH_BYTES));
        assert_eq!(recent.frames().len(), 1);
    }
}
