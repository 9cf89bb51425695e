//! Holds many viewers against any server speaking WebGear_RTC's `/offer` (or WHEP, with
//! `--whep`) and reports what they experience, without decoding (see
//! `webgear_testkit::load`).
//!
//! `webgear-load --url http://127.0.0.1:8000 --viewers 100 --ramp 50 --seconds 10` joins
//! 100 viewers at 50 a second, lets them settle, measures every one for 10 s, and prints a
//! summary (and, with `--json`, one JSON line for scripts). With `--server-pid` it also
//! reports the server's CPU per viewer-second and memory per viewer over the window, and
//! with `--metrics` the server's capture-to-send latency from its `/metrics`. It always
//! reports its own CPU over the window: on the server's machine, what it took from it.
//! With `--decode N`, N of the viewers (spread through the joins) decode every picture
//! as a player does, and report what they decoded.
//!
//! The viewers receive on the address this machine reaches the server from, so the server
//! may run on another machine (`--url http://192.168.1.20:8000`; `--server-pid` and its
//! figures then do not apply).

use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use webgear_testkit::load::{
    DecodedReport, LoadReport, Reception, Window, make_room_for, percentile, watch, watch_decoding,
};
use webgear_testkit::server_side::{ProcessSample, histogram_buckets, quantile_between};
use webgear_testkit::{Endpoint, ViewerError};

#[derive(Parser)]
#[command(about)]
struct Args {
    /// The server's base URL; offers go to `<url>/offer` (or `<url>/whep`).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Join by WHEP (`POST <url>/whep`) instead of WebGear_RTC's `/offer`.
    #[arg(long)]
    whep: bool,
    /// The WHEP bearer token, if the server wants one.
    #[arg(long, requires = "whep")]
    token: Option<String>,
    /// How many viewers to hold.
    #[arg(long, default_value_t = 10)]
    viewers: usize,
    /// Viewers joined per second.
    #[arg(long, default_value_t = 50.0)]
    ramp: f64,
    /// Seconds to wait after the last join before measuring.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A viewer counts as served at full rate at this many frames per second or more.
    #[arg(long, default_value_t = 29.0)]
    full_fps: f64,
    /// Count RTP from its clear headers instead of decrypting it through the WebRTC stack:
    /// half the CPU, so more viewers fit beside the server; nothing lost is asked for
    /// again, so loss is what the network lost.
    #[arg(long)]
    headers_only: bool,
    /// Of the viewers, this many (spread through the joins) decode every picture with
    /// OpenH264, as a player does, each at the cost of a decoder on this machine; they
    /// report the pictures they decoded per second and when they showed the first.
    #[arg(long, default_value_t = 0)]
    decode: usize,
    /// Print one JSON line with the summary as well.
    #[arg(long)]
    json: bool,
    /// The server's process id, to read its CPU time and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Read the server's capture-to-send histograms from `<url>/metrics`.
    #[arg(long)]
    metrics: bool,
}

/// What the machine looked like at one moment of the window.
#[derive(Debug, Default)]
struct Reading {
    server: Option<ProcessSample>,
    capture_to_send: Vec<(f64, f64)>,
    capture_to_last_send: Vec<(f64, f64)>,
    /// This process.
    load_generator: Option<ProcessSample>,
}

/// Across all viewers.
#[derive(Debug, Serialize)]
struct Summary {
    viewers: usize,
    connected: usize,
    /// Turned away with `503` (the server at its viewer limit or at capacity).
    refused: usize,
    /// Failed otherwise.
    failed: usize,
    /// Viewers at `full_fps` or more with under 0.5% loss (decoding viewers: pictures
    /// decoded per second).
    full_rate: usize,
    /// From here to `megabits_per_second`, the light viewers only.
    fps_min: f64,
    fps_p50: f64,
    loss_p50: f64,
    loss_p95: f64,
    loss_max: f64,
    first_frame_ms_p50: f64,
    first_frame_ms_p95: f64,
    /// The first frame's wait up to the answer, and up to the connection (ICE and DTLS
    /// done): where a long wait went.
    answer_ms_p50: f64,
    answer_ms_p95: f64,
    connected_ms_p50: f64,
    connected_ms_p95: f64,
    /// Received by all viewers together.
    megabits_per_second: f64,
    /// Frames received by all viewers together, per second.
    frames_per_second: f64,
    /// Server CPU seconds per viewer-second over the window.
    server_cpu_per_viewer_second: Option<f64>,
    /// Server CPU milliseconds per frame a viewer received: the cost of what was delivered,
    /// comparable between servers that deliver different frame rates.
    server_cpu_ms_per_frame: Option<f64>,
    /// Server CPU over the window, as a share of one core.
    server_cpu_percent: Option<f64>,
    /// Server resident memory at the end of the window.
    server_rss_mib: Option<f64>,
    /// The load generator's own CPU over the window, as a share of one core.
    load_generator_cpu_percent: Option<f64>,
    /// Over every frame sent to every viewer.
    capture_to_send_ms_p50: Option<f64>,
    capture_to_send_ms_p99: Option<f64>,
    /// Over the last viewer each peer driver sent a frame to.
    capture_to_last_send_ms_p99: Option<f64>,
    /// Viewers that decoded every picture (`--decode`), and what they decoded.
    decoding: usize,
    decoded_fps_min: Option<f64>,
    decoded_fps_p50: Option<f64>,
    first_picture_ms_p50: Option<f64>,
    first_picture_ms_p95: Option<f64>,
    first_error: Option<String>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match make_room_for(args.viewers) {
        Ok(files) if files.now < files.needed => eprintln!(
            "warning: {} viewers need about {} open files, and this process may open {}: the last will \
             fail to join (raise the hard limit: `ulimit -Hn`)",
            args.viewers, files.needed, files.now
        ),
        Ok(files) if files.now > files.was => {
            println!("limit on open files raised from {} to {}", files.was, files.now);
        }
        Ok(_) => {}
        Err(error) => eprintln!("warning: could not raise the limit on open files: {error}"),
    }
    let base = args.url.trim_end_matches('/');
    let endpoint = if args.whep {
        Endpoint::Whep { url: format!("{base}/whep"), token: args.token.clone() }
    } else {
        Endpoint::Offer(format!("{base}/offer"))
    };
    // Looked up once: a thousand lookups of a name, blocking inside the joins, would delay them.
    let local_ip = match endpoint.local_ip() {
        Ok(ip) => ip,
        Err(error) => {
            eprintln!("error: no address of this machine reaches {}: {error}", endpoint.url());
            std::process::exit(2);
        }
    };
    let schedule = Schedule::new(Instant::now(), &args);
    let window = schedule.window;
    let reception = if args.headers_only { Reception::HeadersOnly } else { Reception::Full };
    let readings = tokio::spawn(read_machine(args.url.clone(), args.server_pid, args.metrics, window));
    let mut light = Vec::with_capacity(args.viewers);
    let mut decoding = Vec::with_capacity(args.decode);
    for index in 0..args.viewers {
        tokio::time::sleep_until(tokio::time::Instant::from_std(schedule.join_time(index))).await;
        let endpoint = endpoint.clone();
        if schedule.decodes(index) {
            decoding.push(tokio::spawn(async move { watch_decoding(&endpoint, local_ip, window).await }));
        } else {
            light.push(tokio::spawn(async move { watch(&endpoint, local_ip, window, reception).await }));
        }
    }
    let mut failures = Failures::default();
    let reports = outcomes(light, &mut failures).await;
    let decoded = outcomes(decoding, &mut failures).await;
    let readings = readings.await.unwrap_or_default();
    let summary = summarise(&args, &reports, &decoded, failures, window, &readings);
    println!(
        "{} viewers: {} connected, {} refused (503), {} failed otherwise; {} at >= {} fps with < 0.5% loss",
        summary.viewers, summary.connected, summary.refused, summary.failed, summary.full_rate, args.full_fps
    );
    println!("fps: min {:.1}, p50 {:.1}", summary.fps_min, summary.fps_p50);
    println!("loss: p50 {:.3}%, p95 {:.3}%, max {:.3}%", summary.loss_p50, summary.loss_p95, summary.loss_max);
    println!(
        "first frame: p50 {:.0} ms, p95 {:.0} ms (answer p50 {:.0} / p95 {:.0} ms, connected p50 {:.0} / p95 {:.0} ms)",
        summary.first_frame_ms_p50,
        summary.first_frame_ms_p95,
        summary.answer_ms_p50,
        summary.answer_ms_p95,
        summary.connected_ms_p50,
        summary.connected_ms_p95
    );
    println!("received: {:.1} Mbit/s in all", summary.megabits_per_second);
    if let (Some(share), Some(per_viewer), Some(rss)) =
        (summary.server_cpu_percent, summary.server_cpu_per_viewer_second, summary.server_rss_mib)
    {
        println!("server: {share:.1}% of one core ({per_viewer:.5} CPU s per viewer-second), {rss:.0} MiB resident");
    }
    if let Some(share) = summary.load_generator_cpu_percent {
        println!("load generator: {share:.1}% of one core");
    }
    if let Some(per_frame) = summary.server_cpu_ms_per_frame {
        println!("server: {per_frame:.3} CPU ms per frame received ({:.0} frames/s in all)", summary.frames_per_second);
    }
    if let (Some(p50), Some(p99)) = (summary.capture_to_send_ms_p50, summary.capture_to_send_ms_p99) {
        println!("capture to send: p50 <= {p50:.1} ms, p99 <= {p99:.1} ms");
    }
    if let Some(p99) = summary.capture_to_last_send_ms_p99 {
        println!("capture to send to a driver's last viewer: p99 <= {p99:.1} ms");
    }
    if let (Some(fps_min), Some(fps_p50), Some(first_p50), Some(first_p95)) =
        (summary.decoded_fps_min, summary.decoded_fps_p50, summary.first_picture_ms_p50, summary.first_picture_ms_p95)
    {
        println!(
            "decoded by {} viewers: fps min {fps_min:.1}, p50 {fps_p50:.1}; first picture p50 {first_p50:.0} ms, \
             p95 {first_p95:.0} ms",
            summary.decoding
        );
    }
    if let Some(error) = &summary.first_error {
        println!("first error: {error}");
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    }
}

/// The viewers that did not watch.
#[derive(Default)]
struct Failures {
    /// Turned away with `503`: what a server at its limit is meant to do.
    refused: usize,
    /// Every failure's message, refusals included, in the order the viewers joined.
    errors: Vec<String>,
}

/// What each viewer's task ended with; what went wrong goes to `failures`.
async fn outcomes<T>(tasks: Vec<tokio::task::JoinHandle<Result<T, ViewerError>>>, failures: &mut Failures) -> Vec<T> {
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(error)) => {
                failures.refused += usize::from(matches!(error, ViewerError::Refused { .. }));
                failures.errors.push(error.to_string());
            }
            Err(error) => failures.errors.push(error.to_string()),
        }
    }
    reports
}

/// When the viewers join (evenly spaced, `--ramp` a second from the first), which of them
/// decode (`--decode`, spread through the joins), and when they are measured (`--settle`
/// seconds after the last join, for `--seconds`).
struct Schedule {
    first_join: Instant,
    interval: Duration,
    viewers: usize,
    decoding: usize,
    window: Window,
}

impl Schedule {
    fn new(first_join: Instant, args: &Args) -> Self {
        let interval = Duration::from_secs_f64(1.0 / args.ramp.max(0.1));
        let last_join = first_join + interval * u32::try_from(args.viewers.saturating_sub(1)).unwrap_or(u32::MAX);
        let start = last_join + Duration::from_secs_f64(args.settle);
        Schedule {
            first_join,
            interval,
            viewers: args.viewers,
            decoding: args.decode.min(args.viewers),
            window: Window { start, end: start + Duration::from_secs_f64(args.seconds) },
        }
    }

    /// Whether viewer `index` (from 0) decodes: `decoding` of the viewers do, evenly spread.
    fn decodes(&self, index: usize) -> bool {
        index * self.decoding % self.viewers.max(1) < self.decoding
    }

    /// When viewer `index` (from 0) joins.
    fn join_time(&self, index: usize) -> Instant {
        self.first_join + self.interval * u32::try_from(index).unwrap_or(u32::MAX)
    }
}

/// How long before the window's end the last reading is taken: viewers start leaving at
/// the end, and the server's work for them then is not part of the window.
const LAST_READING_BEFORE_END: Duration = Duration::from_millis(200);

/// Reads the server's side and this process at the start and near the end of the window.
async fn read_machine(url: String, pid: Option<u32>, metrics: bool, window: Window) -> [Reading; 2] {
    let metrics_url = format!("{}/metrics", url.trim_end_matches('/'));
    let read = || async {
        let text = if metrics {
            let text = async { reqwest::get(&metrics_url).await?.text().await };
            text.await.unwrap_or_default()
        } else {
            String::new()
        };
        Reading {
            server: pid.and_then(|pid| ProcessSample::of(pid).ok()),
            capture_to_send: histogram_buckets(&text, "webgear_capture_to_send_seconds"),
            capture_to_last_send: histogram_buckets(&text, "webgear_capture_to_last_send_seconds"),
            load_generator: ProcessSample::of(std::process::id()).ok(),
        }
    };
    tokio::time::sleep_until(window.start.into()).await;
    let first = read().await;
    tokio::time::sleep_until((window.end - LAST_READING_BEFORE_END).into()).await;
    [first, read().await]
}

/// `times` in milliseconds.
fn milliseconds(times: impl Iterator<Item = Duration>) -> Vec<f64> {
    times.map(|time| time.as_secs_f64() * 1000.0).collect()
}

fn summarise(
    args: &Args,
    reports: &[LoadReport],
    decoded: &[DecodedReport],
    failures: Failures,
    window: Window,
    [start, end]: &[Reading; 2],
) -> Summary {
    let seconds = (window.end - window.start).as_secs_f64();
    let read_over = seconds - LAST_READING_BEFORE_END.as_secs_f64();
    // CPU seconds between the readings, scaled to the whole window.
    let cpu_between = |a: Option<ProcessSample>, b: Option<ProcessSample>| {
        a.zip(b).map(|(a, b)| (b.cpu_seconds - a.cpu_seconds) * seconds / read_over)
    };
    let cpu = cpu_between(start.server, end.server);
    let latency_ms = |histogram: fn(&Reading) -> &Vec<(f64, f64)>, q: f64| {
        quantile_between(histogram(start), histogram(end), q).map(|seconds| seconds * 1000.0)
    };
    let mut fps: Vec<f64> = reports.iter().map(|r| r.fps).collect();
    let mut loss: Vec<f64> = reports.iter().map(|r| r.loss * 100.0).collect();
    let mut first_frame = milliseconds(reports.iter().filter_map(|r| r.first_frame));
    let mut answer = milliseconds(reports.iter().map(|r| r.answer));
    let mut connection = milliseconds(reports.iter().filter_map(|r| r.connected));
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let frames_per_second: f64 = fps.iter().sum();
    let connected = reports.len() + decoded.len();
    let mut decoded_fps: Vec<f64> = decoded.iter().map(|d| d.fps).collect();
    let mut first_picture = milliseconds(decoded.iter().filter_map(|d| d.first_picture));
    let decoded_percentile = |values: &mut Vec<f64>, at: f64| (!values.is_empty()).then(|| percentile(values, at));
    Summary {
        viewers: args.viewers,
        connected,
        refused: failures.refused,
        failed: failures.errors.len() - failures.refused,
        full_rate: reports.iter().filter(|r| r.fps >= args.full_fps && r.loss < 0.005).count()
            + decoded.iter().filter(|d| d.fps >= args.full_fps).count(),
        fps_min: percentile(&mut fps, 0.0),
        fps_p50: percentile(&mut fps, 0.5),
        loss_p50: percentile(&mut loss, 0.5),
        loss_p95: percentile(&mut loss, 0.95),
        loss_max: percentile(&mut loss, 1.0),
        first_frame_ms_p50: percentile(&mut first_frame, 0.5),
        first_frame_ms_p95: percentile(&mut first_frame, 0.95),
        answer_ms_p50: percentile(&mut answer, 0.5),
        answer_ms_p95: percentile(&mut answer, 0.95),
        connected_ms_p50: percentile(&mut connection, 0.5),
        connected_ms_p95: percentile(&mut connection, 0.95),
        megabits_per_second: bytes as f64 * 8.0 / 1e6 / seconds,
        frames_per_second,
        server_cpu_ms_per_frame: cpu
            .filter(|_| frames_per_second > 0.0)
            .map(|cpu| cpu * 1000.0 / (frames_per_second * seconds)),
        server_cpu_per_viewer_second: cpu.map(|cpu| cpu / (seconds * connected.max(1) as f64)),
        server_cpu_percent: cpu.map(|cpu| cpu / seconds * 100.0),
        server_rss_mib: end.server.map(|p| p.rss_bytes as f64 / (1024.0 * 1024.0)),
        load_generator_cpu_percent: cpu_between(start.load_generator, end.load_generator)
            .map(|cpu| cpu / seconds * 100.0),
        capture_to_send_ms_p50: latency_ms(|reading| &reading.capture_to_send, 0.5),
        capture_to_send_ms_p99: latency_ms(|reading| &reading.capture_to_send, 0.99),
        capture_to_last_send_ms_p99: latency_ms(|reading| &reading.capture_to_last_send, 0.99),
        decoding: decoded.len(),
        decoded_fps_min: decoded_percentile(&mut decoded_fps, 0.0),
        decoded_fps_p50: decoded_percentile(&mut decoded_fps, 0.5),
        first_picture_ms_p50: decoded_percentile(&mut first_picture, 0.5),
        first_picture_ms_p95: decoded_percentile(&mut first_picture, 0.95),
        first_error: failures.errors.into_iter().next(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_join_first_then_settle_then_are_measured() {
        let args =
            Args::parse_from(["webgear-load", "--viewers", "100", "--ramp", "50", "--settle", "3", "--seconds", "10"]);
        let now = Instant::now();
        let schedule = Schedule::new(now, &args);
        assert_eq!(schedule.join_time(0), now);
        assert_eq!(schedule.join_time(99), now + Duration::from_millis(1980));
        assert_eq!(schedule.window.start, schedule.join_time(99) + Duration::from_secs(3));
        assert_eq!(schedule.window.end, schedule.window.start + Duration::from_secs(10));
    }

    #[test]
    fn the_decoding_viewers_are_as_many_as_asked_and_spread_through_the_joins() {
        for (viewers, decode) in [(1000, 10), (7, 3), (4, 2), (5, 5), (3, 9), (10, 0), (1, 1)] {
            let args =
                Args::parse_from(["webgear-load", "--viewers", &viewers.to_string(), "--decode", &decode.to_string()]);
            let schedule = Schedule::new(Instant::now(), &args);
            let decoding: Vec<usize> = (0..viewers).filter(|&index| schedule.decodes(index)).collect();
            assert_eq!(decoding.len(), decode.min(viewers), "{viewers} viewers, {decode} decoding: {decoding:?}");
            if viewers == 1000 {
                assert_eq!(decoding, (0..10).map(|n| n * 100).collect::<Vec<_>>());
            }
        }
    }
}
