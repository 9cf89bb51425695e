//! Measures a running server the way viewers experience it, with decoding viewers.
//!
//! - `webgear-probe joins --url http://127.0.0.1:8000 --count 20 [--watch 3]`: joins one
//!   viewer at a time and reports time to first decoded frame (from posting the offer)
//!   and, with `--watch`, the frames each decoded a second over that many seconds after
//!   its first: a joiner that cannot get the frames it is sent decodes few.
//! - `webgear-probe hold --url ... --viewers 10 --seconds 10 [--server-pid PID]`: holds N
//!   viewers, reports each one's decoded frame rate and, given the server's pid, the
//!   server's CPU use over the same window.
//! - `webgear-probe latency --url ... --send-to udp://127.0.0.1:5000?pkt_size=1316`:
//!   glass-to-glass latency of a live stream. It draws the test pattern in real time (each
//!   picture's number coded in it), has ffmpeg encode it (x264, tuned for low latency) and
//!   send it to `--send-to`, where the server reads its source; a decoding viewer then
//!   reports, for every picture, the time from its drawing to its decoding, both clocks
//!   being this process's.
//! - `webgear-probe browser --url ... --seconds 20 [--settle 5]`: headless Chromium opens
//!   the server's page and its `getStats()` is read every second: frame rate, picture
//!   height, freezes, jitter buffer, bytes. Prints each second and one JSON summary line
//!   (time to first frame, and over the seconds after `--settle`: frame rate, height,
//!   frozen share). Works on webgear-rtc's page and on WebGear_RTC's.
//! - `webgear-probe ladder-cost [--frames 300]`: the CPU time of encoding the 1280x720 test
//!   pattern at full size alone, and with the default ladder's two lower rungs (scaled down
//!   and encoded) too, as the capture thread does; no server involved.

#![allow(clippy::unwrap_used)] // a measuring tool: failing loudly is the right answer

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use webgear_media::source::FrameSource;
use webgear_media::source::test_pattern::{FrameCode, TestPattern};
use webgear_testkit::load::percentile;
use webgear_testkit::server_side::ProcessSample;
use webgear_testkit::{Browser, Reaped, Viewer};

#[derive(Parser)]
#[command(about)]
struct Args {
    /// The server's base URL; offers go to `<url>/offer`.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Time to first decoded frame over sequential joins.
    Joins {
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Seconds each viewer watches after its first frame, counting what it decodes.
        #[arg(long, default_value_t = 0)]
        watch: u64,
    },
    /// Frame rate of N concurrent viewers, and the server's CPU use meanwhile.
    Hold {
        #[arg(long, default_value_t = 1)]
        viewers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's process id, to read its CPU time from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Headless Chromium playing the server's page, its WebRTC statistics each second.
    Browser {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Seconds after the first frame left out of the summary (the start).
        #[arg(long, default_value_t = 5)]
        settle: u64,
    },
    /// The CPU cost of encoding the default ladder's three rungs against the top one alone.
    LadderCost {
        #[arg(long, default_value_t = 300)]
        frames: u32,
    },
    /// Glass-to-glass latency of a live stream this probe draws, encodes and sends.
    Latency {
        /// Where ffmpeg sends the stream, for the server to read it from there.
        #[arg(long)]
        send_to: String,
        /// ffmpeg's container for it.
        #[arg(long, default_value = "mpegts")]
        format: String,
        /// The window measured, after the viewer has played for `--settle` seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        settle: u64,
        /// How long the server may take to start playing the stream.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let offer_url = format!("{}/offer", args.url.trim_end_matches('/'));
    match args.command {
        Mode::Joins { count, watch } => joins(&offer_url, count, Duration::from_secs(watch)).await,
        Mode::Hold { viewers, seconds, server_pid } => hold(&offer_url, viewers, seconds, server_pid).await,
        Mode::Browser { seconds, settle } => browser(&args.url, seconds, settle).await,
        Mode::LadderCost { frames } => ladder_cost(frames),
        Mode::Latency { send_to, format, seconds, settle, wait } => {
            latency(&offer_url, &LiveSender::start(&send_to, &format), seconds, settle, wait).await;
        }
    }
}

async fn joins(offer_url: &str, count: usize, watch: Duration) {
    let mut millis = Vec::with_capacity(count);
    let mut rates = Vec::with_capacity(count);
    for _ in 0..count {
        let mut viewer = Viewer::connect(offer_url).await.unwrap();
        let first = viewer.next_frame(Duration::from_secs(10)).await.expect("a first frame");
        millis.push((first.arrived_at - viewer.offered_at).as_secs_f64() * 1000.0);
        if !watch.is_zero() {
            rates.push(viewer.frames_during(watch).await.len() as f64 / watch.as_secs_f64());
        }
        viewer.close().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    println!(
        "time to first decoded frame over {count} joins: p50 {:.0} ms, p95 {:.0} ms, min {:.0} ms, max {:.0} ms",
        percentile(&mut millis, 0.5),
        percentile(&mut millis, 0.95),
        percentile(&mut millis, 0.0),
        percentile(&mut millis, 1.0),
    );
    if !rates.is_empty() {
        println!(
            "decoded over the {} s after the first frame: p50 {:.1} fps, min {:.1} fps, max {:.1} fps",
            watch.as_secs(),
            percentile(&mut rates, 0.5),
            percentile(&mut rates, 0.0),
            percentile(&mut rates, 1.0),
        );
    }
}

async fn hold(offer_url: &str, count: usize, seconds: u64, server_pid: Option<u32>) {
    let mut viewers = Vec::with_capacity(count);
    for _ in 0..count {
        viewers.push(Viewer::connect(offer_url).await.unwrap());
    }
    for viewer in &mut viewers {
        viewer.next_frame(Duration::from_secs(10)).await.expect("every viewer plays");
    }
    let window = Duration::from_secs(seconds);
    let cpu_seconds = |pid: u32| ProcessSample::of(pid).unwrap().cpu_seconds;
    let cpu_before = server_pid.map(cpu_seconds);
    if count == 0 {
        tokio::time::sleep(window).await;
    }
    let tasks: Vec<_> = viewers
        .into_iter()
        .map(|mut viewer| tokio::spawn(async move { viewer.frames_during(window).await.len() }))
        .collect();
    let mut rates = Vec::with_capacity(count);
    for task in tasks {
        rates.push(task.await.unwrap() as f64 / window.as_secs_f64());
    }
    let cpu_after = server_pid.map(cpu_seconds);
    if !rates.is_empty() {
        let (slowest, median, fastest) =
            (percentile(&mut rates, 0.0), percentile(&mut rates, 0.5), percentile(&mut rates, 1.0));
        println!("{count} viewers over {seconds} s: decoded fps min {slowest:.1}, p50 {median:.1}, max {fastest:.1}");
    }
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let share = (after - before) / window.as_secs_f64() * 100.0;
        println!("server CPU with {count} viewers: {share:.1}% of one core");
    }
}

/// The page's video receiver statistics, or null before it has any. webgear-rtc's page
/// keeps its connection as `webgearRtc.peer`, WebGear_RTC's as the global `pc`.
const VIDEO_STATS: &str = r#"
    const pc = (window.webgearRtc && window.webgearRtc.peer) || window.pc;
    if (!pc) return null;
    let video = null;
    (await pc.getStats()).forEach((report) => {
        if (report.type === "inbound-rtp" && report.kind === "video") video = report;
    });
    return video && {
        fps: video.framesPerSecond || 0,
        height: video.frameHeight || 0,
        decoded: video.framesDecoded || 0,
        freezes: video.freezeCount || 0,
        frozen: video.totalFreezesDuration || 0,
        jitter_buffer: video.jitterBufferDelay || 0,
        emitted: video.jitterBufferEmittedCount || 0,
        bytes: video.bytesReceived || 0,
    };
"#;

/// One reading of [`VIDEO_STATS`].
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
struct VideoStats {
    fps: f64,
    height: u32,
    decoded: u64,
    freezes: u64,
    frozen: f64,
    jitter_buffer: f64,
    emitted: u64,
    bytes: u64,
}

async fn video_stats(browser: &Browser) -> Option<VideoStats> {
    serde_json::from_value(browser.eval(VIDEO_STATS).await.ok()?).ok()
}

async fn browser(url: &str, seconds: u64, settle: u64) {
    let browser = Browser::launch().await.expect("headless Chromium (chromium and chromium-driver)");
    let opened = Instant::now();
    browser.goto(url).await.expect("the page opens");
    let first_frame = loop {
        if video_stats(&browser).await.is_some_and(|stats| stats.decoded > 0) {
            break opened.elapsed();
        }
        assert!(opened.elapsed() < Duration::from_secs(30), "no frame decoded within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("first frame decoded {:.0} ms after opening the page", first_frame.as_secs_f64() * 1000.0);
    let start = Instant::now();
    let mut readings = Vec::new();
    for second in 1..=seconds {
        tokio::time::sleep_until((start + Duration::from_secs(second)).into()).await;
        let stats = video_stats(&browser).await.unwrap_or_default();
        println!(
            "{second:>3} s: {:>5.1} fps, {:>4} lines, {} freezes ({:.2} s), {:.0} kbit/s so far",
            stats.fps,
            stats.height,
            stats.freezes,
            stats.frozen,
            stats.bytes as f64 * 8.0 / 1000.0 / start.elapsed().as_secs_f64()
        );
        readings.push(stats);
    }
    let _ = browser.close().await;
    let (base, after) = match usize::try_from(settle).ok().filter(|&settle| settle > 0 && settle < readings.len()) {
        Some(settle) => (readings[settle - 1], &readings[settle..]),
        None => (VideoStats::default(), &readings[..]),
    };
    let (Some(last), false) = (after.last(), after.is_empty()) else {
        return;
    };
    let watched = after.len() as f64;
    let mut heights: Vec<f64> = after.iter().map(|stats| f64::from(stats.height)).collect();
    let summary = serde_json::json!({
        "first_frame_ms": (first_frame.as_secs_f64() * 1000.0).round(),
        "fps": (last.decoded - base.decoded) as f64 / watched,
        "height_p50": percentile(&mut heights, 0.5),
        "height_min": percentile(&mut heights, 0.0),
        "heights": readings.iter().map(|stats| stats.height).collect::<Vec<_>>(),
        "freezes": last.freezes - base.freezes,
        "frozen_share": (last.frozen - base.frozen) / watched,
        "jitter_buffer_ms": 1000.0 * (last.jitter_buffer - base.jitter_buffer) / (last.emitted - base.emitted).max(1) as f64,
        "kbps": (last.bytes - base.bytes) as f64 * 8.0 / 1000.0 / watched,
    });
    println!("{summary}");
}

/// Encodes `frames` test-pattern pictures (1280x720, 30 fps) at each rung of the default
/// ladder for 2 Mbit/s, halving each from the one above as the capture thread does, and prints the
/// CPU time per picture of the top rung alone and of all three.
fn ladder_cost(frames: u32) {
    use webgear_media::encode::{H264Encoder, H264EncoderConfig};
    use webgear_media::transform::halve;
    // The bitrates of the server's default ladder for 2 Mbit/s
    // (`webgear_rtc::Ladder::default_for`), each rung half the size of the one above.
    let ladder = [2_000_000, 600_000, 200_000];
    let pattern = TestPattern::new(1280, 720, 30);
    let start = Instant::now();
    let pictures: Vec<_> =
        (0..frames).map(|n| pattern.render(u64::from(n), start + Duration::from_millis(33) * n)).collect();
    // This process does nothing else meanwhile.
    let thread_cpu = || ProcessSample::of(std::process::id()).unwrap().cpu_seconds;
    let mut cost = Vec::new();
    for rungs in [1, ladder.len()] {
        let mut encoders: Vec<H264Encoder> = ladder[..rungs]
            .iter()
            .map(|&bitrate| H264Encoder::new(H264EncoderConfig { bitrate_bps: bitrate, frame_rate: 30.0 }).unwrap())
            .collect();
        let before = thread_cpu();
        for picture in &pictures {
            encoders[0].encode(picture, false).unwrap();
            // Each lower rung halved from the one above, as the capture thread does.
            let mut above = None;
            for encoder in &mut encoders[1..] {
                let halved = halve(above.as_ref().unwrap_or(picture));
                encoder.encode(&halved, false).unwrap();
                above = Some(halved);
            }
        }
        let per_picture = (thread_cpu() - before) / f64::from(frames) * 1000.0;
        println!(
            "{rungs} rung(s): {per_picture:.2} ms of CPU per picture ({:.1}% of a core at 30 fps)",
            per_picture * 3.0
        );
        cost.push(per_picture);
    }
    println!("the three-rung ladder costs {:.2}x the top rung alone", cost[1] / cost[0]);
}

/// The picture size and rate [`LiveSender`] draws.
const SENT_SIZE: (u32, u32) = (1280, 720);
const SENT_RATE: u32 = 30;

/// How many numbers a picture's code tells apart (they wrap after that).
const CODED_NUMBERS: usize = 1 << FrameCode::BITS;

/// Draws the test pattern in real time and pipes it to an ffmpeg that encodes it as a live
/// encoder would (x264 without B-frames or lookahead, a keyframe every 2 s, 1.5 Mbit/s) and
/// sends it on. Remembers when each picture was drawn, by the number coded in it.
struct LiveSender {
    drawn_at: Arc<Mutex<Vec<Option<Instant>>>>,
    stop: Arc<AtomicBool>,
    /// The encoding ffmpeg, held to be killed when the sender is dropped.
    _ffmpeg: Reaped,
}

impl LiveSender {
    fn start(url: &str, format: &str) -> LiveSender {
        let (width, height) = SENT_SIZE;
        let mut ffmpeg = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p"])
            .args(["-s", &format!("{width}x{height}"), "-r", &SENT_RATE.to_string(), "-i", "pipe:0"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "60"])
            .args(["-b:v", "1500k", "-maxrate", "1500k", "-bufsize", "1500k", "-pix_fmt", "yuv420p"])
            .args(["-flush_packets", "1", "-f", format, url])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg is installed");
        let mut encoder_input = ffmpeg.stdin.take().unwrap();
        let drawn_at = Arc::new(Mutex::new(vec![None; CODED_NUMBERS]));
        let stop = Arc::new(AtomicBool::new(false));
        let (drawn, stopped) = (Arc::clone(&drawn_at), Arc::clone(&stop));
        thread::spawn(move || {
            let mut pattern = TestPattern::new(width, height, SENT_RATE);
            for number in 0usize.. {
                let frame = pattern.read().unwrap().unwrap();
                drawn.lock().unwrap()[number % CODED_NUMBERS] = Some(Instant::now());
                if stopped.load(Ordering::Relaxed) || encoder_input.write_all(frame.data()).is_err() {
                    break;
                }
            }
        });
        LiveSender { drawn_at, stop, _ffmpeg: Reaped(ffmpeg) }
    }

    /// When the picture coded `number` was drawn.
    fn drawn_at(&self, number: u16) -> Option<Instant> {
        self.drawn_at.lock().unwrap()[usize::from(number)]
    }
}

impl Drop for LiveSender {
    fn drop(&mut self) {
        // The drawing thread ends; the ffmpeg is killed as its field drops.
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn latency(offer_url: &str, sender: &LiveSender, seconds: u64, settle: u64, wait: u64) {
    let give_up_at = Instant::now() + Duration::from_secs(wait);
    let mut viewer = loop {
        assert!(Instant::now() < give_up_at, "the server did not play the stream within {wait} s");
        if let Ok(mut viewer) = Viewer::connect(offer_url).await
            && viewer.next_frame(Duration::from_secs(5)).await.is_some()
        {
            break viewer;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    viewer.frames_during(Duration::from_secs(settle)).await;
    let frames = viewer.frames_during(Duration::from_secs(seconds)).await;
    let mut millis: Vec<f64> = frames
        .iter()
        .filter_map(|frame| Some((frame.arrived_at - sender.drawn_at(frame.number?)?).as_secs_f64() * 1000.0))
        .collect();
    assert!(!millis.is_empty(), "no picture carried a frame number this probe drew");
    println!(
        "glass to glass over {seconds} s: {} pictures ({:.1} a second), drawn to decoded p50 {:.0} ms, p95 {:.0} ms, \
         min {:.0} ms, max {:.0} ms",
        millis.len(),
        millis.len() as f64 / seconds as f64,
        percentile(&mut millis, 0.5),
        percentile(&mut millis, 0.95),
        percentile(&mut millis, 0.0),
        percentile(&mut millis, 1.0),
    );
}
