//! Frames cut into RTP payloads once, for every peer of a driver.
//!
//! Cutting a frame into packets (H.264 FU-A fragments, with SPS and PPS aggregated before
//! each keyframe) gives the same payloads for every viewer; only the RTP header (sequence
//! number, SSRC) and the encryption differ. Peers run str0m in RTP mode and share these
//! payloads instead of each packetizing the frame again.

use std::sync::Arc;

use str0m::RtcConfig;
use str0m::error::PacketError;
use str0m::unversioned::{H264Packetizer, Packetizer};

use crate::stream::StreamFrame;

/// The SRTP authentication tag that follows every payload (AES-256-GCM's, the largest).
const SRTP_TAG: usize = 16;

/// SRTP works on 16-byte blocks; payloads that fill whole blocks need no padding.
const SRTP_BLOCK: usize = 16;

/// A frame and its RTP payloads.
#[derive(Debug, Clone)]
pub(crate) struct RtpFrame {
    pub(crate) frame: StreamFrame,
    /// In sending order; the last one carries the marker bit.
    pub(crate) payloads: Arc<[Arc<[u8]>]>,
}

/// Cuts a stream's frames into RTP payloads, in stream order (the packetizer remembers
/// the last SPS and PPS).
pub(crate) struct FramePacketizer {
    packetizer: H264Packetizer,
    /// The largest payload: str0m's datagram size target, less the SRTP tag, rounded down
    /// to whole SRTP blocks, as str0m's own packetizing does.
    payload_size: usize,
}

impl RtpFrame {
    /// The bytes of all its payloads.
    pub(crate) fn payload_bytes(&self) -> usize {
        self.payloads.iter().map(|payload| payload.len()).sum()
    }
}

impl FramePacketizer {
    pub(crate) fn new() -> Self {
        let datagram = RtcConfig::new().mtu();
        let rtp = datagram - SRTP_TAG;
        FramePacketizer { packetizer: H264Packetizer::default(), payload_size: rtp - rtp % SRTP_BLOCK }
    }

    pub(crate) fn packetize(&mut self, frame: &StreamFrame) -> Result<RtpFrame, PacketError> {
        let payloads = self.packetizer.packetize(self.payload_size, &frame.encoded.data)?;
        Ok(RtpFrame { frame: frame.clone(), payloads: payloads.into_iter().map(Arc::from).collect() })
    }
}
