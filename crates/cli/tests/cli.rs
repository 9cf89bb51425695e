//! The `webgear-rtc` binary as a user runs it: options reach the stream, bad flags and
//! sources fail with a clear message (a live stream nobody sends, after 30 s), SIGINT and
//! SIGTERM shut down cleanly (with a viewer connected, while a live stream passes through,
//! while the stream is still starting, with a client stalled mid-request), a second
//! Ctrl-C stops at once, a low limit on open files is raised, and a killed server leaves
//! no ffmpeg behind for long.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use webgear_testkit::{Reaped, Viewer, ffmpegs_reading};

const BIN: &str = env!("CARGO_BIN_EXE_webgear-rtc");

/// A running server process, the HTTP address it announced first, every URL it
/// announced, and everything it logged.
struct Server {
    /// Killed when dropped: a test that fails before stopping its server leaves none running.
    child: Reaped,
    base_url: String,
    announced: mpsc::Receiver<String>,
    log: Arc<Mutex<String>>,
    /// Taken when the server has been stopped and its whole log read.
    log_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_with_args(&[&["--host", "127.0.0.1", "--port", "0"], extra].concat())
    }

    fn start_with_args(args: &[&str]) -> Server {
        let mut command = Command::new(BIN);
        command.args(args);
        Server::run(command)
    }

    /// Runs `command`: the server, or a launcher that runs it in its own process.
    fn run(mut command: Command) -> Server {
        let mut child = command
            .env("RUST_LOG", "info")
            .env("HOME", scratch_home())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let logged = log.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(start) = line.find("open http://") {
                    let url = line[start + 5..].split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
                    let _ = tx.send(url);
                }
                let mut log = logged.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let base_url = rx.recv_timeout(Duration::from_secs(20)).expect("the server announces its URL");
        Server { child: Reaped(child), base_url, announced: rx, log, log_reader: Some(log_reader) }
    }

    /// The URLs announced after the first, until none comes for half a second.
    fn more_urls(&self) -> Vec<String> {
        std::iter::from_fn(|| self.announced.recv_timeout(Duration::from_millis(500)).ok()).collect()
    }

    /// Whether the server logs `text` within `limit`.
    fn logs_within(&self, limit: Duration, text: &str) -> bool {
        holds_within(limit, || self.log.lock().unwrap().contains(text))
    }

    /// Stops the server with the signal called `name` (`TERM`, `INT`), checks that it
    /// exits successfully within 10 s, and returns everything it logged.
    fn stop(mut self, name: &str) -> String {
        send_signal(&self.child, name);
        let exit = exit_within(&mut self.child, Duration::from_secs(10));
        self.log_reader.take().unwrap().join().unwrap();
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        let status = exit.unwrap_or_else(|| panic!("the server did not exit within 10 s of SIG{name}:\n{log}"));
        assert!(status.success(), "exit status after SIG{name}: {status}\n{log}");
        log
    }

    /// Connects to the server and sends the headers of an offer and the first byte of its
    /// body, then nothing more: a client stalled halfway through a request. Returns once
    /// the server has taken the connection: it has answered a request on a connection
    /// made after it (connections are taken in the order they come).
    fn stalled_request(&self) -> TcpStream {
        let address = self.base_url.trim_start_matches("http://");
        let mut client = TcpStream::connect(address).unwrap();
        let headers = format!("POST /offer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n");
        write!(client, "{headers}Content-Length: 100\r\n\r\n{{").unwrap();
        let mut later = TcpStream::connect(address).unwrap();
        write!(later, "GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
        let mut page = String::new();
        later.read_to_string(&mut page).unwrap();
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        client
    }
}

/// Stops `server` with `signal`, checking that it warns of nothing while shutting down.
fn stops_quietly(server: Server, signal: &str) {
    let log = server.stop(signal);
    let shutdown = log.split_once("shutting down").map_or(log.as_str(), |(_, shutdown)| shutdown);
    assert!(!shutdown.contains(" WARN ") && !shutdown.contains(" ERROR "), "while shutting down:{shutdown}");
}

async fn shuts_down_cleanly_on(signal: &str) {
    let server = Server::start(&[]);
    let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    stops_quietly(server, signal);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_with_a_viewer_connected() {
    shuts_down_cleanly_on("TERM").await;
}

#[tokio::test]
async fn sigint_shuts_down_cleanly_with_a_viewer_connected() {
    shuts_down_cleanly_on("INT").await;
}

/// A live encoder sending a test pattern's H.264 (no B-frames, a keyframe a second) to
/// `url` as MPEG-TS, until dropped.
fn live_sender(url: &str) -> Reaped {
    let picture = "testsrc2=size=320x240:rate=30";
    let encoder = ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-bf", "0", "-g", "30"];
    let sender = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-re", "-f", "lavfi", "-i", picture])
        .args(encoder)
        .args(["-f", "mpegts", &format!("{url}?pkt_size=1316")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Reaped(sender)
}

#[test]
fn a_client_stalled_halfway_through_a_request_holds_up_a_stop_by_5_s_at_most() {
    let server = Server::start(&[]);
    let _client = server.stalled_request();
    let log = server.stop("TERM");
    assert!(log.contains("HTTP requests still in progress 5s after the stop were cut off"), "{log}");
}

#[test]
fn a_second_ctrl_c_stops_at_once() {
    let mut server = Server::start(&[]);
    // Something for the first stop to wait for: its grace for requests in progress.
    let _client = server.stalled_request();
    send_signal(&server.child, "INT");
    assert!(server.logs_within(Duration::from_secs(5), "Ctrl-C again to stop at once"));
    send_signal(&server.child, "INT");
    let status = exit_within(&mut server.child, Duration::from_secs(10)).expect("the server exits");
    let log = server.log.lock().unwrap().clone();
    // A clean stop exits with 0: 130 says the second signal ended the process.
    assert_eq!(status.code(), Some(130), "{log}");
}

#[test]
fn sigterm_stops_a_live_stream_passed_through_without_calling_it_a_failure() {
    let stream = silent_udp_stream();
    let _sender = live_sender(&stream);
    let server = Server::start(&["--frame-size-reduction", "0", "--source", &stream]);
    // Decoded first while its H.264 is checked, then passed through.
    let passing_through = server.logs_within(Duration::from_secs(30), "passing the source's H.264 through");
    let log = server.log.lock().unwrap().clone();
    assert!(passing_through, "{log}");
    // Stopping ends the ffmpeg the H.264 is read from: that is no failure of the source.
    stops_quietly(server, "TERM");
}

#[tokio::test]
async fn a_low_limit_on_open_files_is_raised_so_idle_browsers_do_not_lock_viewers_out() {
    // A soft limit of 64 (Debian's usual one is 1024), with room to raise it to 4096.
    let mut command = Command::new("prlimit");
    command.args(["--nofile=64:4096", BIN, "--host", "127.0.0.1", "--port", "0"]);
    let server = Server::run(command);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap();
    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap();
    assert_eq!(open_files.split_whitespace().nth(3), Some("4096"), "soft limit raised: {open_files}");

    // Browsers keep their HTTP connection open while they watch: 200 of them, idle.
    let address = server.base_url.trim_start_matches("http://").parse().unwrap();
    let connect =
        || TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("the server takes connections");
    let _idle: Vec<TcpStream> = (0..200).map(|_| connect()).collect();
    let watching = async {
        let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
        viewer.next_frame(Duration::from_secs(3)).await
    };
    let played = tokio::time::timeout(Duration::from_secs(10), watching).await;
    assert!(played.is_ok_and(|frame| frame.is_some()), "a viewer plays beside 200 idle connections");
    server.stop("TERM");
}

#[tokio::test]
async fn options_map_reaches_the_stream() {
    let server = Server::start(&["--options", r#"{"frame_size_reduction": 50}"#]);
    let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
    let frame = viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    assert_eq!((frame.width, frame.height), (640, 360));
    server.stop("TERM");
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("NO_COLOR", "1").env("HOME", scratch_home()).output().unwrap()
}

/// A fresh home folder, so the server's data files never land in the real one.
fn scratch_home() -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("webgear-cli-home-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn bad_flags_and_sources_fail_with_a_clear_message() {
    let bad_flag = run(&["--port", "eighty"]);
    assert!(!bad_flag.status.success());
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("--port"));

    let bad_source = run(&["--source", "no-such-video.mp4", "--port", "0"]);
    assert!(!bad_source.status.success());
    assert!(String::from_utf8_lossy(&bad_source.stderr).contains("no-such-video.mp4"));

    let turn_without_credentials = run(&["--ice-server", "turn:turn.example.net", "--port", "0"]);
    assert!(!turn_without_credentials.status.success());
    let stderr = String::from_utf8_lossy(&turn_without_credentials.stderr);
    assert!(stderr.contains("turn:turn.example.net") && stderr.contains("turn_secret"), "{stderr}");

    let bad_options = run(&["--options", "[1, 2]", "--port", "0"]);
    assert!(!bad_options.status.success());
    assert!(String::from_utf8_lossy(&bad_options.stderr).contains("must be a map"));
}

#[test]
fn a_file_source_without_ffmpeg_says_what_to_install() {
    let clip = scratch_home().join("clip.mp4");
    std::fs::write(&clip, b"not really a video").unwrap();
    let output = Command::new(BIN)
        .args(["--port", "0", "--source", clip.to_str().unwrap()])
        .env("HOME", scratch_home())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("clip.mp4") && stderr.contains("apt-get install ffmpeg"), "{stderr}");
}

#[test]
fn help_explains_every_option_with_its_default_and_version_names_the_program() {
    let help = run(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--source",
        "--host",
        "--ipaddress",
        "--port",
        "--udp-port",
        "--config",
        "--options",
        "--logging",
        "--frame-size-reduction",
        "--resolution",
        "--framerate",
        "--colorspace",
        "--time-delay",
        "--stabilize",
        "--smoothing-radius",
        "--enable-infinite-frames",
        "--enable-live-broadcast",
        "--custom-data-location",
        "--overwrite-default-files",
        "--no-metrics",
        "--max-viewers",
        "--ice-server",
        "--ice-transport-policy",
        "--whep-token",
        "--host-address",
        "--public-address",
    ] {
        assert!(text.contains(flag), "--help does not mention {flag}");
    }
    for default in ["[default: testsrc]", "[default: 0.0.0.0]", "[default: 8000]", "[default: 20]", "[default: 1000]"] {
        assert!(text.contains(default), "--help does not show {default}");
    }
    let version = run(&["--version"]);
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), format!("webgear-rtc {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn vidgear_flags_and_a_config_file_reach_the_stream() {
    // vidgear's spellings: -ip, -pt, -op.
    let server = Server::start_with_args(&["-ip", "127.0.0.1", "-pt", "0", "-op", r#"{"frame_size_reduction": 50}"#]);
    let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
    let frame = viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    assert_eq!((frame.width, frame.height), (640, 360));
    server.stop("TERM");

    // A config file; a flag given beside it wins.
    let config = scratch_home().join("webgear.yaml");
    std::fs::write(&config, "host: 127.0.0.1\nport: 0\nframe_size_reduction: 75\nmax_viewers: 1\n").unwrap();
    let server = Server::start_with_args(&["--config", config.to_str().unwrap(), "--frame-size-reduction", "50"]);
    let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
    let frame = viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    assert_eq!((frame.width, frame.height), (640, 360), "the flag beat the file");
    let second = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap_err().to_string();
    assert!(second.contains("503"), "max_viewers from the file holds: {second}");
    server.stop("TERM");
}

#[test]
fn the_log_names_every_address_the_page_is_reachable_at() {
    let server = Server::start_with_args(&["--host", "0.0.0.0", "--port", "0"]);
    let mut urls = vec![server.base_url.clone()];
    urls.extend(server.more_urls());
    let port = server.base_url.rsplit(':').next().unwrap().to_owned();
    assert!(urls.contains(&format!("http://127.0.0.1:{port}")), "{urls:?}");
    let interfaces = String::from_utf8(Command::new("hostname").arg("-I").output().unwrap().stdout).unwrap();
    for ip in interfaces.split_whitespace().filter(|ip| !ip.contains(':')) {
        assert!(urls.contains(&format!("http://{ip}:{port}")), "{ip} missing from {urls:?}");
    }
    server.stop("TERM");
}

/// A live UDP stream on loopback that nobody sends to.
fn silent_udp_stream() -> String {
    format!("udp://127.0.0.1:{}", webgear_testkit::free_udp_port())
}

/// The server started on `stream`, its log going to `stdout` and errors to `stderr`.
fn server_receiving(stream: &str, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(BIN)
        .args(["--port", "0", "--source", stream])
        .env("HOME", scratch_home())
        .env("NO_COLOR", "1")
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Sends the signal called `name` (`TERM`, `INT`) to `child`.
fn send_signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([format!("-{name}"), child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// The exit status of `child` if it exits within `limit`; killed otherwise.
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let exited = holds_within(limit, || child.try_wait().unwrap().is_some());
    if !exited {
        child.kill().unwrap();
    }
    let status = child.wait().unwrap();
    exited.then_some(status)
}

/// Stops what a failed test left behind.
fn kill_ffmpegs_reading(stream: &str) {
    for pid in ffmpegs_reading(stream) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
}

/// Polls `done` every 100 ms until it holds or `limit` has passed; whether it held.
fn holds_within(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

#[test]
fn a_udp_stream_nobody_sends_fails_the_start_after_30_s_naming_it() {
    let stream = silent_udp_stream();
    let mut child = server_receiving(&stream, Stdio::null(), Stdio::piped());
    let mut stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).map(|_| text)
    });
    let ended = holds_within(Duration::from_secs(60), || child.try_wait().unwrap().is_some());
    if !ended {
        let _ = child.kill();
        kill_ffmpegs_reading(&stream);
        panic!("the server still waited for {stream} after 60 s");
    }
    assert!(!child.wait().unwrap().success());
    let stderr = said.join().unwrap().unwrap();
    assert!(stderr.contains(&stream) && stderr.contains("no data came in 30 s"), "{stderr}");
    assert!(ffmpegs_reading(&stream).is_empty(), "its ffmpeg is gone");
}

#[test]
fn a_killed_server_leaves_no_ffmpeg_holding_its_port() {
    let udp = silent_udp_stream();
    let srt_listener = format!("srt://127.0.0.1:{}?mode=listener", webgear_testkit::free_udp_port());
    let streams = [udp, srt_listener];
    let mut servers: Vec<Child> =
        streams.iter().map(|stream| server_receiving(stream, Stdio::null(), Stdio::null())).collect();
    let relays_started =
        holds_within(Duration::from_secs(10), || streams.iter().all(|stream| !ffmpegs_reading(stream).is_empty()));
    for server in &mut servers {
        server.kill().unwrap();
        server.wait().unwrap();
    }
    assert!(relays_started, "an ffmpeg receives each of {streams:?}");
    // Nobody is left to stop the ffmpeg receiving the stream, and it would only notice
    // that its output has gone when it next writes, which never comes.
    let relays_ended =
        holds_within(Duration::from_secs(60), || streams.iter().all(|stream| ffmpegs_reading(stream).is_empty()));
    let left: Vec<&String> = streams.iter().filter(|stream| !ffmpegs_reading(stream).is_empty()).collect();
    streams.iter().for_each(|stream| kill_ffmpegs_reading(stream));
    assert!(relays_ended, "the ffmpeg receiving {left:?} outlived the server by a minute");
}

#[test]
fn stopping_while_the_stream_is_still_starting_ends_the_start_and_its_ffmpeg() {
    for signal in ["INT", "TERM"] {
        // Without infinite mode the start waits up to 30 s for a UDP stream's first data.
        let stream = silent_udp_stream();
        let mut server = server_receiving(&stream, Stdio::piped(), Stdio::null());
        let receiving = holds_within(Duration::from_secs(10), || !ffmpegs_reading(&stream).is_empty());
        send_signal(&server, signal);
        let exit = exit_within(&mut server, Duration::from_secs(10));
        let mut log = String::new();
        server.stdout.take().unwrap().read_to_string(&mut log).unwrap();
        let ffmpeg_left = !ffmpegs_reading(&stream).is_empty();
        kill_ffmpegs_reading(&stream);
        assert!(receiving, "an ffmpeg receives {stream}");
        let status = exit.unwrap_or_else(|| panic!("SIG{signal} during the start ends the server at once:\n{log}"));
        assert!(status.success(), "SIG{signal} during the start is a clean stop, not {status}:\n{log}");
        assert!(log.contains("stopped while the stream was starting"), "{log}");
        assert!(!ffmpeg_left, "the ffmpeg receiving {stream} outlived the server stopped by SIG{signal}");
    }
}

#[tokio::test]
async fn stopping_while_a_live_stream_is_still_awaited_leaves_no_ffmpeg() {
    let srt_listener = format!("srt://127.0.0.1:{}?mode=listener", webgear_testkit::free_udp_port());
    // In infinite mode the server starts without the stream, its opening still waiting for
    // a caller in the background.
    let server = Server::start(&["--enable-infinite-frames", "--source", &srt_listener]);
    assert!(!ffmpegs_reading(&srt_listener).is_empty(), "an ffmpeg listens at {srt_listener}");
    server.stop("TERM");
    let left = ffmpegs_reading(&srt_listener);
    kill_ffmpegs_reading(&srt_listener);
    assert!(left.is_empty(), "the ffmpeg listening at {srt_listener} outlived the server");
}
