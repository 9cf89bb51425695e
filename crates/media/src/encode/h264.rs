//! H.264 constrained-baseline encoding with OpenH264 (built from its bundled source), the
//! profile every browser's WebRTC stack decodes.

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
    /// The frame rate the source delivers.
    pub frame_rate: f32,
}

impl Default for H264EncoderConfig {
    fn default() -> Self {
        H264EncoderConfig { bitrate_bps: 2_000_000, frame_rate: 30.0 }
    }
}

/// A real-time H.264 encoder. Frames are never skipped by rate control, so every frame the
/// source delivers reaches the viewers.
pub struct H264Encoder {
    encoder: Encoder,
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
        let encoder = Encoder::with_api_config(OpenH264API::from_source(), settings)
            .map_err(|e| EncoderError::H264 { action: "starting", message: e.to_string() })?;
        Ok(H264Encoder { encoder, buffer: Vec::new() })
    }

    /// Encodes one frame; `keyframe` forces an IDR frame. Returns `None` when the encoder
    /// produced no output for this frame.
    pub fn encode(&mut self, frame: &I420Frame, keyframe: bool) -> Result<Option<EncodedFrame>, EncoderError> {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use openh264::decoder::Decoder;
    use openh264::formats::YUVSource;

    use super::*;
    use crate::source::{FrameCode, TestPattern};

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
}
