//! Encoders: I420 frames in, compressed frames out. A stream runs exactly one encoder, and
//! every viewer receives its output.

use std::sync::Arc;
use std::time::Instant;

mod h264;

pub use h264::{H264Encoder, H264EncoderConfig};

/// One compressed frame, ready to packetize. Cloning is cheap: the payload is shared.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The payload: H.264 in Annex B form (start codes, SPS/PPS before each IDR).
    pub data: Arc<[u8]>,
    /// Whether a decoder can start from this frame.
    pub keyframe: bool,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// When the source captured the raw frame.
    pub captured_at: Instant,
}

/// Why an encoder could not be created or could not encode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncoderError {
    /// The codec library refused the configuration or failed on a frame.
    #[error("H.264 encoder failed while {action}: {message}")]
    H264 {
        /// What the encoder was doing.
        action: &'static str,
        /// The library's description of the failure.
        message: String,
    },
}
