//! vidgear's source tweaks: `resolution`, `framerate`, `colorspace`, `time_delay` and
//! `stabilize`, and the encoder's `bitrate`, seen by a decoding viewer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, builder, exclusive, fps, options, scratch_dir};
use serde_json::json;
use webgear_rtc::{Frame, PixelFormat, WebGearRtc, from_fn};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrate_sets_what_each_viewer_receives() {
    let _lock = exclusive().await;
    let mut received = Vec::new();
    for bitrate in ["300k", "3M"] {
        let server = TestServer::start_with(builder(options(json!({"bitrate": bitrate})))).await;
        let (mut viewer, _) = server.playing_viewer().await;
        let before = server.app.stats();
        let window = Duration::from_secs(2);
        let frames = viewer.frames_during(window).await;
        let after = server.app.stats();
        assert!(fps(&frames, window) >= 20.0, "{bitrate}: every frame still comes");
        received.push((after.bytes_sent - before.bytes_sent) as f64 * 8.0 / window.as_secs_f64());
        server.stop().await;
    }
    let [low, high] = received[..] else { unreachable!() };
    // Rate control aims at the target over about a second; a window may hold a keyframe.
    assert!((100_000.0..600_000.0).contains(&low), "300 kbit/s asked for, {low:.0} bit/s sent");
    assert!(high > 3.0 * low, "3 Mbit/s asked for, {high:.0} bit/s sent (300 kbit/s gave {low:.0})");
}

/// The bit rate holds at whatever rate frames come: a custom stream that says no frame
/// rate (so the encoder starts from 30 fps) and delivers 10 frames a second of a scene
/// that takes every bit it is given gets its `bitrate` once the encoder has seen the rate
/// frames come at. Shared among the 30 frames a second the source did not deliver, it got
/// a third of it (or what the scene takes at the coarsest quantizer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bitrate_holds_at_the_rate_frames_come() {
    let _lock = exclusive().await;
    let mut options = options(json!({"frame_size_reduction": 0, "bitrate": "3M"}));
    options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    let slow_camera = from_fn(None, shaking_camera(Duration::from_millis(100)));
    let server = TestServer::start_with(WebGearRtc::builder().custom_stream(slow_camera).options(options)).await;
    let (mut viewer, _) = server.playing_viewer().await;
    // The encoder counts frames for 2 s, then starts again at their rate; rate control
    // settles within about a second.
    viewer.frames_during(Duration::from_secs(3)).await;
    let before = server.app.stats();
    let window = Duration::from_secs(3);
    let rate = fps(&viewer.frames_during(window).await, window);
    let after = server.app.stats();
    assert!((8.0..=12.0).contains(&rate), "the camera sends 10 fps, {rate:.1} decoded");
    let sent = (after.bytes_sent - before.bytes_sent) as f64 * 8.0 / window.as_secs_f64();
    assert!((2_200_000.0..3_900_000.0).contains(&sent), "3 Mbit/s asked for, {sent:.0} bit/s sent at 10 fps");
    server.stop().await;
}

/// A camera that shakes: views of a still, finely textured scene, each moved by up to 10
/// pixels either way, one every `period`.
fn shaking_camera(period: Duration) -> impl FnMut() -> Result<Option<Frame>, webgear_rtc::SourceError> + Send {
    const WIDTH: usize = 640;
    const HEIGHT: usize = 360;
    const SHAKE: usize = 10;
    let (scene_width, scene_height) = (WIDTH + 2 * SHAKE, HEIGHT + 2 * SHAKE);
    let mut random = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    let columns = scene_width / 3 + 1;
    let blocks: Vec<u8> = (0..columns * (scene_height / 3 + 1)).map(|_| 16 + (next() % 220) as u8).collect();
    let scene: Vec<u8> = (0..scene_width * scene_height)
        .map(|i| blocks[(i / scene_width / 3) * columns + i % scene_width / 3])
        .collect();
    let started = Instant::now();
    let mut count = 0u32;
    move || {
        let (x, y) = ((next() % (2 * SHAKE as u64 + 1)) as usize, (next() % (2 * SHAKE as u64 + 1)) as usize);
        let luma = (0..HEIGHT).flat_map(|row| &scene[(y + row) * scene_width + x..][..WIDTH]).copied();
        let data: Vec<u8> = luma.chain(std::iter::repeat_n(128, 2 * (WIDTH / 2) * (HEIGHT / 2))).collect();
        count += 1;
        std::thread::sleep((started + period * count).saturating_duration_since(Instant::now()));
        Ok(Some(Frame::new(WIDTH as u32, HEIGHT as u32, PixelFormat::I420, data)?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stabilize_steadies_a_shaking_camera_for_the_viewer() {
    let _lock = exclusive().await;
    let mut motion = Vec::new();
    for stabilize in [false, true] {
        let mut options = options(json!({"frame_size_reduction": 0, "stabilize": stabilize}));
        options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
        let builder = WebGearRtc::builder()
            .custom_stream(from_fn(Some(30.0), shaking_camera(Duration::from_millis(33))))
            .options(options);
        let server = TestServer::start_with(builder).await;
        let (mut viewer, _) = server.playing_viewer().await;
        let frames = viewer.frames_during(Duration::from_secs(3)).await;
        assert!(frames.len() >= 75, "{} frames in 3 s", frames.len());
        // How far the decoded picture moves from one frame to the next, in 4-pixel steps.
        let steps: Vec<(i32, i32)> = frames.windows(2).map(|pair| pair[1].moved_since(&pair[0], 6)).collect();
        let mean = steps.iter().map(|(dx, dy)| f64::from(dx.abs() + dy.abs())).sum::<f64>() / steps.len() as f64;
        motion.push(mean);
        server.stop().await;
    }
    let [shaken, steadied] = motion[..] else { unreachable!() };
    assert!(shaken > 2.0, "the camera shakes: {shaken:.2} steps a frame");
    assert!(steadied < 0.5, "the viewer sees it steady: {steadied:.2} steps a frame (shaken: {shaken:.2})");
}
