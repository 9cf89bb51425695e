//! Opening a [`SourceSpec`]: as raw frames to encode, or as H.264 to send on as it is when
//! the source has H.264 that browsers can play and nothing asks to change its frames.

use std::fmt;
use std::sync::Arc;

use tracing::info;

use super::ffmpeg::{FfmpegOptions, FfmpegSource, PacedBy};
use super::ffmpeg_h264::{self, FfmpegH264Source, PendingH264, log_not_passed_through};
use super::ffmpeg_process::{self, Feed, FfmpegInput};
use super::relay::LiveRelay;
#[cfg(feature = "rtsp")]
use super::rtsp::RtspSource;
use super::test_pattern::TestPattern;
use super::{EncodedSource, FrameSource, SourceError, SourceSettings, SourceSpec, is_http};
use crate::decode::DecodingSource;

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

/// Whether `url` is read natively by the RTSP client (the `rtsp` feature); without it,
/// ffmpeg reads it like any other stream.
fn is_rtsp(url: &str) -> bool {
    cfg!(feature = "rtsp") && url.to_ascii_lowercase().starts_with("rtsp://")
}

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

impl OpenedSource {
    /// The source's nominal frame rate, if it knows it.
    pub fn frame_rate(&self) -> Option<f64> {
        match self {
            OpenedSource::Frames(source) | OpenedSource::FramesUntilH264(source, _) => source.frame_rate(),
            OpenedSource::H264(source) => source.frame_rate(),
        }
    }

    /// Releases whatever the source holds.
    pub fn stop(&mut self) {
        match self {
            OpenedSource::Frames(source) | OpenedSource::FramesUntilH264(source, _) => source.stop(),
            OpenedSource::H264(source) => source.stop(),
        }
    }

    /// Whether the source goes on whether read or not ([`FrameSource::is_live`]).
    pub fn is_live(&self) -> bool {
        match self {
            OpenedSource::Frames(source) | OpenedSource::FramesUntilH264(source, _) => source.is_live(),
            OpenedSource::H264(source) => source.is_live(),
        }
    }
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
        let probed = ffmpeg_process::probe(&input)?;
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
                match super::v4l2::V4l2Camera::open(device, settings) {
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
            #[cfg(feature = "rtsp")]
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

#[cfg(test)]
mod tests {
    use super::*;

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
