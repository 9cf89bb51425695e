//! Decoding: H.264 access units back into raw frames, for sources that deliver H.264 when
//! the stream must transform frames (size reduction, colour) before encoding them again.

use std::collections::VecDeque;
use std::time::Instant;

use openh264::decoder::{DecodedYUV, Decoder};
use openh264::formats::YUVSource;
use tracing::debug;

use crate::encode::EncodedFrame;
use crate::frame::{Frame, PixelFormat};
use crate::source::{EncodedSource, FrameSource, SourceError};

/// An H.264 decoder (OpenH264) that turns Annex B access units into I420 frames.
pub struct H264Decoder {
    decoder: Decoder,
    /// The capture time of the latest access unit, for pictures flushed at the end.
    last_capture: Option<Instant>,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder").finish_non_exhaustive()
    }
}

/// Why an access unit could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("H.264 decoder failed: {0}")]
pub struct DecodeError(String);

impl H264Decoder {
    /// Creates a decoder; the picture size comes from the stream.
    pub fn new() -> Result<Self, DecodeError> {
        Ok(H264Decoder { decoder: Decoder::new().map_err(|e| DecodeError(e.to_string()))?, last_capture: None })
    }

    /// Decodes one access unit. `Ok(None)` when it completed no picture (parameter sets
    /// alone, or a decoder still waiting for a keyframe).
    pub fn decode(&mut self, access_unit: &EncodedFrame) -> Result<Option<Frame>, DecodeError> {
        self.last_capture = Some(access_unit.captured_at);
        match self.decoder.decode(&access_unit.data).map_err(|e| DecodeError(e.to_string()))? {
            Some(picture) => Ok(Some(to_frame(&picture, access_unit.captured_at)?)),
            None => Ok(None),
        }
    }

    /// The pictures the decoder still holds once the stream has ended.
    pub fn finish(&mut self) -> Result<Vec<Frame>, DecodeError> {
        let captured_at = self.last_capture.unwrap_or_else(Instant::now);
        let pictures = self.decoder.flush_remaining().map_err(|e| DecodeError(e.to_string()))?;
        pictures.iter().map(|picture| to_frame(picture, captured_at)).collect()
    }
}

/// A decoded picture as a tightly packed I420 frame.
fn to_frame(picture: &DecodedYUV<'_>, captured_at: Instant) -> Result<Frame, DecodeError> {
    let (width, height) = picture.dimensions();
    let (y_stride, u_stride, v_stride) = picture.strides();
    // H.264 crops 4:2:0 pictures in whole chroma samples, so both sides are even.
    let (chroma_width, chroma_height) = (width.div_ceil(2), height.div_ceil(2));
    let mut data = Vec::with_capacity(PixelFormat::I420.buffer_len(width as u32, height as u32));
    let rows = |plane: &[u8], stride: usize, width: usize, height: usize| {
        plane.chunks(stride).take(height).flat_map(move |row| &row[..width]).copied().collect::<Vec<u8>>()
    };
    data.extend(rows(picture.y(), y_stride, width, height));
    data.extend(rows(picture.u(), u_stride, chroma_width, chroma_height));
    data.extend(rows(picture.v(), v_stride, chroma_width, chroma_height));
    let frame = Frame::new(width as u32, height as u32, PixelFormat::I420, data)
        .map_err(|e| DecodeError(format!("unexpected picture layout: {e}")))?;
    Ok(frame.with_capture_time(captured_at))
}

/// A [`FrameSource`] that decodes what an [`EncodedSource`] delivers, for streams that
/// transform frames. A picture that fails to decode is skipped; the decoder picks up again
/// at the next keyframe.
#[derive(Debug)]
pub struct DecodingSource<S> {
    source: S,
    decoder: H264Decoder,
    /// The first failure to decode is logged; later ones until a picture decodes are not.
    failing: bool,
    /// Once the source has ended: the pictures the decoder still held, not yet read.
    remaining: Option<VecDeque<Frame>>,
}

impl<S: EncodedSource> DecodingSource<S> {
    /// Decodes `source`'s access units.
    pub fn new(source: S) -> Result<Self, DecodeError> {
        Ok(DecodingSource { source, decoder: H264Decoder::new()?, failing: false, remaining: None })
    }
}

impl<S: EncodedSource> FrameSource for DecodingSource<S> {
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if let Some(remaining) = &mut self.remaining {
                return Ok(remaining.pop_front());
            }
            let Some(access_unit) = self.source.read()? else {
                let held = self.decoder.finish().unwrap_or_else(|error| {
                    debug!(%error, "could not flush the decoder's last pictures");
                    Vec::new()
                });
                self.remaining = Some(held.into());
                continue;
            };
            match self.decoder.decode(&access_unit) {
                Ok(Some(frame)) => {
                    self.failing = false;
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(error) => {
                    if !self.failing {
                        debug!(%error, "skipping pictures until the next keyframe");
                    }
                    self.failing = true;
                }
            }
        }
    }

    fn prepare(&mut self) -> Result<(), SourceError> {
        self.source.prepare()
    }

    fn stop(&mut self) {
        self.source.stop();
    }

    fn frame_rate(&self) -> Option<f64> {
        self.source.frame_rate()
    }

    fn is_live(&self) -> bool {
        self.source.is_live()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::encode::{H264Encoder, H264EncoderConfig};
    use crate::source::test_pattern::{FrameCode, TestPattern};

    #[test]
    fn decodes_what_the_encoder_made_with_size_numbers_and_capture_time() {
        let pattern = TestPattern::new(320, 180, 30);
        let mut encoder = H264Encoder::new(H264EncoderConfig::default()).unwrap();
        let mut decoder = H264Decoder::new().unwrap();
        for number in 0..5u64 {
            let captured_at = Instant::now();
            let encoded = encoder.encode(&pattern.render(number, captured_at), false).unwrap().unwrap();
            let frame = decoder.decode(&encoded).unwrap().expect("a picture per access unit");
            assert_eq!((frame.width(), frame.height(), frame.format()), (320, 180, PixelFormat::I420));
            assert_eq!(frame.captured_at(), captured_at);
            assert_eq!(FrameCode::read(frame.data(), 320, 320, 180), Some(number as u16));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut decoder = H264Decoder::new().unwrap();
        let garbage = EncodedFrame {
            data: vec![0, 0, 0, 1, 0x65, 0xff, 0x00, 0x13, 0x37].into(),
            keyframe: true,
            width: 0,
            height: 0,
            captured_at: Instant::now(),
        };
        // Either refused or no picture: both leave the decoder usable.
        assert!(!matches!(decoder.decode(&garbage), Ok(Some(_))));
    }
}
