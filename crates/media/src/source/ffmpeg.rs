//! Sources read through the `ffmpeg` program: video files of any container and codec,
//! network streams (RTSP, HTTP, HLS, and live SRT, RTMP and UDP received once by a
//! relay) and image sequences. ffmpeg runs as a child process that writes raw I420
//! frames to a pipe; `ffprobe` tells the picture size and rate first.
//! ([`super::ffmpeg_h264`] runs the same kind of child to copy H.264 undecoded.)
//!
//! The child is always reaped: when the stream ends, when it fails, and when the source
//! is stopped or dropped. What ffmpeg says on stderr is kept and quoted in errors.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use super::connections::{LiveConnection, LiveConnections};
use super::pace::Pacer;
use super::relay::{LiveRelay, RELAYED_INPUT};
use super::{FrameSource, LIVE_STALL_TIMEOUT, SourceError, is_http};
use crate::frame::{Frame, PixelFormat};

/// Lines of ffmpeg's stderr kept for error messages.
const STDERR_LINES: usize = 20;

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

/// What ffmpeg or ffprobe reads: a file or URL that each program opens itself, or a live
/// stream received once by a [`LiveRelay`] and piped to each reader.
#[derive(Debug, Clone)]
pub(super) enum FfmpegInput {
    Direct {
        spec: String,
        /// Options that go before `-i`.
        options: Vec<String>,
    },
    Relayed(Arc<LiveRelay>),
}

impl FfmpegInput {
    pub(super) fn direct(spec: &str, options: &[String]) -> FfmpegInput {
        FfmpegInput::Direct { spec: spec.to_owned(), options: options.to_vec() }
    }

    /// The input as the user wrote it, for messages.
    pub(super) fn spec(&self) -> &str {
        match self {
            FfmpegInput::Direct { spec, .. } => spec,
            FfmpegInput::Relayed(relay) => relay.url(),
        }
    }

    /// Adds the options and the `-i` that make a program read this input. A URL fetched
    /// over HTTP(S) that sends nothing for [`LIVE_STALL_TIMEOUT`] fails: ffmpeg would
    /// otherwise wait on it for good, freezing the stream (or its start). A file over
    /// HTTP(S) whose connection is cut before its end (as a web server cuts one left idle
    /// while the file paused) is asked for the rest over a new one, for a few seconds.
    fn add_to(&self, command: &mut Command) {
        match self {
            FfmpegInput::Direct { spec, options } => {
                if is_http(spec) {
                    command.args(["-rw_timeout", &LIVE_STALL_TIMEOUT.as_micros().to_string()]);
                    let give_up_after = LIVE_STALL_TIMEOUT.as_secs().to_string();
                    command.args(["-reconnect", "1", "-reconnect_delay_max", &give_up_after]);
                }
                command.args(options).arg("-i").arg(spec)
            }
            FfmpegInput::Relayed(_) => command.args(RELAYED_INPUT).args(["-i", "pipe:0"]),
        };
    }

    /// Starts `command` (running `program`), a relayed stream fed to its standard input.
    fn spawn(&self, program: &'static str, command: &mut Command) -> Result<Child, SourceError> {
        let relay = match self {
            FfmpegInput::Direct { .. } => None,
            FfmpegInput::Relayed(relay) => Some(relay),
        };
        command.stdin(if relay.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = command.spawn().map_err(|error| program_error(program, self.spec(), error))?;
        if let (Some(relay), Some(stdin)) = (relay, child.stdin.take()) {
            relay.feed(stdin);
        }
        Ok(child)
    }

    /// Why the relay feeding this input stopped, once it has and if it failed: the cause
    /// when a program reading it finds its input cut short.
    fn relay_failure(&self) -> Option<SourceError> {
        match self {
            FfmpegInput::Direct { .. } => None,
            FfmpegInput::Relayed(relay) => relay.failure(),
        }
    }
}

/// Decoder options for frames that go out as soon as they are decoded. ffmpeg's default,
/// frame threading, decodes several frames at once and holds each back until the frames
/// after it have arrived: on two cores 70–120 ms more glass-to-glass latency for a live
/// stream, and more CPU, measured (`BENCHMARKS.md`). Slice threading adds no delay; it
/// still spreads a picture made of several slices over the cores. (The raw frames it
/// writes need [`RAW_FRAMES_AT_ONCE`] too.)
const LOW_DELAY_DECODING: [&str; 2] = ["-thread_type", "slice"];

/// Output options for raw frames written as soon as they are decoded. ffmpeg "encodes"
/// raw video with frame threads by default, which holds each frame back until the next
/// ones are decoded: a live stream decoded and encoded again reached the viewer 67 ms
/// later on two cores, measured (`BENCHMARKS.md`). Copying a frame out needs no second
/// thread, and costs no more CPU on one.
const RAW_FRAMES_AT_ONCE: [&str; 2] = ["-threads", "1"];

/// ffmpeg's names for formats that list segments, each fetched whole: HLS and DASH. (A
/// live DASH playlist is told from a file by this, but ffmpeg 5.1 reads one badly: it
/// fetches its segments over and over.)
const SEGMENTED_FORMATS: [&str; 2] = ["hls", "dash"];

/// An `ffmpeg` command reading the first video stream of `input` as fast as its output is
/// read, without audio or subtitles, with `options` before the input's own; the caller
/// adds the output.
pub(super) fn ffmpeg_reading(input: &FfmpegInput, options: &[&str]) -> Command {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
    command.args(options);
    input.add_to(&mut command);
    command.args(["-map", "0:v:0", "-an", "-sn", "-dn"]);
    command
}

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
    /// for the first read, which is then spared ffmpeg's start (some 100 ms, most of it
    /// loading its libraries). One reading over HTTP(S) still waits for the first read, so
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

/// A running ffmpeg child writing to a pipe, with what it says on stderr kept for errors.
/// The child is reaped when stopped or dropped, or when the [`LiveConnections`] it joined
/// are closed.
#[derive(Debug)]
pub(super) struct FfmpegChild {
    input: FfmpegInput,
    child: Arc<Process>,
    /// `None` once taken by [`FfmpegChild::take_output`].
    stdout: Option<ChildStdout>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl FfmpegChild {
    /// Starts `command` reading `input`, its output piped.
    pub(super) fn spawn(input: &FfmpegInput, mut command: Command) -> Result<FfmpegChild, SourceError> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = input.spawn("ffmpeg", &mut command)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            reap(&mut child);
            return Err(open_error(input.spec(), "ffmpeg's output pipes were not created".into()));
        };
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let kept = lines.clone();
        let stderr_reader = thread::Builder::new()
            .name("ffmpeg-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if kept.len() == STDERR_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            })
            .map_err(|error| {
                reap(&mut child);
                open_error(input.spec(), format!("could not start a thread: {error}"))
            })?;
        Ok(FfmpegChild {
            input: input.clone(),
            child: Arc::new(Process(Mutex::new(child))),
            stdout: Some(stdout),
            stderr: lines,
            stderr_reader: Some(stderr_reader),
        })
    }

    /// Lets `connections` stop ffmpeg from another thread (the stream stopping while its
    /// input hangs): its reader then sees the pipe close.
    pub(super) fn join(&self, connections: &LiveConnections) {
        connections.add(self.child.clone());
    }

    /// Takes ffmpeg's output pipe, for a reader of its own.
    pub(super) fn take_output(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Reads what ffmpeg wrote next into `buffer`; 0 once the pipe has closed.
    pub(super) fn read(&mut self, buffer: &mut [u8]) -> Result<usize, SourceError> {
        let Some(stdout) = &mut self.stdout else { return Ok(0) };
        loop {
            match stdout.read(buffer) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(read_error(self.input.spec(), error.to_string())),
            }
        }
    }

    /// The input as the user wrote it, for messages.
    pub(super) fn spec(&self) -> &str {
        self.input.spec()
    }

    /// After the pipe closed: `Ok` when ffmpeg exited cleanly (the input ended), the
    /// failure in ffmpeg's words otherwise, or the relay's when it fed ffmpeg and failed.
    pub(super) fn finish(&mut self) -> Result<(), SourceError> {
        let status = self.child.wait().map_err(|error| read_error(self.input.spec(), error.to_string()))?;
        if let Some(failure) = self.input.relay_failure() {
            return Err(failure);
        }
        if status.success() {
            return Ok(());
        }
        let said = self.stderr_tail();
        Err(read_error(self.input.spec(), format!("ffmpeg stopped ({status}): {said}")))
    }

    /// Stops ffmpeg, and the relay feeding it if any: a sender that takes one caller is
    /// free for the next connection at once.
    pub(super) fn stop(&mut self) {
        self.child.reap();
        if let FfmpegInput::Relayed(relay) = &self.input {
            relay.stop();
        }
    }

    /// What ffmpeg has said on stderr lately.
    fn stderr_tail(&mut self) -> String {
        // The reader thread ends with the child's stderr; joining it makes the tail complete.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let lines = self.stderr.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.iter().map(String::as_str).collect::<Vec<_>>().join("; ")
    }
}

impl Drop for FfmpegChild {
    fn drop(&mut self) {
        self.child.reap();
    }
}

/// An ffmpeg process, shared by its reader and whoever may stop it from another thread.
#[derive(Debug)]
struct Process(Mutex<Child>);

impl Process {
    fn lock(&self) -> std::sync::MutexGuard<'_, Child> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait(&self) -> io::Result<std::process::ExitStatus> {
        self.lock().wait()
    }

    fn reap(&self) {
        reap(&mut self.lock());
    }
}

impl LiveConnection for Process {
    fn close(&self) {
        self.reap();
    }
}

/// Kills the child if it still runs, and collects its exit status either way.
fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// What ffprobe says about an input's first video stream.
pub(super) struct Probed {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) frame_rate: f64,
    /// ffmpeg's name for the codec, e.g. `h264`.
    pub(super) codec: String,
    /// ffmpeg's name for the pixel format, e.g. `yuv420p`.
    pub(super) pixel_format: String,
    /// The input's length in seconds; `None` for a stream that goes on (or one whose
    /// length cannot be told).
    pub(super) duration: Option<f64>,
    /// The input's size in bytes; `None` for a stream that goes on, or one fetched over
    /// HTTP(S) without a `Content-Length`.
    pub(super) size: Option<u64>,
    /// ffmpeg's names for the input's format, e.g. `mov,mp4,m4a,3gp,3g2,mj2` or `hls`.
    pub(super) format_name: String,
}

/// The stream entries [`probe`] reads, for callers that ask ffprobe for more in one run.
pub(super) const STREAM_ENTRIES: &str =
    "stream=width,height,avg_frame_rate,r_frame_rate,codec_name,pix_fmt:format=duration,size,format_name";

pub(super) fn probe(input: &FfmpegInput) -> Result<Probed, SourceError> {
    let json = ffprobe(input, &["-show_entries", STREAM_ENTRIES])?;
    Probed::from_json(input.spec(), &json)
}

impl Probed {
    /// Reads the first stream of an ffprobe answer that showed [`STREAM_ENTRIES`].
    pub(super) fn from_json(input: &str, json: &serde_json::Value) -> Result<Probed, SourceError> {
        let Some(stream) = json["streams"].get(0) else {
            return Err(open_error(input, "it has no video stream".into()));
        };
        let side = |key: &str| stream[key].as_u64().and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
        let text = |key: &str| stream[key].as_str().unwrap_or_default().to_owned();
        let rate = ["avg_frame_rate", "r_frame_rate"]
            .into_iter()
            .filter_map(|key| stream[key].as_str().and_then(parse_rate))
            .next()
            .unwrap_or(30.0);
        let format = &json["format"];
        Ok(Probed {
            width: side("width"),
            height: side("height"),
            frame_rate: rate,
            codec: text("codec_name"),
            pixel_format: text("pix_fmt"),
            duration: format["duration"].as_str().and_then(|text| text.parse().ok()),
            size: format["size"].as_str().and_then(|text| text.parse().ok()),
            format_name: format["format_name"].as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// Runs ffprobe on the first video stream of `input` with `args` (what to show) and
/// returns its JSON answer.
pub(super) fn ffprobe(input: &FfmpegInput, args: &[&str]) -> Result<serde_json::Value, SourceError> {
    let mut command = Command::new("ffprobe");
    command.args(["-v", "error", "-select_streams", "v:0"]).args(args).args(["-of", "json"]);
    input.add_to(&mut command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = input
        .spawn("ffprobe", &mut command)?
        .wait_with_output()
        .map_err(|error| program_error("ffprobe", input.spec(), error))?;
    if !output.status.success()
        && let Some(failure) = input.relay_failure()
    {
        return Err(failure);
    }
    let input = input.spec();
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().replace('\n', "; ");
        return Err(open_error(
            input,
            if said.is_empty() { format!("ffprobe failed ({})", output.status) } else { said },
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|error| open_error(input, format!("unreadable ffprobe output: {error}")))
}

/// Parses ffprobe's `30000/1001` form; `0/0` (unknown) is `None`.
fn parse_rate(text: &str) -> Option<f64> {
    let (numerator, denominator) = text.split_once('/').unwrap_or((text, "1"));
    let rate = numerator.parse::<f64>().ok()? / denominator.parse::<f64>().ok()?;
    (rate.is_finite() && rate >= 1.0).then_some(rate)
}

fn program_error(program: &'static str, input: &str, error: io::Error) -> SourceError {
    if error.kind() == io::ErrorKind::NotFound {
        SourceError::MissingProgram { program, spec: input.to_owned() }
    } else {
        open_error(input, format!("could not run {program}: {error}"))
    }
}

pub(super) fn open_error(input: &str, reason: String) -> SourceError {
    SourceError::Open { spec: input.to_owned(), reason }
}

pub(super) fn read_error(input: &str, reason: String) -> SourceError {
    SourceError::Read { spec: input.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::{FfmpegInput, PacedBy, Probed, parse_rate};

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

    #[test]
    fn frame_rates_parse_from_ffprobe_fractions() {
        assert_eq!(parse_rate("30/1"), Some(30.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97).abs() < 0.01);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("25"), Some(25.0));
    }
}
