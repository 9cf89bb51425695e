//! The `webgear-rtc` binary as a user runs it: options reach the stream, bad flags and
//! sources fail with a clear message, and SIGINT/SIGTERM shut down cleanly with a viewer
//! connected.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use webgear_testkit::Viewer;

const BIN: &str = env!("CARGO_BIN_EXE_webgear-rtc");

/// A running server process and the HTTP address it announced.
struct Server {
    child: Child,
    base_url: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("HOME", scratch_home())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(start) = line.find("open http://") {
                    let url = line[start + 5..].split_whitespace().next().unwrap().trim_end_matches('/').to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        let base_url = rx.recv_timeout(Duration::from_secs(20)).expect("the server announces its URL");
        Server { child, base_url }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([format!("-{name}"), self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the server did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn shuts_down_cleanly_on(signal: &str) {
    let server = Server::start(&[]);
    let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    server.signal(signal);
    let status = server.wait(Duration::from_secs(10));
    assert!(status.success(), "exit status after SIG{signal}: {status}");
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_with_a_viewer_connected() {
    shuts_down_cleanly_on("TERM").await;
}

#[tokio::test]
async fn sigint_shuts_down_cleanly_with_a_viewer_connected() {
    shuts_down_cleanly_on("INT").await;
}

#[tokio::test]
async fn options_map_reaches_the_stream() {
    let server = Server::start(&["--options", r#"{"frame_size_reduction": 50}"#]);
    let mut viewer = Viewer::connect(&format!("{}/offer", server.base_url)).await.unwrap();
    let frame = viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    assert_eq!((frame.width, frame.height), (640, 360));
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(10)).success());
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
