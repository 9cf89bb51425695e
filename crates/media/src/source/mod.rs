//! Frame sources: anything that yields raw frames (or H.264 to pass through), one after
//! another, from a blocking `read`. A stream's capture thread owns exactly one source.
//!
//! [`SourceSpec`] is what a user writes (`--source`, the `source` option); [`open`] opens
//! it as the right kind of source, and each kind lives in its own module.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::encode::EncodedFrame;
use crate::frame::Frame;
use connections::LiveConnections;

pub mod connections;
pub mod ffmpeg;
pub mod ffmpeg_h264;
mod ffmpeg_process;
pub mod open;
mod pace;
mod relay;
#[cfg(feature = "rtsp")]
pub mod rtsp;
pub mod test_pattern;
#[cfg(all(feature = "v4l2", target_os = "linux"))]
pub mod v4l2;

/// A producer of raw frames, read by a stream's capture thread (vidgear's `custom_stream`
/// contract: `read()` gives the next frame or the end, `stop()` releases the source).
pub trait FrameSource: Send {
    /// Blocks until the next frame is available. `Ok(None)` means the source has ended.
    fn read(&mut self) -> Result<Option<Frame>, SourceError>;

    /// Gets ready to be read, without reading: called once as the stream starts playing
    /// the source, before its first read. A source that waits for its reader (see
    /// [`FrameSource::is_live`]) may not be read until the first viewer comes; what it
    /// starts now, that viewer does not wait for. A file's ffmpeg starts then, and decodes
    /// no further than its pipe holds. Does nothing unless a source says so; an error is
    /// the source's, as from `read`.
    fn prepare(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Releases whatever the source holds (devices, child processes). Called once, when the
    /// stream stops; `read` is not called afterwards.
    fn stop(&mut self) {}

    /// The nominal frame rate, if the source knows it.
    fn frame_rate(&self) -> Option<f64> {
        None
    }

    /// Whether the source goes on whether read or not (a camera, a live stream): it is then
    /// read all along, and what comes while nobody watches is dropped. A source that is not
    /// live (a file, the test pattern) waits for its reader, and is read only while someone
    /// watches. Not live unless a source says so.
    fn is_live(&self) -> bool {
        false
    }
}

/// A producer of frames that are already H.264 (an IP camera's RTSP stream): the stream
/// can send them on to viewers as they are, with no decoding and no encoding.
pub trait EncodedSource: Send {
    /// Blocks until the next access unit is available (Annex B, SPS/PPS before each
    /// keyframe). `Ok(None)` means the source has ended.
    fn read(&mut self) -> Result<Option<EncodedFrame>, SourceError>;

    /// Gets ready to be read, without reading, as [`FrameSource::prepare`].
    fn prepare(&mut self) -> Result<(), SourceError> {
        Ok(())
    }

    /// Releases whatever the source holds. Called once, when the stream stops.
    fn stop(&mut self) {}

    /// The nominal frame rate, if the source knows it.
    fn frame_rate(&self) -> Option<f64> {
        None
    }

    /// Whether the source goes on whether read or not, as [`FrameSource::is_live`].
    fn is_live(&self) -> bool {
        false
    }
}

impl<S: EncodedSource + ?Sized> EncodedSource for Box<S> {
    fn read(&mut self) -> Result<Option<EncodedFrame>, SourceError> {
        (**self).read()
    }

    fn prepare(&mut self) -> Result<(), SourceError> {
        (**self).prepare()
    }

    fn stop(&mut self) {
        (**self).stop();
    }

    fn frame_rate(&self) -> Option<f64> {
        (**self).frame_rate()
    }

    fn is_live(&self) -> bool {
        (**self).is_live()
    }
}

/// A [`FrameSource`] made from a closure, for frame producers that need no type of their
/// own. See [`from_fn`].
pub struct FnSource<F> {
    read: F,
    frame_rate: Option<f64>,
}

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSource").field("frame_rate", &self.frame_rate).finish_non_exhaustive()
    }
}

/// A source that calls `read` for every frame: `Ok(Some(frame))` is the next frame,
/// `Ok(None)` the end. `read` paces the stream (it blocks until its frame is due);
/// `frame_rate` is the rate it delivers, if known.
///
/// ```
/// use webgear_media::{frame::{Frame, PixelFormat}, source::from_fn};
///
/// let mut shade = 0u8;
/// let source = from_fn(Some(30.0), move || {
///     std::thread::sleep(std::time::Duration::from_millis(33));
///     shade = shade.wrapping_add(1);
///     Ok(Some(Frame::new(320, 240, PixelFormat::Gray, vec![shade; 320 * 240])?))
/// });
/// # drop(source);
/// ```
pub fn from_fn<F>(frame_rate: Option<f64>, read: F) -> FnSource<F>
where
    F: FnMut() -> Result<Option<Frame>, SourceError> + Send,
{
    FnSource { read, frame_rate }
}

impl<F> FrameSource for FnSource<F>
where
    F: FnMut() -> Result<Option<Frame>, SourceError> + Send,
{
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        (self.read)()
    }

    fn frame_rate(&self) -> Option<f64> {
        self.frame_rate
    }
}

/// Why a source could not be opened or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The source string names a kind of source this build cannot open.
    #[error("cannot open source {spec:?}: {reason}")]
    Unsupported {
        /// The source as the user wrote it.
        spec: String,
        /// What is missing.
        reason: String,
    },
    /// A frame the source produced is unusable.
    #[error("source produced an unusable frame: {0}")]
    BadFrame(#[from] crate::frame::FrameError),
    /// A program the source needs is not installed.
    #[error(
        "cannot open source {spec:?}: the `{program}` program is not installed (on Debian: apt-get install ffmpeg)"
    )]
    MissingProgram {
        /// The program that could not be run.
        program: &'static str,
        /// The source as the user wrote it.
        spec: String,
    },
    /// The source could not be opened.
    #[error("cannot open source {spec:?}: {reason}")]
    Open {
        /// The source as the user wrote it.
        spec: String,
        /// Why, in the words of whatever failed.
        reason: String,
    },
    /// The source failed while streaming.
    #[error("source {spec:?} failed: {reason}")]
    Read {
        /// The source as the user wrote it.
        spec: String,
        /// Why, in the words of whatever failed.
        reason: String,
    },
}

/// What to stream, as a user writes it on the command line or in options, parsed the way
/// vidgear users write it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceSpec {
    /// The built-in moving test pattern (`testsrc`), 1280x720 at 30 fps.
    TestPattern,
    /// A video file of any container and codec ffmpeg reads.
    File(PathBuf),
    /// A network stream: `rtsp://`, `rtsps://`, `rtmp://`, `http(s)://` (files, HLS), `udp://`,
    /// `srt://`. `rtsp://` streams carrying H.264 are read natively ([`rtsp::RtspSource`]), the
    /// rest through ffmpeg; a live `srt://`, `rtmp://` or `udp://` stream over one
    /// connection, received by a `LiveRelay`.
    Url(String),
    /// Numbered images (`frames/%04d.png`) or a glob (`frames/*.png`).
    ImageSequence(String),
    /// A V4L2 camera: `0` is `/dev/video0`, or a device path. Read directly in YUYV or
    /// MJPEG (the `v4l2` feature, on by default), otherwise through ffmpeg.
    Camera(PathBuf),
    /// The X11 screen: `screen` captures `$DISPLAY`, `screen:DISPLAY` another display
    /// (e.g. `screen::1`). Read through ffmpeg.
    Screen(Option<String>),
}

/// vidgear's source tweaks that apply to every kind of source, and the live connections
/// made for the source.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SourceSettings {
    /// Deliver frames of this size (scaled by the source).
    pub resolution: Option<(u32, u32)>,
    /// Deliver this many frames per second.
    pub framerate: Option<f64>,
    /// The live streams and devices opened with these settings connect to (a relay, an
    /// RTSP session, an ffmpeg reading a URL, a camera or the screen), for closing them all
    /// when the source is no longer wanted (a clone of the settings shares them).
    pub connections: LiveConnections,
}

impl SourceSettings {
    /// Whether the frames delivered differ from the source's own (then its H.264 cannot
    /// be sent on as it is).
    fn changes_frames(&self) -> bool {
        self.resolution.is_some() || self.framerate.is_some()
    }
}

/// A live stream (or a URL fetched over HTTP) that delivers nothing for this long, once it
/// has started, has failed: a sender that went silent without closing (UDP has no close;
/// a stalled camera or web server) would otherwise freeze every viewer on its last
/// picture for good.
const LIVE_STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A live stream received through ffmpeg that brings nothing this long after connecting
/// has failed (nobody sends to the UDP port; no caller comes to an SRT or RTMP listener):
/// the 30 s OpenCV's ffmpeg backend, which vidgear reads streams with, gives a stream to
/// open.
const LIVE_FIRST_DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether `url` is fetched over HTTP(S) (a file, an HLS playlist, an MJPEG camera).
fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// URL schemes read as network streams.
const STREAM_SCHEMES: [&str; 7] = ["rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "srt://"];

impl FromStr for SourceSpec {
    type Err = SourceError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        let source = source.trim();
        let lower = source.to_ascii_lowercase();
        if matches!(lower.as_str(), "testsrc" | "test-pattern" | "testpattern") {
            return Ok(SourceSpec::TestPattern);
        }
        if source.is_empty() {
            return Err(SourceError::Unsupported { spec: source.to_owned(), reason: "the source is empty".into() });
        }
        if let Ok(index) = source.parse::<u32>() {
            return Ok(SourceSpec::Camera(PathBuf::from(format!("/dev/video{index}"))));
        }
        if source.starts_with("/dev/video") {
            return Ok(SourceSpec::Camera(PathBuf::from(source)));
        }
        if lower == "screen" {
            return Ok(SourceSpec::Screen(None));
        }
        if let Some(display) = lower.strip_prefix("screen:").map(|_| &source["screen:".len()..]) {
            return Ok(SourceSpec::Screen(Some(display.to_owned())));
        }
        if STREAM_SCHEMES.iter().any(|scheme| lower.starts_with(scheme)) {
            return Ok(SourceSpec::Url(source.to_owned()));
        }
        if source.contains('*') || is_numbered_pattern(source) {
            return Ok(SourceSpec::ImageSequence(source.to_owned()));
        }
        Ok(SourceSpec::File(PathBuf::from(source)))
    }
}

/// Whether a path holds a printf-style number placeholder: `%d` or `%04d`.
fn is_numbered_pattern(path: &str) -> bool {
    path.match_indices('%').any(|(at, _)| {
        let rest = &path[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest[digits..].starts_with('d')
    })
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::TestPattern => f.write_str("testsrc"),
            SourceSpec::File(path) | SourceSpec::Camera(path) => write!(f, "{}", path.display()),
            SourceSpec::Screen(None) => f.write_str("screen"),
            SourceSpec::Screen(Some(display)) => write!(f, "screen:{display}"),
            SourceSpec::Url(text) | SourceSpec::ImageSequence(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_the_way_vidgear_users_write_them() {
        let parse = |text: &str| text.parse::<SourceSpec>().unwrap();
        assert_eq!(parse("testsrc"), SourceSpec::TestPattern);
        assert_eq!(parse("video.mp4"), SourceSpec::File("video.mp4".into()));
        assert_eq!(parse("rtsp://cam.local/stream"), SourceSpec::Url("rtsp://cam.local/stream".into()));
        assert_eq!(parse("HTTPS://x/live.m3u8"), SourceSpec::Url("HTTPS://x/live.m3u8".into()));
        assert_eq!(parse("frames/%04d.png"), SourceSpec::ImageSequence("frames/%04d.png".into()));
        assert_eq!(parse("frames/img%d.jpg"), SourceSpec::ImageSequence("frames/img%d.jpg".into()));
        assert_eq!(parse("frames/*.png"), SourceSpec::ImageSequence("frames/*.png".into()));
        assert_eq!(parse("100%.mp4"), SourceSpec::File("100%.mp4".into()));
        assert_eq!(parse("0"), SourceSpec::Camera("/dev/video0".into()));
        assert_eq!(parse("/dev/video2"), SourceSpec::Camera("/dev/video2".into()));
        assert_eq!(parse("screen"), SourceSpec::Screen(None));
        assert_eq!(parse("screen::1"), SourceSpec::Screen(Some(":1".into())));
    }
}
