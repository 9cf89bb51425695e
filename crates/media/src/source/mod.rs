//! Frame sources: anything that yields raw frames, one after another, from a blocking
//! `read`. A stream's capture thread owns exactly one source.
//!
//! [`SourceSpec`] is what a user writes (`--source`, the `source` option) and knows how to
//! open itself; each kind of source lives in its own module.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::decode::DecodingSource;
use crate::encode::EncodedFrame;
use crate::frame::Frame;
pub use connections::LiveConnections;
use ffmpeg::{FfmpegInput, PacedBy};
use relay::LiveRelay;

mod connections;
pub mod ffmpeg;
pub mod ffmpeg_h264;
mod pace;
mod relay;
pub mod rtsp;
pub mod test_pattern;
#[cfg(all(feature = "v4l2", target_os = "linux"))]
pub mod v4l2;

pub use ffmpeg::{FfmpegOptions, FfmpegSource};
pub use ffmpeg_h264::{FfmpegH264Source, PendingH264};
pub use rtsp::RtspSource;
pub use test_pattern::{FrameCode, TestPattern};

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
/// use webgear_media::{Frame, PixelFormat, source::from_fn};
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
    /// `srt://`. `rtsp://` streams carrying H.264 are read natively ([`RtspSource`]), the
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

/// Network stream schemes whose sender sets the pace. (What is fetched over HTTP(S) may be
/// a file or a live stream: ffprobe tells, see `PacedBy`.)
const LIVE_SCHEMES: [&str; 5] = ["rtsp://", "rtsps://", "rtmp://", "udp://", "srt://"];

/// Whether `url` is a live stream by its scheme, whose sender sets the pace: reading it
/// "in real time" on top would only add latency, and lose the frames still queued when the
/// sender ends.
fn paces_itself(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    LIVE_SCHEMES.iter().any(|scheme| lower.starts_with(scheme))
}

/// Live stream schemes whose senders may take a single caller (SRT and RTMP in listener
/// mode), or keep no packets for a second one (UDP): received once through a
/// [`LiveRelay`] however many programs read them.
const RELAYED_SCHEMES: [&str; 3] = ["rtmp://", "udp://", "srt://"];

/// Whether `url` is received once, through a [`LiveRelay`].
fn is_relayed(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    RELAYED_SCHEMES.iter().any(|scheme| lower.starts_with(scheme))
}

/// Whether `url` is fetched over HTTP(S) (a file, an HLS playlist, an MJPEG camera).
fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Whether `url` is read natively by [`RtspSource`].
fn is_rtsp(url: &str) -> bool {
    url.to_ascii_lowercase().starts_with("rtsp://")
}

/// URL schemes read as network streams.
const STREAM_SCHEMES: [&str; 7] = ["rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "srt://"];

/// A source opened by [`SourceSpec::open_preferring_h264`].
pub enum OpenedSource {
    /// H.264 access units to send on as they are.
    H264(Box<dyn EncodedSource>),
    /// Raw frames, to encode.
    Frames(Box<dyn FrameSource>),
    /// A live stream's raw frames, to encode while its H.264 is checked, and its H.264 to
    /// send on as it is from the keyframe at which it is ready, if it passes.
    FramesUntilH264(Box<dyn FrameSource>, PendingH264),
}

impl fmt::Debug for OpenedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenedSource::H264(_) => "OpenedSource::H264",
            OpenedSource::Frames(_) => "OpenedSource::Frames",
            OpenedSource::FramesUntilH264(..) => "OpenedSource::FramesUntilH264",
        })
    }
}

impl SourceSpec {
    /// Opens the source as H.264 to send on as it is when it can be
    /// ([`SourceSpec::open_h264`]), as frames otherwise ([`SourceSpec::open`]). A live
    /// `udp://`, `srt://` or `rtmp://` stream, or a live H.264 stream over HTTP(S) (see
    /// `PacedBy::of`), whose check takes seconds, opens as frames at once while its
    /// H.264 is checked in the background ([`OpenedSource::FramesUntilH264`]); it is
    /// connected to once for all.
    pub fn open_preferring_h264(&self, settings: &SourceSettings) -> Result<OpenedSource, SourceError> {
        let SourceSpec::Url(url) = self else { return self.open_h264_or_frames(settings) };
        if settings.changes_frames() {
            return Ok(OpenedSource::Frames(self.open(settings)?));
        }
        if is_http(url) {
            return self.open_over_http(url, settings);
        }
        if !is_relayed(url) {
            return self.open_h264_or_frames(settings);
        }
        let relay = LiveRelay::connect(url, &[], &settings.connections)?;
        self.open_relayed(relay, settings)
    }

    /// A live stream received by `relay`, opened as frames while its H.264 is checked.
    fn open_relayed(&self, relay: Arc<LiveRelay>, settings: &SourceSettings) -> Result<OpenedSource, SourceError> {
        let checked = PendingH264::check(FfmpegInput::Relayed(relay.clone()));
        match checked.and_then(|h264| Ok((self.open_from(settings, Some(relay.clone()))?, h264))) {
            Ok((frames, h264)) => Ok(OpenedSource::FramesUntilH264(frames, h264)),
            Err(error) => {
                // The check reads the stream too: a sender taking one caller is free at once.
                relay.stop();
                Err(error)
            }
        }
    }

    /// [`SourceSpec::open_preferring_h264`] for `url`, fetched over HTTP(S). Whether it is
    /// a file or a live stream is known once it is probed for its frames. A file's H.264
    /// is checked then, on its first 10 s (its ffmpeg for frames waits for the first read:
    /// unused, it costs nothing). A live stream's is checked only if it is H.264: an MJPEG
    /// camera plays at once, and is not asked for a second connection (some serve one at
    /// a time). A live H.264 stream is received once, through a relay, and plays decoded
    /// while checked: two readers on connections of their own would not be in step (a
    /// live HLS playlist starts each one where its live edge is), and the switch from one
    /// to the other would jump.
    fn open_over_http(&self, url: &str, settings: &SourceSettings) -> Result<OpenedSource, SourceError> {
        let input = FfmpegInput::direct(url, &[]);
        let probed = ffmpeg::probe(&input)?;
        let paced_by = PacedBy::of(&input, &probed, false);
        if paced_by.is_live() && probed.codec == "h264" {
            let relay = LiveRelay::connect(url, paced_by.input_options(), &settings.connections)?;
            return self.open_relayed(relay, settings);
        }
        let frames = FfmpegSource::open_probed(input, &probed, &ffmpeg_options(settings))?;
        let frames = Box::new(frames.joining(&settings.connections));
        if paced_by.is_live() {
            log_not_passed_through(url, &ffmpeg_h264::not_h264(&probed.codec));
            return Ok(OpenedSource::Frames(frames));
        }
        Ok(match self.open_h264(settings)? {
            Some(h264) => OpenedSource::H264(h264),
            None => OpenedSource::Frames(frames),
        })
    }

    /// [`SourceSpec::open_h264`], or [`SourceSpec::open`] when that cannot.
    fn open_h264_or_frames(&self, settings: &SourceSettings) -> Result<OpenedSource, SourceError> {
        match self.open_h264(settings)? {
            Some(h264) => Ok(OpenedSource::H264(h264)),
            None => Ok(OpenedSource::Frames(self.open(settings)?)),
        }
    }

    /// Opens the source for reading, with the size and rate `settings` ask for.
    pub fn open(&self, settings: &SourceSettings) -> Result<Box<dyn FrameSource>, SourceError> {
        self.open_from(settings, None)
    }

    /// [`SourceSpec::open`], reading a relayed live stream from `relay` when given.
    fn open_from(
        &self,
        settings: &SourceSettings,
        relay: Option<Arc<LiveRelay>>,
    ) -> Result<Box<dyn FrameSource>, SourceError> {
        let realtime = ffmpeg_options(settings);
        match self {
            SourceSpec::TestPattern => {
                let (width, height) = settings.resolution.unwrap_or((1280, 720));
                let rate = settings.framerate.map_or(30, |rate| rate.round() as u32);
                Ok(Box::new(TestPattern::new(width, height, rate)))
            }
            SourceSpec::File(path) => {
                let spec = path.display().to_string();
                if !path.is_file() {
                    return Err(SourceError::Open { spec, reason: "no such file".into() });
                }
                Ok(Box::new(FfmpegSource::open(&spec, &realtime)?))
            }
            SourceSpec::Url(url) => {
                // RTSP's H.264 is read natively and decoded here; ffmpeg reads the rest.
                if is_rtsp(url)
                    && let Some(h264) = self.open_h264(settings)?
                {
                    let decoding = DecodingSource::new(h264)
                        .map_err(|e| SourceError::Open { spec: url.clone(), reason: e.to_string() })?;
                    return Ok(Box::new(decoding));
                }
                let relay = match relay {
                    None if is_relayed(url) => Some(LiveRelay::connect(url, &[], &settings.connections)?),
                    relay => relay,
                };
                if let Some(relay) = relay {
                    let options = FfmpegOptions { realtime: false, ..realtime };
                    return Ok(Box::new(FfmpegSource::open_input(FfmpegInput::Relayed(relay), &options)?));
                }
                let options = FfmpegOptions { realtime: !paces_itself(url), ..realtime };
                // A stream that hangs (no timeout stops ffmpeg) must not hold up the stop.
                Ok(Box::new(FfmpegSource::open(url, &options)?.joining(&settings.connections)))
            }
            SourceSpec::Camera(device) => {
                let spec = device.display().to_string();
                if !device.exists() {
                    return Err(SourceError::Open { spec, reason: "no such camera device".into() });
                }
                #[cfg(all(feature = "v4l2", target_os = "linux"))]
                match v4l2::V4l2Camera::open(device, settings) {
                    Ok(camera) => return Ok(Box::new(camera)),
                    Err(SourceError::Unsupported { reason, .. }) => {
                        info!(source = %spec, %reason, "reading the camera through ffmpeg instead");
                    }
                    Err(error) => return Err(error),
                }
                let live =
                    FfmpegOptions { realtime: false, input_options: vec!["-f".into(), "v4l2".into()], ..realtime };
                Ok(Box::new(FfmpegSource::open(&spec, &live)?.joining(&settings.connections)))
            }
            SourceSpec::Screen(display) => {
                let display = match display.clone().or_else(|| std::env::var("DISPLAY").ok()) {
                    Some(display) if !display.is_empty() => display,
                    _ => {
                        return Err(SourceError::Open {
                            spec: self.to_string(),
                            reason: "no X display: set DISPLAY or write screen:DISPLAY".into(),
                        });
                    }
                };
                let mut input_options = vec!["-f".to_owned(), "x11grab".to_owned()];
                if let Some(rate) = settings.framerate {
                    input_options.extend(["-framerate".to_owned(), rate.to_string()]);
                }
                let live = FfmpegOptions { realtime: false, input_options, ..realtime };
                Ok(Box::new(FfmpegSource::open(&display, &live)?.joining(&settings.connections)))
            }
            SourceSpec::ImageSequence(pattern) => {
                let mut input_options = vec!["-f".to_owned(), "image2".to_owned()];
                if pattern.contains('*') {
                    input_options.extend(["-pattern_type".to_owned(), "glob".to_owned()]);
                }
                Ok(Box::new(FfmpegSource::open(pattern, &FfmpegOptions { input_options, ..realtime })?))
            }
        }
    }
}

impl SourceSpec {
    /// Opens the source as H.264 access units to send on as they are, when it delivers
    /// H.264 that browsers can play (an `rtsp://` stream natively; through ffmpeg a file,
    /// local or over HTTP(S), or a live `udp://`, `srt://` or `rtmp://` stream, without
    /// B-frames and with frequent keyframes, see [`ffmpeg_h264`]) and `settings` ask for
    /// no change of size or rate. `Ok(None)` when it cannot: read it with
    /// [`SourceSpec::open`] instead, or call [`SourceSpec::open_preferring_h264`] for both,
    /// which connects to a live stream only once (a sender taking one caller would refuse
    /// the second connection).
    pub fn open_h264(&self, settings: &SourceSettings) -> Result<Option<Box<dyn EncodedSource>>, SourceError> {
        if settings.changes_frames() {
            return Ok(None);
        }
        let opened = match self {
            SourceSpec::Url(url) if is_rtsp(url) => {
                RtspSource::open(url, &settings.connections).map(|source| Box::new(source) as Box<dyn EncodedSource>)
            }
            SourceSpec::Url(url) if is_relayed(url) => {
                let relay = LiveRelay::connect(url, &[], &settings.connections)?;
                FfmpegH264Source::open_input(FfmpegInput::Relayed(relay), true).map(|source| Box::new(source) as _)
            }
            SourceSpec::Url(url) => FfmpegH264Source::open(url, paces_itself(url))
                .map(|source| Box::new(source.joining(&settings.connections)) as _),
            // A missing file is for `open` to report.
            SourceSpec::File(path) if path.is_file() => {
                FfmpegH264Source::open(&path.display().to_string(), false).map(|source| Box::new(source) as _)
            }
            _ => return Ok(None),
        };
        match opened {
            Ok(source) => Ok(Some(source)),
            Err(SourceError::Unsupported { reason, .. }) => {
                log_not_passed_through(&self.to_string(), &reason);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}

/// ffmpeg's options for a source opened with `settings`, read in real time (unless it
/// turns out to be live).
fn ffmpeg_options(settings: &SourceSettings) -> FfmpegOptions {
    FfmpegOptions {
        realtime: true,
        resolution: settings.resolution,
        framerate: settings.framerate,
        ..FfmpegOptions::default()
    }
}

/// Says why a source's H.264 is decoded and encoded rather than passed through.
fn log_not_passed_through(source: &str, reason: &str) {
    info!(source, reason, "decoding and encoding the source: its H.264 cannot go to viewers as it is");
}

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

    #[test]
    fn streams_of_live_schemes_pace_themselves() {
        for url in ["rtsp://cam.local/stream", "SRT://0.0.0.0:9000", "udp://@:5000", "rtmp://x/live/cam"] {
            assert!(paces_itself(url), "{url} is live");
        }
        // Live or not by what it serves (see `PacedBy`).
        assert!(!paces_itself("https://x/clip.mp4"));
    }

    #[test]
    fn a_missing_camera_fails_at_open_naming_it() {
        let error = "7".parse::<SourceSpec>().unwrap().open(&SourceSettings::default()).err().unwrap().to_string();
        assert_eq!(error, "cannot open source \"/dev/video7\": no such camera device");
    }

    #[test]
    fn a_missing_file_fails_at_open_naming_it() {
        let error =
            SourceSpec::File("no-such-clip.mp4".into()).open(&SourceSettings::default()).err().unwrap().to_string();
        assert_eq!(error, "cannot open source \"no-such-clip.mp4\": no such file");
    }
}
