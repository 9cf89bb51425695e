//! Running the `ffmpeg` and `ffprobe` programs on an input: what they read (a file or URL
//! they open themselves, or a live stream fed to them by a relay), the child process and
//! what it says, and what ffprobe tells of the input. The sources read through ffmpeg
//! ([`super::ffmpeg`], [`super::ffmpeg_h264`]) and the relay itself start their children
//! here.
//!
//! The child is always reaped: when the stream ends, when it fails, and when the source
//! is stopped or dropped. What ffmpeg says on stderr is kept and quoted in errors.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::connections::{LiveConnection, LiveConnections};
use super::{LIVE_STALL_TIMEOUT, SourceError, is_http};

/// Lines of ffmpeg's stderr kept for error messages.
const STDERR_LINES: usize = 20;

/// The options a relayed stream is read with: NUT, from standard input.
pub(super) const RELAYED_INPUT: [&str; 2] = ["-f", "nut"];

/// What feeds a live stream, received once, to the programs that read it (a relay).
pub(super) trait Feed: fmt::Debug + Send + Sync {
    /// The stream's URL, as the user wrote it.
    fn url(&self) -> &str;
    /// Adds a program's standard input to the readers the stream goes to.
    fn feed(&self, input: ChildStdin);
    /// Stops receiving the stream.
    fn stop(&self);
    /// Why the feed stopped, once it has and if it failed.
    fn failure(&self) -> Option<SourceError>;
}

/// What ffmpeg or ffprobe reads: a file or URL that each program opens itself, or a live
/// stream received once by a [`Feed`] (a relay) and piped to each reader.
#[derive(Debug, Clone)]
pub(super) enum FfmpegInput {
    Direct {
        spec: String,
        /// Options that go before `-i`.
        options: Vec<String>,
    },
    Relayed(Arc<dyn Feed>),
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
    use super::parse_rate;

    #[test]
    fn frame_rates_parse_from_ffprobe_fractions() {
        assert_eq!(parse_rate("30/1"), Some(30.0));
        assert!((parse_rate("30000/1001").unwrap() - 29.97).abs() < 0.01);
        assert_eq!(parse_rate("0/0"), None);
        assert_eq!(parse_rate("25"), Some(25.0));
    }
}
