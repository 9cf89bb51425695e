//! Shared set-up for the end-to-end tests: a real server on loopback ports, and a lock so
//! tests that measure frame rates do not compete for the CPU.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicUsize, Ordering};
use str0m::Rtc;
use str0m::media::{Direction, MediaKind};
use tokio::sync::{Mutex, MutexGuard};

use webgear_media::source::test_pattern::TestPattern;
use webgear_rtc::{Builder, Options, SourceSpec, WebGearRtc};
use webgear_testkit::{DecodedFrame, Reaped, Viewer};

/// A server running on an ephemeral HTTP port, serving the router the library builds.
pub struct TestServer {
    pub app: WebGearRtc,
    pub addr: SocketAddr,
    serve: tokio::task::JoinHandle<()>,
}

impl TestServer {
    /// The test pattern with default options, its data files in a fresh folder.
    pub async fn start() -> TestServer {
        TestServer::start_with(builder(Options::default())).await
    }

    pub async fn start_with(builder: Builder) -> TestServer {
        let app = builder.build().await.expect("server builds");
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app.router();
        let serve = tokio::spawn(webgear_rtc::serve(listener, router, std::future::pending()));
        TestServer { app, addr, serve }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A viewer that has decoded its first picture (within 2 s), and that picture.
    pub async fn playing_viewer(&self) -> (Viewer, DecodedFrame) {
        let mut viewer = Viewer::connect(&self.url("/offer")).await.unwrap();
        let first = viewer.next_frame(Duration::from_secs(2)).await.expect("a picture within 2 s of the offer");
        (viewer, first)
    }

    /// Asks the server to close every viewer's connection (vidgear's `/close_connection`),
    /// checking that it agreed.
    pub async fn close_all_connections(&self) {
        let closed = reqwest::Client::new().post(self.url("/close_connection")).body("1").send().await.unwrap();
        assert_eq!(closed.text().await.unwrap(), "OK");
    }

    /// Waits until the server counts no viewer, failing with `why` if one is still counted
    /// after `within`.
    pub async fn until_no_viewers(&self, within: Duration, why: &str) {
        let deadline = tokio::time::Instant::now() + within;
        while self.app.stats().viewers > 0 {
            assert!(tokio::time::Instant::now() < deadline, "{why}: {:?}", self.app.stats());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.app.shutdown().await;
        self.serve.abort();
    }
}

/// Held by every test that streams media, so their frame rates are measured one at a time.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// Whether this test may change the machine's network (namespaces, iptables rules): as
/// root, yes. CI runs as root; elsewhere a test that needs it says so (naming `what` it
/// needs root for) and is skipped rather than failed.
pub fn may_change_the_network(what: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status.lines().any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    });
    if !root && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("skipped: {what} needs root");
        return false;
    }
    true
}

/// Asserts that frames carry strictly increasing frame numbers, at strictly increasing RTP
/// times (a player shows pictures in the order of their times).
pub fn assert_increasing(frames: &[DecodedFrame]) {
    let numbers: Vec<u16> = frames.iter().map(|f| f.number.expect("every picture carries its frame code")).collect();
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "frame numbers out of order: {numbers:?}");
    assert_times_go_forward(frames);
}

/// Asserts that frames come at strictly increasing RTP times.
pub fn assert_times_go_forward(frames: &[DecodedFrame]) {
    let times: Vec<u64> = frames.iter().map(|frame| frame.rtp_time).collect();
    assert!(times.windows(2).all(|pair| pair[0] < pair[1]), "RTP times not always forward: {times:?}");
}

/// Frames per second over a window of `window`.
pub fn fps(frames: &[DecodedFrame], window: Duration) -> f64 {
    frames.len() as f64 / window.as_secs_f64()
}

/// Every picture each viewer decodes during the same `window`, measured concurrently.
pub async fn frames_during_together(viewers: Vec<Viewer>, window: Duration) -> Vec<(Viewer, Vec<DecodedFrame>)> {
    let tasks: Vec<_> = viewers
        .into_iter()
        .map(|mut viewer| {
            tokio::spawn(async move {
                let frames = viewer.frames_during(window).await;
                (viewer, frames)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// A fresh, empty folder for one test's files.
pub fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "webgear-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sends `request` and returns the response. A server may answer a request it refuses
/// (a body over the limit) before reading it all and close the connection, so the client
/// can fail writing the rest; that is HTTP's race, not the server's failure, and the
/// request is sent again (a few times) until its answer is read.
pub async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..5 {
        let attempt = request.try_clone().expect("a request with a body in memory");
        match attempt.send().await {
            Ok(response) => return response,
            Err(error) if error.is_request() => eprintln!("sending again after: {error}"),
            Err(error) => panic!("request failed: {error}"),
        }
    }
    panic!("the server never answered the request in 5 tries");
}

/// Options from a JSON map as users write them, which must all be valid.
pub fn options(map: serde_json::Value) -> Options {
    let mut options = Options::default();
    let warnings = options.apply_map(map.as_object().unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");
    options
}

/// A test-pattern server with `options`; unless they name one, its data folder is a fresh
/// scratch folder, never the user's home.
pub fn builder(mut options: Options) -> Builder {
    if options.custom_data_location().is_none() {
        options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    }
    WebGearRtc::builder().source(SourceSpec::TestPattern).options(options)
}

/// Frames in a clip made by [`clip`]: two seconds at 30 fps.
pub const FRAMES: u64 = 60;

/// Encodes `FRAMES` test-pattern frames (640x360, 30 fps) with ffmpeg into `output`, using
/// the given ffmpeg output options.
pub fn make_media(output: &Path, output_options: &[&str]) {
    make_frames(output, FRAMES, output_options);
}

/// Encodes `frames` test-pattern frames (640x360, 30 fps) with ffmpeg into `output`, using
/// the given ffmpeg output options.
pub fn make_frames(output: &Path, frames: u64, output_options: &[&str]) {
    let pattern = TestPattern::new(640, 360, 30);
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p"])
        .args(["-s", "640x360", "-r", "30", "-i", "pipe:0"])
        .args(output_options)
        .arg(output)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed");
    let mut stdin = ffmpeg.stdin.take().unwrap();
    for number in 0..frames {
        stdin.write_all(pattern.render(number, Instant::now()).as_bytes()).unwrap();
    }
    drop(stdin);
    assert!(ffmpeg.wait().unwrap().success(), "ffmpeg made {}", output.display());
}

/// A clip made by [`make_media`] in a fresh scratch folder.
pub fn clip(name: &str, output_options: &[&str]) -> PathBuf {
    let path = scratch_dir().join(name);
    make_media(&path, output_options);
    path
}

/// ffmpeg output options for H.264 as an IP camera sends it: constrained baseline, a
/// keyframe every half second.
pub const CAMERA_H264: &[&str] =
    &["-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-g", "15", "-pix_fmt", "yuv420p"];

/// An encoder sending `clip` in real time, looped, to `url` (in the ffmpeg output
/// `format`, with `options` after it), as live encoders do.
pub fn live_sender(clip: &Path, format: &str, options: &[&str], url: &str) -> Reaped {
    Reaped(
        Command::new("ffmpeg")
            .args(["-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(clip)
            .args(["-c", "copy", "-f", format])
            .args(options)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("ffmpeg is installed"),
    )
}

/// A well-formed offer made by a real WebRTC stack, with the given transceivers. Nothing
/// answers the server's answer: its maker never connects.
pub fn offer_sdp(media: &[(MediaKind, Direction)]) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    for &(kind, direction) in media {
        change.add_media(kind, direction, None, None, None);
    }
    let (offer, _pending) = change.apply().expect("an offer with media");
    offer.to_sdp_string()
}
