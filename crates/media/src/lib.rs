//! Media for webgear-rtc: raw frames, the sources that produce them, the transforms applied
//! before encoding, and the codecs.
//!
//! Everything here is behind blocking, synchronous interfaces with no knowledge of WebRTC
//! or HTTP: a stream's capture thread calls [`source::FrameSource::read`] (or
//! [`source::EncodedSource::read`] for H.264 that is passed through), runs the [`transform`]s and
//! hands the result to an [`encode`]r. The server crate owns the stream threads and the
//! WebRTC networking; a source that reads a network protocol (RTSP) runs its own reader
//! thread inside.

pub mod decode;
mod draw;
pub mod encode;
pub mod frame;
pub mod source;
pub mod transform;
