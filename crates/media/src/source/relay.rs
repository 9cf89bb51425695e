//! One connection to a live sender, shared by the programs that read it.
//!
//! A sender in listener mode (an SRT or RTMP encoder waiting for a caller, as OBS and
//! `ffmpeg -listen 1` do) serves one caller and stops when that caller leaves. Opening a
//! live stream takes several programs one after another: ffprobe checks it (its size, and
//! whether its H.264 can go to viewers as it is), then ffmpeg reads it. Each connecting
//! on its own, the sender would end with the first, and the stream with it. So a live
//! stream read through ffmpeg is received once, by a [`LiveRelay`]: an ffmpeg that copies
//! its video, undecoded, into NUT (ffmpeg's own container, which carries any codec and can
//! be joined at any of its syncpoints, at most a few tens of kilobytes apart). The programs
//! that check and read the stream take it from pipes, each joining when it starts (several
//! may read at once: a stream plays decoded while its H.264 is checked): each starts with
//! NUT's headers and the data since the last syncpoint, then gets what arrives, until it
//! exits. A live H.264 stream over HTTP(S) is relayed too, though its server would take
//! several connections: readers on connections of their own would not be in step (a live
//! HLS playlist starts each where its live edge is), and the switch from its decoded
//! frames to its H.264 would jump.
//!
//! The relay's ffmpeg studies the stream before passing it on, and must find its picture
//! size in that time: in MPEG-TS (UDP, SRT) only a keyframe's parameter sets tell it, so a
//! stream joined between keyframes spaced further apart than the study lasts (an encoder's
//! default is often 8 s) gives nothing to go on. ffmpeg then gives up; the relay connects
//! again, studying longer each time ([`STUDY_TIMES`]).
//!
//! A stream that has started and then brings nothing for [`LIVE_STALL_TIMEOUT`] has
//! failed (a UDP sender that stopped says nothing; a connection can hang), and so has one
//! that brings nothing in its first [`LIVE_FIRST_DATA_TIMEOUT`] (nobody sends to the UDP
//! port; no caller comes to a listener): the relay's ffmpeg is stopped, its readers see
//! their input end, and they report why. Every relay joins its source's
//! [`LiveConnections`], which the stream closes when it stops.

use std::io::{self, Read, Write};
use std::process::{ChildStdin, ChildStdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::connections::{LiveConnection, LiveConnections};
use super::ffmpeg_process::{Feed, FfmpegChild, FfmpegInput, ffmpeg_reading, open_error};
use super::{LIVE_FIRST_DATA_TIMEOUT, LIVE_STALL_TIMEOUT, SourceError};

/// NUT's syncpoint start code (NUT specification, "startcodes").
const SYNCPOINT: [u8; 8] = 0x4E4B_E4AD_EECA_4569_u64.to_be_bytes();

/// How long the relay's ffmpeg studies the stream (ffmpeg's `analyzeduration`) at each
/// try: a second finds an H.264 stream's parameters when they come in it, and a longer
/// study delays every start (over MPEG-TS ffmpeg reads for the whole time). Each failed try
/// costs its time. The second covers a keyframe every 2 s (what streaming services ask
/// encoders for), the last one every 10 s.
const STUDY_TIMES: [Duration; 4] =
    [Duration::from_secs(1), Duration::from_millis(2500), Duration::from_secs(5), Duration::from_secs(12)];

/// What ffmpeg says when its study of a stream ended without the picture size.
const SIZE_NOT_FOUND: &str = "dimensions not set";

/// Bytes asked of the relay's pipe per read.
const READ_SIZE: usize = 64 * 1024;

/// How often the watchdog looks for a stall.
const STALL_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long the relay's ffmpeg itself waits for a `udp://` stream's data or an SRT
/// listener's caller: a little longer than the watchdog's wait for the first data. If
/// this process dies without stopping the relay (SIGKILL), the relay's ffmpeg would notice
/// only at its next write, which never comes while nobody sends: it would hold the port
/// for good, and a restarted server could not bind it.
const SELF_TIMEOUT: Duration = Duration::from_secs(LIVE_FIRST_DATA_TIMEOUT.as_secs() + 5);

/// What the relay thread is waiting for, and since when.
#[derive(Debug, Clone, Copy)]
enum Awaiting {
    /// The stream's first data, since connecting.
    FirstData(Instant),
    /// More of a stream that has started.
    MoreData(Instant),
    /// Nothing: it is passing data on (a reader slow to take it is no stall).
    Nothing,
}

/// A live stream received once and handed to every reader. The relay's ffmpeg stops when
/// the relay is dropped, that is when the last reader holding it has gone.
#[derive(Debug)]
pub(super) struct LiveRelay {
    url: String,
    /// The relay's ffmpeg, its output taken by the relay thread (which starts it again
    /// when it found no picture size).
    child: Arc<Mutex<FfmpegChild>>,
    /// Set once the relay is stopped: its ffmpeg is not started again.
    stopped: Arc<AtomicBool>,
    /// Readers for the relay thread to feed, from when they come.
    readers: mpsc::Sender<ChildStdin>,
    /// Set once the relay's ffmpeg has closed its output, before the last reader's input
    /// closes.
    ended: Arc<AtomicBool>,
    /// What the relay thread is waiting for, for the watchdog.
    awaiting: Arc<Mutex<Awaiting>>,
    /// Why the watchdog gave up on the stream, once it has.
    given_up: OnceLock<String>,
}

impl LiveConnection for LiveRelay {
    fn close(&self) {
        self.stop();
    }
}

impl LiveRelay {
    /// Connects to the live stream at `url` and starts receiving its first video stream,
    /// ffmpeg given `pace` before the input (`-re` for a live HLS playlist, whose segments
    /// come whole); the connection joins `connections`. While ffmpeg finds no picture size
    /// in the stream, it is started again studying it longer ([`STUDY_TIMES`]); readers
    /// see nothing of the tries that failed.
    pub(super) fn connect(
        url: &str,
        pace: &'static [&'static str],
        connections: &LiveConnections,
    ) -> Result<Arc<LiveRelay>, SourceError> {
        let (child, output) = receive(url, pace, STUDY_TIMES[0])?;
        let child = Arc::new(Mutex::new(child));
        let stopped = Arc::new(AtomicBool::new(false));
        let retries = Retries {
            url: url.to_owned(),
            pace,
            longer: &STUDY_TIMES[1..],
            child: child.clone(),
            stopped: stopped.clone(),
        };
        let (readers, waiting) = mpsc::channel();
        let ended = Arc::new(AtomicBool::new(false));
        let awaiting = Arc::new(Mutex::new(Awaiting::FirstData(Instant::now())));
        let (relay_ended, relay_awaiting) = (ended.clone(), awaiting.clone());
        let thread_error = |error: io::Error| open_error(url, format!("could not start a thread: {error}"));
        thread::Builder::new()
            .name("ffmpeg-relay".into())
            .spawn(move || relay(output, retries, &waiting, &relay_ended, &relay_awaiting))
            .map_err(thread_error)?;
        let relay = Arc::new(LiveRelay {
            url: url.to_owned(),
            child,
            stopped,
            readers,
            ended,
            awaiting,
            given_up: OnceLock::new(),
        });
        let watched = Arc::downgrade(&relay);
        thread::Builder::new()
            .name("ffmpeg-relay-watchdog".into())
            .spawn(move || watch_for_stall(&watched))
            .map_err(thread_error)?;
        connections.add(relay.clone());
        Ok(relay)
    }
}

impl Feed for LiveRelay {
    /// The stream's URL, as the user wrote it.
    fn url(&self) -> &str {
        &self.url
    }

    /// Adds `input` to the readers the stream goes to, from the last syncpoint on, until
    /// its program exits.
    fn feed(&self, input: ChildStdin) {
        // The relay thread outlives every sender of this channel.
        let _ = self.readers.send(input);
    }

    /// Stops receiving the stream.
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).stop();
    }

    /// Why the relay's ffmpeg stopped, once it has and if it failed (it could not connect,
    /// or the sender broke off). A reader whose input ended reports this rather than its
    /// own complaint about a stream cut short.
    fn failure(&self) -> Option<SourceError> {
        if !self.ended.load(Ordering::Acquire) {
            return None;
        }
        if let Some(reason) = self.given_up.get() {
            return Some(SourceError::Read { spec: self.url.clone(), reason: reason.clone() });
        }
        let mut child = self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        child.finish().err()
    }
}

/// Starts an ffmpeg receiving the live stream at `url`, studying it for `study_time`, and
/// returns it with its output.
fn receive(url: &str, pace: &[&str], study_time: Duration) -> Result<(FfmpegChild, ChildStdout), SourceError> {
    let mut options = vec!["-analyzeduration".to_owned(), study_time.as_micros().to_string()];
    options.extend(pace.iter().map(|option| (*option).to_owned()));
    // ffmpeg's option for it, per protocol (a URL's own options still win).
    let self_timeout = if url.starts_with("udp://") {
        Some("-timeout")
    } else if url.starts_with("srt://") {
        Some("-listen_timeout")
    } else {
        None
    };
    if let Some(option) = self_timeout {
        options.extend([option.to_owned(), SELF_TIMEOUT.as_micros().to_string()]);
    }
    let input = FfmpegInput::direct(url, &options);
    let mut command = ffmpeg_reading(&input, &[]);
    command.args(["-c:v", "copy", "-flush_packets", "1", "-f", "nut", "pipe:1"]);
    let mut child = FfmpegChild::spawn(&input, command)?;
    let output = child.take_output().ok_or_else(|| open_error(url, "ffmpeg's output pipe was taken".into()))?;
    Ok((child, output))
}

/// What the relay thread needs to start the relay's ffmpeg again when it ended without
/// finding the stream's picture size.
struct Retries {
    url: String,
    pace: &'static [&'static str],
    /// The study times still to try.
    longer: &'static [Duration],
    child: Arc<Mutex<FfmpegChild>>,
    stopped: Arc<AtomicBool>,
}

impl Retries {
    /// After the relay's ffmpeg ended before passing anything on: the output of a new one
    /// studying the stream longer, if it ended for want of a picture size and the relay
    /// has not been stopped.
    fn next(&mut self) -> Option<ChildStdout> {
        let (&study_time, longer) = self.longer.split_first()?;
        let mut child = self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let failure = child.finish().err()?;
        if !matches!(&failure, SourceError::Read { reason, .. } if reason.contains(SIZE_NOT_FOUND)) {
            return None;
        }
        tracing::info!(source = self.url, ?study_time, "no picture size in the stream yet: studying it longer");
        let (next, output) = receive(&self.url, self.pace, study_time).ok()?;
        *child = next;
        self.longer = longer;
        Some(output)
    }
}

/// The watchdog thread: stops the relay's ffmpeg once the stream brings nothing in its
/// first [`LIVE_FIRST_DATA_TIMEOUT`], or, having started, for [`LIVE_STALL_TIMEOUT`].
/// Ends with the relay, or with its stream.
fn watch_for_stall(relay: &Weak<LiveRelay>) {
    loop {
        thread::sleep(STALL_CHECK_INTERVAL);
        let Some(relay) = relay.upgrade() else { return };
        if relay.ended.load(Ordering::Acquire) {
            return;
        }
        let awaiting = *relay.awaiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let reason = match awaiting {
            Awaiting::FirstData(since) if since.elapsed() >= LIVE_FIRST_DATA_TIMEOUT => format!(
                "no data came in {} s (is the sender sending to this address?)",
                LIVE_FIRST_DATA_TIMEOUT.as_secs()
            ),
            Awaiting::MoreData(since) if since.elapsed() >= LIVE_STALL_TIMEOUT => {
                format!("no data came for {} s", LIVE_STALL_TIMEOUT.as_secs())
            }
            _ => continue,
        };
        tracing::warn!(source = relay.url, "giving up on the live stream: {reason}");
        let _ = relay.given_up.set(reason);
        relay.stop();
        return;
    }
}

/// The relay thread: copies the relay's output to every reader, keeping what a new reader
/// starts with, and notes what it is waiting for. A reader slow to take the data holds up
/// the others: every reader is an ffmpeg or ffprobe that reads as fast as it comes.
fn relay(
    mut output: ChildStdout,
    mut retries: Retries,
    waiting: &mpsc::Receiver<ChildStdin>,
    ended: &AtomicBool,
    awaiting: &Mutex<Awaiting>,
) {
    let set_awaiting = |now: Awaiting| {
        *awaiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = now;
    };
    let mut started = false;
    let mut joining = JoinPoint::default();
    let mut readers: Vec<ChildStdin> = Vec::new();
    let mut buffer = vec![0; READ_SIZE];
    loop {
        while let Ok(next) = waiting.try_recv() {
            readers.extend(joining.start(next));
        }
        if started {
            set_awaiting(Awaiting::MoreData(Instant::now()));
        }
        let read = match output.read(&mut buffer) {
            Ok(read) if read > 0 => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            // Nothing passed on yet: the first tries may have found no picture size.
            Ok(_) | Err(_) => match if started { None } else { retries.next() } {
                Some(next) => {
                    output = next;
                    continue;
                }
                None => break,
            },
        };
        set_awaiting(Awaiting::Nothing);
        started = true;
        let data = &buffer[..read];
        joining.push(data);
        // A reader that has gone (ffprobe stops once it has seen enough) is dropped.
        readers.retain_mut(|input| input.write_all(data).is_ok());
    }
    ended.store(true, Ordering::Release);
    drop(readers);
    // A reader that comes after the end gets what was kept, then the end, and goes on to
    // report the relay's failure or the stream's end.
    for next in waiting {
        joining.start(next);
    }
}

/// What a reader joining the stream starts with: NUT's headers (everything before the
/// first syncpoint) and the data since the last syncpoint.
#[derive(Debug, Default)]
struct JoinPoint {
    headers: Vec<u8>,
    /// `None` until the first syncpoint.
    since_syncpoint: Option<Vec<u8>>,
}

impl JoinPoint {
    fn push(&mut self, data: &[u8]) {
        match &mut self.since_syncpoint {
            Some(kept) => {
                // A syncpoint may start in the bytes kept before this data.
                let search_from = kept.len().saturating_sub(SYNCPOINT.len() - 1);
                kept.extend_from_slice(data);
                keep_from_last_syncpoint(kept, search_from);
            }
            None => {
                self.headers.extend_from_slice(data);
                let first = self.headers.windows(SYNCPOINT.len()).position(|window| window == SYNCPOINT);
                if let Some(at) = first {
                    let mut kept = self.headers.split_off(at);
                    keep_from_last_syncpoint(&mut kept, 0);
                    self.since_syncpoint = Some(kept);
                }
            }
        }
    }

    /// Writes the join point to `input`; gives it back unless it has already gone.
    fn start<W: Write>(&self, mut input: W) -> Option<W> {
        let since = self.since_syncpoint.as_deref().unwrap_or_default();
        (input.write_all(&self.headers).is_ok() && input.write_all(since).is_ok()).then_some(input)
    }
}

/// Drops what comes before the last syncpoint that starts at `search_from` or later.
fn keep_from_last_syncpoint(kept: &mut Vec<u8>, search_from: usize) {
    let last = kept[search_from..].windows(SYNCPOINT.len()).rposition(|window| window == SYNCPOINT);
    if let Some(at) = last {
        kept.drain(..search_from + at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined_after(chunks: &[&[u8]]) -> Vec<u8> {
        let mut joining = JoinPoint::default();
        for chunk in chunks {
            joining.push(chunk);
        }
        joining.start(Vec::new()).unwrap()
    }

    #[test]
    fn a_reader_starts_with_the_headers_and_the_data_since_the_last_syncpoint() {
        let stream =
            [b"headers".as_slice(), &SYNCPOINT, b"first", &SYNCPOINT, b"second", &SYNCPOINT, b"third"].concat();
        let expected = [b"headers".as_slice(), &SYNCPOINT, b"third"].concat();
        assert_eq!(joined_after(&[&stream]), expected);
        // However the pipe cuts the stream, start codes included.
        for cut in 1..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(joined_after(&[a, b]), expected, "cut at {cut}");
        }
        let one_byte_at_a_time: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(joined_after(&one_byte_at_a_time), expected);
    }

    #[test]
    fn before_the_first_syncpoint_a_reader_gets_everything_so_far() {
        assert_eq!(joined_after(&[b"head", b"ers"]), b"headers");
        assert_eq!(joined_after(&[]), b"");
    }
}
