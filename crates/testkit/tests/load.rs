//! The load generator, run as its users run it, against a real server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::process::Command;

use webgear_rtc::{Options, SourceSpec, WebGearRtc};

/// Started at a low limit on open files, the load generator raises it to the hard limit
/// and holds more viewers than the low limit allows (each takes a UDP socket, and an HTTP
/// connection while it joins); left at 64 open files, 7 of 60 failed to join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_raises_its_limit_on_open_files_to_hold_its_viewers() {
    let mut options = Options::default();
    let data = std::env::temp_dir().join(format!("webgear-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    options.custom_data_location = Some(data.clone());
    let app = WebGearRtc::builder().source(SourceSpec::TestPattern).options(options).build().await.unwrap();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let serve = tokio::spawn(webgear_rtc::serve(listener, app.router(), std::future::pending()));

    let mut load = Command::new("prlimit");
    load.args(["--nofile=64:4096", env!("CARGO_BIN_EXE_webgear-load"), "--url", &url, "--viewers", "60"]);
    load.args(["--ramp", "200", "--settle", "1", "--seconds", "1", "--headers-only"]);
    let output = tokio::task::spawn_blocking(move || load.output().unwrap()).await.unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}{}", String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("limit on open files raised from 64 to 4096"), "{said}");
    assert!(said.contains("60 viewers: 60 connected, 0 failed"), "{said}");

    serve.abort();
    app.shutdown().await;
    std::fs::remove_dir_all(data).unwrap();
}
