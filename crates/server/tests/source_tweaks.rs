//! vidgear's source tweaks: `resolution`, `framerate`, `colorspace` and `time_delay`, seen
//! by a decoding viewer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, builder, exclusive, fps};
use serde_json::json;
use webgear_rtc::Options;

fn options(map: serde_json::Value) -> Options {
    let mut options = Options::default();
    let warnings = options.apply_map(map.as_object().unwrap());
    assert!(warnings.is_empty(), "{warnings:?}");
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_and_framerate_shape_the_source() {
    let _lock = exclusive().await;
    let server = TestServer::start_with(builder(options(
        json!({"resolution": [640, 360], "framerate": 15, "frame_size_reduction": 0}),
    )))
    .await;
    let (mut viewer, first) = server.playing_viewer().await;
    assert_eq!((first.width, first.height), (640, 360));
    let window = Duration::from_secs(2);
    let rate = fps(&viewer.frames_during(window).await, window);
    assert!((12.0..=18.0).contains(&rate), "asked for 15 fps, decoded {rate:.1}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gray_colorspace_drops_the_colour() {
    let _lock = exclusive().await;
    for (colorspace, gray) in [(None, false), (Some("COLOR_BGR2GRAY"), true)] {
        let mut map = json!({});
        if let Some(colorspace) = colorspace {
            map["colorspace"] = json!(colorspace);
        }
        let server = TestServer::start_with(builder(options(map))).await;
        let (mut viewer, _) = server.playing_viewer().await;
        let frames = viewer.frames_during(Duration::from_millis(500)).await;
        assert!(!frames.is_empty());
        for frame in frames {
            assert_eq!(frame.chroma_range <= 8, gray, "{colorspace:?}: {frame:?}");
            assert!(frame.number.is_some(), "the brightness, and the frame code, survive");
        }
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_delay_waits_before_the_first_frame_and_never_delays_stopping() {
    let _lock = exclusive().await;
    let started = Instant::now();
    let server = TestServer::start_with(builder(options(json!({"time_delay": 1.5})))).await;
    let mut viewer = webgear_testkit::Viewer::connect(&server.url("/offer")).await.unwrap();
    let first = viewer.next_frame(Duration::from_secs(4)).await.expect("frames after the delay");
    assert!(first.arrived_at - started >= Duration::from_millis(1500), "a frame came before the delay ended");
    server.stop().await;

    let long = TestServer::start_with(builder(options(json!({"time_delay": 3600})))).await;
    let stopping = Instant::now();
    long.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(5), "stopping waited for the delay");
}
