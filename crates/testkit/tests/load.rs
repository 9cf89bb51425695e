//! The load generator, run as its users run it, against a real server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use webgear_rtc::{Options, SourceSpec, WebGearRtc};

/// A server streaming the test pattern with `options` (and a data folder of its own),
/// served on loopback until dropped.
struct Server {
    app: WebGearRtc,
    url: String,
    serve: tokio::task::JoinHandle<()>,
    data: PathBuf,
}

impl Server {
    async fn start(mut options: Options) -> Server {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("webgear-load-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let data = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&data).unwrap();
        options.set("custom_data_location", &serde_json::json!(data.clone())).unwrap();
        let app = WebGearRtc::builder().source(SourceSpec::TestPattern).options(options).build().await.unwrap();
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let serve = tokio::spawn(webgear_rtc::serve(listener, app.router(), std::future::pending()));
        Server { app, url, serve, data }
    }

    /// Runs `load` (the load generator with its arguments) and returns what it printed.
    async fn run(&self, mut load: Command) -> String {
        let output = tokio::task::spawn_blocking(move || load.output().unwrap()).await.unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{said}{}", String::from_utf8_lossy(&output.stderr));
        said
    }

    async fn stop(self) {
        self.serve.abort();
        self.app.shutdown().await;
        std::fs::remove_dir_all(self.data).unwrap();
    }
}

/// Started at a low limit on open files, the load generator raises it to the hard limit
/// and holds more viewers than the low limit allows (each takes a UDP socket, and an HTTP
/// connection while it joins); left at 64 open files, 7 of 60 failed to join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_raises_its_limit_on_open_files_to_hold_its_viewers() {
    let server = Server::start(Options::default()).await;
    let mut load = Command::new("prlimit");
    load.args(["--nofile=64:4096", env!("CARGO_BIN_EXE_webgear-load"), "--url", &server.url, "--viewers", "60"]);
    load.args(["--ramp", "200", "--settle", "1", "--seconds", "1", "--headers-only"]);
    let said = server.run(load).await;
    assert!(said.contains("limit on open files raised from 64 to 4096"), "{said}");
    assert!(said.contains("60 viewers: 60 connected, 0 refused (503), 0 failed otherwise"), "{said}");
    server.stop().await;
}

/// Viewers a full server turns away with `503`, as it should, are counted apart from
/// viewers that failed: a benchmark at capacity reads "refused", not "failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_counts_the_viewers_a_full_server_refuses_apart() {
    let mut options = Options::default();
    options.set("max_viewers", &serde_json::json!(3)).unwrap();
    let server = Server::start(options).await;
    let mut load = Command::new(env!("CARGO_BIN_EXE_webgear-load"));
    load.args(["--url", &server.url, "--viewers", "5", "--ramp", "50", "--settle", "1", "--seconds", "1"]);
    load.args(["--headers-only", "--json"]);
    let said = server.run(load).await;
    assert!(said.contains("5 viewers: 3 connected, 2 refused (503), 0 failed otherwise"), "{said}");
    let summary: serde_json::Value = said.lines().find_map(|line| serde_json::from_str(line).ok()).unwrap();
    assert_eq!((summary["refused"].as_u64(), summary["failed"].as_u64()), (Some(2), Some(0)), "{summary}");
    let first_error = summary["first_error"].as_str().unwrap_or_default();
    assert!(first_error.contains("refused the viewer: 503") && first_error.contains("limit of 3"), "{first_error}");
    server.stop().await;
}
