//! Sources read through the `ffmpeg` program: video files of any container and codec,
//! network streams (RTSP, HTTP, HLS, and live SRT, RTMP and UDP received once by a
//! relay) and image sequences. ffmpeg runs as a child process that writes raw I420
//! frames to a pipe; `ffprobe` tells the picture size and rate first.
//! ([`super::ffmpeg_h264`] runs the same kind of child to copy H.264 undecoded; both
//! start it through `ffmpeg_process`.)

use std::process::Command;
use std::time::Instant;

use super::connections::LiveConnections;
use super::ffmpeg_process::{FfmpegChild, FfmpegInput, Probed, ffmpeg_reading, open_error, probe};
use super::pace::Pacer;
use super::{FrameSource, SourceError, is_http};
use crate::frame::{Frame, PixelFormat};

/// How to read an input with ffmpeg.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct FfmpegOptions {
    /// Scale frames to this size.
    pub resolution: Option<(u32, u32)>,
    /// Output this many frames per second (dropping or repeating frames).
    pub framerate: Option<f64>,
    /// Hand out frames at the input's rate, as a file must be to play in real time: ffmpeg
    /// decodes ahead as far as its output pipe lets it, and each read waits until its frame
    /// is due. ffmpeg starts when the source is prepared or first read, and a reader that
    /// pauses finds the input where it left it. Live inputs (cameras, network streams)
    /// pace themselves, and so does an input fetched over HTTP(S) that turns out to be
    /// live: one with neither a duration nor a length (an MJPEG camera, an MPEG-TS
    /// stream), or a playlist with no duration (a live HLS playlist).
    pub realtime: bool,
    /// Options that go before `-i`, e.g. `-f image2 -pattern_type glob` for a glob.
    pub input_options: Vec<String>,
}

/// An ffmpeg child producing raw frames (started at the first read, and paced by the
/// reader, when it reads a file rather than a live input).
#[derive(Debug)]
pub struct FfmpegSource {
    child: FfmpegRun,
    paced_by: PacedBy,
    /// For an input paced by its reader ([`PacedBy::Reader`]).
    pacer: Option<Pacer>,
    width: u32,
    height: u32,
    frame_rate: f64,
}

impl FfmpegSource {
    /// Probes `input` and starts decoding it, or, read in real time
    /// ([`FfmpegOptions::realtime`]), gets ready to at the first read.
    pub fn open(input: &str, options: &FfmpegOptions) -> Result<FfmpegSource, SourceError> {
        FfmpegSource::open_input(FfmpegInput::direct(input, &options.input_options), options)
    }

    /// [`FfmpegSource::open`], with `options` but their `input_options` (`input` has its
    /// own).
    pub(super) fn open_input(input: FfmpegInput, options: &FfmpegOptions) -> Result<FfmpegSource, SourceError> {
        let probed = probe(&input)?;
        FfmpegSource::open_probed(input, &probed, options)
    }

    /// [`FfmpegSource::open_input`] for an input already probed.
    pub(super) fn open_probed(
        input: FfmpegInput,
        probed: &Probed,
        options: &FfmpegOptions,
    ) -> Result<FfmpegSource, SourceError> {
        let (width, height) = options.resolution.unwrap_or((probed.width, probed.height));
        let frame_rate = options.framerate.unwrap_or(probed.frame_rate);
        if width == 0 || height == 0 {
            return Err(open_error(input.spec(), format!("ffprobe reported a {width}x{height} picture")));
        }

        let paced_by = PacedBy::of(&input, probed, !options.realtime);
        let mut command = ffmpeg_reading(&input, &[&LOW_DELAY_DECODING[..], paced_by.input_options()].concat());
        command.args(["-vf", &format!("scale={width}:{height}")]);
        if paced_by == PacedBy::Reader || options.framerate.is_some() {
            // A constant rate, which the reader's pace assumes.
            command.args(["-r", &frame_rate.to_string()]);
        }
        command.args(RAW_FRAMES_AT_ONCE).args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"]);
        let child = FfmpegRun::start(&input, command, paced_by == PacedBy::Reader)?;
        let pacer = paced_by.pacer(frame_rate);
        tracing::debug!(input = input.spec(), width, height, frame_rate, ?paced_by, "ffmpeg ready to decode");
        Ok(FfmpegSource { child, paced_by, pacer, width, height, frame_rate })
    }

    /// The size of the frames this source produces.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Lets `connections` stop the source's ffmpeg from another thread.
    pub(super) fn joining(mut self, connections: &LiveConnections) -> Self {
        self.child.join(connections);
        self
    }
}

impl FrameSource for FfmpegSource {
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        if let Some(pacer) = &mut self.pacer {
            pacer.wait();
        }
        let len = PixelFormat::I420.buffer_len(self.width, self.height);
        let mut data = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match self.child.read(&mut data[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled < len {
            // The pipe closed (a truncated last frame is dropped).
            self.child.finish()?;
            return Ok(None);
        }
        let frame = Frame::new(self.width, self.height, PixelFormat::I420, data)?;
        Ok(Some(frame.with_capture_time(Instant::now())))
    }

    fn prepare(&mut self) -> Result<(), SourceError> {
        self.child.prepare()
    }

    fn stop(&mut self) {
        self.child.stop();
    }

    fn frame_rate(&self) -> Option<f64> {
        Some(self.frame_rate)
    }

    fn is_live(&self) -> bool {
        self.paced_by.is_live()
    }
}

/// What paces an input read through ffmpeg, and so whether it is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PacedBy {
    /// A file (local or over HTTP(S)), numbered images: ffmpeg reads ahead as far as its
    /// pipe lets it, the reader takes frames at the input's rate ([`Pacer`]), and by not
    /// reading pauses it. ffmpeg starts at the first read.
    Reader,
    /// A live stream (a camera, an RTSP, SRT, RTMP or UDP stream, an MJPEG camera or an
    /// MPEG-TS stream over HTTP): frames come as the sender sends them, and are read all
    /// along.
    Sender,
    /// A live HLS or DASH playlist, whose segments are fetched whole, seconds of video at
    /// once: ffmpeg hands out their frames at their timestamps (`-re`). Read all along too.
    Timestamps,
}

impl PacedBy {
    /// What paces `input`: its sender if `live` (known from its kind), or if it is fetched
    /// over HTTP(S) and turns out to be live. A live stream sent over HTTP has no length
    /// (ffprobe's `format.size`: the server sends no `Content-Length`, as it cannot know
    /// one) and no duration; a file has a length, and most have a duration, though some
    /// have none (an MPEG-TS recording, a WebM a browser recorded). A playlist (HLS, DASH)
    /// has a length of its own, so only its duration tells: a live one has none.
    pub(super) fn of(input: &FfmpegInput, probed: &Probed, live: bool) -> PacedBy {
        let playlist = probed.format_name.split(',').any(|name| SEGMENTED_FORMATS.contains(&name));
        let unbounded = probed.duration.is_none() && (playlist || probed.size.is_none());
        let live_over_http = is_http(input.spec()) && unbounded;
        if live_over_http && playlist {
            PacedBy::Timestamps
        } else if live || live_over_http {
            PacedBy::Sender
        } else {
            PacedBy::Reader
        }
    }

    /// Whether the input goes on whether read or not.
    pub(super) fn is_live(self) -> bool {
        self != PacedBy::Reader
    }

    /// The pace a reader must keep: the input's rate for a file, none for a live input.
    pub(super) fn pacer(self, frame_rate: f64) -> Option<Pacer> {
        (self == PacedBy::Reader).then(|| Pacer::new(frame_rate))
    }

    /// ffmpeg's options before the input for this pace.
    pub(super) fn input_options(self) -> &'static [&'static str] {
        match self {
            PacedBy::Timestamps => &["-re"],
            PacedBy::Reader | PacedBy::Sender => &[],
        }
    }
}

/// Decoder options for frames that go out as soon as they are decoded. ffmpeg's default,
/// frame threading, decodes several frames at once and holds each back until the frames
/// after it have arrived, which adds latency to a live stream, and CPU (BENCHMARKS.md,
/// "Glass-to-glass latency"). Slice threading adds no delay; it
/// still spreads a picture made of several slices over the cores. (The raw frames it
/// writes need [`RAW_FRAMES_AT_ONCE`] too.)
const LOW_DELAY_DECODING: [&str; 2] = ["-thread_type", "slice"];

/// Output options for raw frames written as soon as they are decoded. ffmpeg "encodes"
/// raw video with frame threads by default, which holds each frame back until the next
/// ones are decoded, which delays a live stream decoded and encoded again (BENCHMARKS.md,
/// "Glass-to-glass latency"). Copying a frame out needs no second
/// thread, and costs no more CPU on one.
const RAW_FRAMES_AT_ONCE: [&str; 2] = ["-threads", "1"];

/// ffmpeg's names for formats that list segments, each fetched whole: HLS and DASH. (A
/// live DASH playlist is told from a file by this, but ffmpeg 5.1 reads one badly: it
/// fetches its segments over and over.)
const SEGMENTED_FORMATS: [&str; 2] = ["hls", "dash"];

/// An ffmpeg child, running or to be started later. One that reads a file (or numbered
/// images, or a file over HTTP) is started when first read, which comes with the first
/// viewer, or, reading a file on this machine, when prepared ([`FfmpegRun::prepare`]) as
/// the stream starts; either way it does not play for nobody.
#[derive(Debug)]
pub(super) enum FfmpegRun {
    Running(FfmpegChild),
    AtFirstRead {
        input: FfmpegInput,
        command: Box<Command>,
        /// The connections to join once started.
        connections: Vec<LiveConnections>,
    },
    /// Stopped before it started.
    Stopped(FfmpegInput),
}

impl FfmpegRun {
    /// Starts `command` reading `input` now, or at the first read if `at_first_read`.
    pub(super) fn start(input: &FfmpegInput, command: Command, at_first_read: bool) -> Result<FfmpegRun, SourceError> {
        if at_first_read {
            let input = input.clone();
            return Ok(FfmpegRun::AtFirstRead { input, command: Box::new(command), connections: Vec::new() });
        }
        Ok(FfmpegRun::Running(FfmpegChild::spawn(input, command)?))
    }

    /// [`FfmpegChild::join`], from when ffmpeg runs.
    pub(super) fn join(&mut self, joined: &LiveConnections) {
        match self {
            FfmpegRun::Running(child) => child.join(joined),
            FfmpegRun::AtFirstRead { connections, .. } => connections.push(joined.clone()),
            FfmpegRun::Stopped(_) => {}
        }
    }

    /// Starts ffmpeg now if it waits for the first read and reads a file on this machine (or
    /// numbered images). It decodes ahead only as far as its pipe lets it, and then waits
    /// for the first read, which is then spared ffmpeg's start (mostly loading its
    /// libraries). One reading over HTTP(S) still waits for the first read, so
    /// that no connection is held open for nobody.
    pub(super) fn prepare(&mut self) -> Result<(), SourceError> {
        if is_http(self.spec()) {
            return Ok(());
        }
        self.started().map(drop)
    }

    /// [`FfmpegChild::read`], starting ffmpeg first if it waited for this read.
    pub(super) fn read(&mut self, buffer: &mut [u8]) -> Result<usize, SourceError> {
        match self.started()? {
            Some(child) => child.read(buffer),
            None => Ok(0),
        }
    }

    /// Starts ffmpeg if it waited for the first read; the child unless it was stopped
    /// before it started, or could not start.
    fn started(&mut self) -> Result<Option<&mut FfmpegChild>, SourceError> {
        if let FfmpegRun::AtFirstRead { input, .. } = self {
            let not_started = FfmpegRun::Stopped(input.clone());
            if let FfmpegRun::AtFirstRead { input, command, connections } = std::mem::replace(self, not_started) {
                let child = FfmpegChild::spawn(&input, *command)?;
                for joined in &connections {
                    child.join(joined);
                }
                tracing::debug!(input = input.spec(), "ffmpeg started at the first read");
                *self = FfmpegRun::Running(child);
            }
        }
        Ok(match self {
            FfmpegRun::Running(child) => Some(child),
            FfmpegRun::AtFirstRead { .. } | FfmpegRun::Stopped(_) => None,
        })
    }

    /// [`FfmpegChild::finish`]; `Ok` if ffmpeg never started.
    pub(super) fn finish(&mut self) -> Result<(), SourceError> {
        match self {
            FfmpegRun::Running(child) => child.finish(),
            FfmpegRun::AtFirstRead { .. } | FfmpegRun::Stopped(_) => Ok(()),
        }
    }

    /// [`FfmpegChild::stop`]; one that has not started never will.
    pub(super) fn stop(&mut self) {
        match self {
            FfmpegRun::Running(child) => child.stop(),
            FfmpegRun::AtFirstRead { input, .. } => *self = FfmpegRun::Stopped(input.clone()),
            FfmpegRun::Stopped(_) => {}
        }
    }

    /// The input as the user wrote it, for messages.
    pub(super) fn spec(&self) -> &str {
        match self {
            FfmpegRun::Running(child) => child.spec(),
            FfmpegRun::AtFirstRead { input, .. } | FfmpegRun::Stopped(input) => input.spec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PacedBy;
    use crate::source::ffmpeg_process::{FfmpegInput, Probed};

    #[test]
    fn what_has_neither_a_duration_nor_a_length_over_http_is_live() {
        let probed = |duration: Option<f64>, size: Option<u64>, format_name: &str| Probed {
            width: 640,
            height: 360,
            frame_rate: 30.0,
            codec: "h264".into(),
            pixel_format: "yuv420p".into(),
            duration,
            size,
            format_name: format_name.into(),
        };
        let paced_by =
            |spec: &str, probed: &Probed, live: bool| PacedBy::of(&FfmpegInput::direct(spec, &[]), probed, live);
        let mp4 = probed(Some(2.0), Some(400_000), "mov,mp4,m4a,3gp,3g2,mj2");
        assert_eq!(paced_by("clip.mp4", &mp4, false), PacedBy::Reader);
        assert_eq!(paced_by("https://x/clip.mp4", &mp4, false), PacedBy::Reader);
        // Sent without its length, a file with a duration is a file all the same.
        let mp4_unsized = probed(Some(2.0), None, "mov,mp4,m4a,3gp,3g2,mj2");
        assert_eq!(paced_by("https://x/clip.mp4", &mp4_unsized, false), PacedBy::Reader);
        // Files with a length and no duration: an MPEG-TS recording, a browser's WebM.
        assert_eq!(paced_by("http://x/rec.ts", &probed(None, Some(700_000), "mpegts"), false), PacedBy::Reader);
        assert_eq!(
            paced_by("http://x/rec.webm", &probed(None, Some(300_000), "matroska,webm"), false),
            PacedBy::Reader
        );
        // A local file with no duration (a raw H.264 stream) is a file all the same.
        assert_eq!(paced_by("clip.h264", &probed(None, None, "h264"), false), PacedBy::Reader);
        assert_eq!(paced_by("http://cam/video.mjpg", &probed(None, None, "mpjpeg"), false), PacedBy::Sender);
        assert_eq!(paced_by("http://x/live.ts", &probed(None, None, "mpegts"), false), PacedBy::Sender);
        // A playlist's length is its own: its duration alone tells.
        let vod = probed(Some(60.0), Some(2_000), "hls");
        assert_eq!(paced_by("https://x/vod.m3u8", &vod, false), PacedBy::Reader);
        assert_eq!(paced_by("HTTPS://x/live.m3u8", &probed(None, Some(300), "hls"), false), PacedBy::Timestamps);
        assert_eq!(paced_by("https://x/live.mpd", &probed(None, Some(900), "dash"), false), PacedBy::Timestamps);
        // Known to be live, it is paced by its timestamps all the same.
        assert_eq!(paced_by("HTTPS://x/live.m3u8", &probed(None, Some(300), "hls"), true), PacedBy::Timestamps);
        assert_eq!(paced_by("rtmp://x/live/cam", &mp4, true), PacedBy::Sender);
        assert!(PacedBy::Timestamps.is_live() && PacedBy::Sender.is_live() && !PacedBy::Reader.is_live());
    }
}
