//! H.264 constrained-baseline encoding with OpenH264 (built from its bundled source), the
//! profile every browser's WebRTC stack decodes.

use std::time::{Duration, Instant};

use openh264::OpenH264API;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, Level, Profile, RateControlMode, UsageType,
};
use openh264::formats::YUVSlices;

use super::{EncodedFrame, EncoderError};
use crate::frame::I420Frame;

/// Settings for [`H264Encoder`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct H264EncoderConfig {
    /// Target bit rate in bits per second.
    pub bitrate_bps: u32,
    /// The frame rate the source says it delivers: rate control gives each frame its share
    /// of a second at this rate. [`H264Encoder`] corrects it when the frames come at
    /// another rate.
    pub frame_rate: f32,
}

impl Default for H264EncoderConfig {
    fn default() -> Self {
        H264EncoderConfig { bitrate_bps: 2_000_000, frame_rate: 30.0 }
    }
}

/// A real-time H.264 encoder. Frames are never skipped by rate control, so every frame the
/// source delivers reaches the viewers.
///
/// Rate control gives each frame its share of a second at the configured frame rate, so a
/// source that delivers another rate than it says (a custom stream that says none, taken
/// for 30 fps; an MJPEG camera whose rate ffmpeg guesses; a camera slowing down in low
/// light) would get the bit rate times the ratio. The encoder counts the frames by their
/// capture times and, when they come more than 15% off the configured rate over 2 s,
/// starts again at the rate they come at, from a keyframe (at most once in 10 s).
pub struct H264Encoder {
    encoder: Encoder,
    config: H264EncoderConfig,
    arrivals: FrameRateWatch,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder").finish_non_exhaustive()
    }
}

impl H264Encoder {
    /// Creates an encoder. The picture size is taken from each frame.
    pub fn new(config: H264EncoderConfig) -> Result<Self, EncoderError> {
        Ok(H264Encoder {
            encoder: Self::openh264(config)?,
            config,
            arrivals: FrameRateWatch::default(),
            buffer: Vec::new(),
        })
    }

    fn openh264(config: H264EncoderConfig) -> Result<Encoder, EncoderError> {
        let settings = EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            .profile(Profile::Baseline)
            .level(Level::Level_3_1)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(config.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(config.frame_rate))
            .skip_frames(false)
            .complexity(Complexity::Low)
            .num_threads(1);
        Encoder::with_api_config(OpenH264API::from_source(), settings)
            .map_err(|e| EncoderError::H264 { action: "starting", message: e.to_string() })
    }

    /// Encodes one frame; `keyframe` forces an IDR frame. Returns `None` when the encoder
    /// produced no output for this frame.
    pub fn encode(&mut self, frame: &I420Frame, keyframe: bool) -> Result<Option<EncodedFrame>, EncoderError> {
        if let Some(rate) = self.arrivals.off_rate(frame.captured_at(), self.config.frame_rate) {
            tracing::debug!(configured = self.config.frame_rate, measured = rate, "frames come at another rate");
            self.config.frame_rate = rate;
            // A fresh encoder starts with a keyframe.
            self.encoder = Self::openh264(self.config)?;
        }
        if keyframe {
            self.encoder.force_intra_frame();
        }
        let (y, u, v) = frame.planes();
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let chroma_width = frame.chroma_width() as usize;
        let source = YUVSlices::new((y, u, v), (width, height), (width, chroma_width, chroma_width));
        let bitstream = self
            .encoder
            .encode(&source)
            .map_err(|e| EncoderError::H264 { action: "encoding a frame", message: e.to_string() })?;
        let keyframe = match bitstream.frame_type() {
            FrameType::IDR | FrameType::I => true,
            FrameType::P | FrameType::IPMixed => false,
            FrameType::Skip | FrameType::Invalid => return Ok(None),
        };
        self.buffer.clear();
        bitstream.write_vec(&mut self.buffer);
        if self.buffer.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame {
            data: self.buffer.as_slice().into(),
            keyframe,
            width: frame.width(),
            height: frame.height(),
            captured_at: frame.captured_at(),
        }))
    }
}

/// Counts frames by their capture times, to tell the rate they come at.
#[derive(Debug, Default)]
struct FrameRateWatch {
    /// The first frame of the span being counted, and the frames since.
    span_start: Option<Instant>,
    frames_since: u32,
    last: Option<Instant>,
    /// When a rate was last told.
    told_at: Option<Instant>,
}

impl FrameRateWatch {
    /// How long frames are counted before their rate is judged.
    const SPAN: Duration = Duration::from_secs(2);
    /// A pause longer than this (a file nobody watched, a stalled stream) starts the count
    /// again: it says nothing of the rate.
    const PAUSE: Duration = Duration::from_secs(1);
    /// How far off the configured rate frames may come before the encoder follows them:
    /// less than an MJPEG camera sending 30 fps is off the 25 ffmpeg guesses.
    const TOLERANCE: f32 = 0.15;
    /// How long after a rate is told the next may be: each costs the viewers a keyframe.
    const BETWEEN_CHANGES: Duration = Duration::from_secs(10);

    /// Counts a frame captured `at`; returns the rate frames came at over the last span
    /// when it is more than [`Self::TOLERANCE`] off `configured`, and no other rate was
    /// told in the last [`Self::BETWEEN_CHANGES`].
    fn off_rate(&mut self, at: Instant, configured: f32) -> Option<f32> {
        let paused = self.last.is_none_or(|last| at.saturating_duration_since(last) > Self::PAUSE);
        self.last = Some(at);
        let start = match self.span_start {
            Some(start) if !paused => start,
            _ => {
                self.span_start = Some(at);
                self.frames_since = 0;
                return None;
            }
        };
        self.frames_since += 1;
        let spanned = at.saturating_duration_since(start);
        if spanned < Self::SPAN {
            return None;
        }
        let rate = self.frames_since as f32 / spanned.as_secs_f32();
        self.span_start = Some(at);
        self.frames_since = 0;
        let settled = self.told_at.is_none_or(|told| at.saturating_duration_since(told) >= Self::BETWEEN_CHANGES);
        let off = (rate - configured).abs() > configured * Self::TOLERANCE && rate >= 1.0;
        if !(settled && off) {
            return None;
        }
        self.told_at = Some(at);
        Some(rate)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;

    use super::*;
    use crate::source::test_pattern::{FrameCode, TestPattern};

    #[test]
    fn encodes_frames_a_decoder_reads_back_with_their_numbers() {
        let pattern = TestPattern::new(640, 360, 30);
        let mut encoder = H264Encoder::new(H264EncoderConfig::default()).unwrap();
        let mut decoder = Decoder::new().unwrap();
        for number in 0..10u64 {
            let forced = number == 5;
            let encoded = encoder.encode(&pattern.render(number, Instant::now()), forced).unwrap().unwrap();
            assert_eq!(encoded.keyframe, number == 0 || forced, "frame {number}");
            assert_eq!(&encoded.data[..4], &[0, 0, 0, 1], "Annex B start code");
            let picture = decoder.decode(&encoded.data).unwrap().expect("a picture per frame");
            assert_eq!(picture.dimensions(), (640, 360));
            let stride = picture.strides().0;
            assert_eq!(FrameCode::read(picture.y(), stride, 640, 360), Some(number as u16));
        }
    }

    /// Frames every `period` from `start`, `count` of them, starting at `first`.
    fn stamps(start: Instant, period: Duration, first: u32, count: u32) -> impl Iterator<Item = Instant> {
        (first..first + count).map(move |n| start + period * n)
    }

    #[test]
    fn frames_at_the_configured_rate_leave_it_alone() {
        let mut watch = FrameRateWatch::default();
        let start = Instant::now();
        let thirty = Duration::from_millis(33);
        assert!(stamps(start, thirty, 0, 300).all(|at| watch.off_rate(at, 30.0).is_none()));
        // 27 fps is within 15% of 30.
        let mut watch = FrameRateWatch::default();
        assert!(stamps(start, Duration::from_millis(37), 0, 300).all(|at| watch.off_rate(at, 30.0).is_none()));
    }

    #[test]
    fn frames_at_another_rate_are_told_after_a_span_and_a_pause_is_not_a_rate() {
        let mut watch = FrameRateWatch::default();
        let start = Instant::now();
        let tenth = Duration::from_millis(100);
        let told: Vec<(u32, f32)> = stamps(start, tenth, 0, 30)
            .enumerate()
            .filter_map(|(n, at)| Some((n as u32, watch.off_rate(at, 30.0)?)))
            .collect();
        assert_eq!(told.len(), 1, "told once: {told:?}");
        let (frame, rate) = told[0];
        assert_eq!(frame, 20, "after 2 s");
        assert!((rate - 10.0).abs() < 0.1, "{rate}");

        // At 30 fps, a 5 s pause (a file nobody watched) in the middle of a span.
        let mut watch = FrameRateWatch::default();
        let thirty = Duration::from_millis(33);
        let before = stamps(start, thirty, 0, 40);
        let after = stamps(start + Duration::from_secs(5), thirty, 40, 200);
        assert!(before.chain(after).all(|at| watch.off_rate(at, 30.0).is_none()));
    }

    #[test]
    fn a_rate_that_keeps_changing_is_followed_at_most_once_in_10_s() {
        let mut watch = FrameRateWatch::default();
        let start = Instant::now();
        // 10 fps for 2 s, then 30, 10, 30 ... every 2 s, for 30 s, told against the rate
        // last told.
        let mut configured = 30.0;
        let mut told = Vec::new();
        for span in 0..15u32 {
            let period = Duration::from_millis(if span % 2 == 0 { 100 } else { 33 });
            let frames = (Duration::from_secs(2).as_millis() / period.as_millis()) as u32;
            let span_start = start + Duration::from_secs(2) * span;
            for at in (0..frames).map(|n| span_start + period * n) {
                if let Some(rate) = watch.off_rate(at, configured) {
                    told.push(at - start);
                    configured = rate;
                }
            }
        }
        assert!(told.len() >= 2, "{told:?}");
        assert!(told.windows(2).all(|pair| pair[1] - pair[0] >= Duration::from_secs(10)), "{told:?}");
    }

    #[test]
    fn an_encoder_fed_at_another_rate_starts_again_from_a_keyframe() {
        let pattern = TestPattern::new(320, 180, 10);
        let mut encoder = H264Encoder::new(H264EncoderConfig { bitrate_bps: 500_000, frame_rate: 30.0 }).unwrap();
        let start = Instant::now();
        let keyframes: Vec<u32> = stamps(start, Duration::from_millis(100), 0, 40)
            .zip(0..)
            .filter_map(|(at, number)| {
                let encoded = encoder.encode(&pattern.render(u64::from(number), at), false).unwrap()?;
                encoded.keyframe.then_some(number)
            })
            .collect();
        assert_eq!(keyframes, [0, 20], "the first frame, then the first at the rate frames come at");
        assert_eq!(encoder.config.frame_rate.round(), 10.0);
    }
}
