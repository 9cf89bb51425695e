//! Headless Chromium opens the default page and plays the stream: the `<video>` has the
//! reduced size, its clock advances, it keeps decoding frames, and it shows a picture;
//! also when the stream is a file's own H.264, passed through, and when a live stream
//! switches from decoded to passed through.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{TestServer, builder, exclusive, live_sender, options, scratch_dir};
use serde_json::{Value, json};
use webgear_rtc::{Options, SourceSpec};
use webgear_testkit::{Browser, TurnServer, free_udp_port};

const VIDEO_STATE: &str = r#"
    const video = document.querySelector("video");
    return {
        width: video.videoWidth,
        height: video.videoHeight,
        time: video.currentTime,
        frames: video.getVideoPlaybackQuality().totalVideoFrames,
        state: document.getElementById("state").dataset.state,
    };
"#;

/// For the next 20 frames the page shows: how long after its last packet arrived each is
/// due on screen, in ms.
const DISPLAY_LAGS: &str = r#"
    const video = document.querySelector("video");
    return await new Promise(resolve => {
        const lags = [];
        const next = (now, frame) => {
            lags.push(frame.expectedDisplayTime - frame.receiveTime);
            if (lags.length < 20) video.requestVideoFrameCallback(next); else resolve(lags);
        };
        video.requestVideoFrameCallback(next);
    });
"#;

#[derive(Debug)]
struct VideoState {
    width: u64,
    height: u64,
    time: f64,
    frames: u64,
    state: String,
}

async fn video_state(browser: &Browser) -> VideoState {
    let value: Value = browser.eval(VIDEO_STATE).await.unwrap();
    VideoState {
        width: value["width"].as_u64().unwrap_or(0),
        height: value["height"].as_u64().unwrap_or(0),
        time: value["time"].as_f64().unwrap_or(0.0),
        frames: value["frames"].as_u64().unwrap_or(0),
        state: value["state"].as_str().unwrap_or("").to_owned(),
    }
}

/// Standard deviation of the luminance of a PNG's pixels.
fn luma_spread(png_bytes: &[u8]) -> f64 {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    assert!(channels >= 3, "expected an RGB(A) screenshot, got {:?}", info.color_type);
    let luma: Vec<f64> = pixels[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|px| 0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2]))
        .collect();
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    (luma.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / luma.len() as f64).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_default_page() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    browser.goto(&server.url("/")).await.unwrap();

    let first = wait_for_state(&browser, "playing", Duration::from_secs(15)).await;
    assert_eq!((first.width, first.height), (1024, 576), "{first:?}");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = video_state(&browser).await;
    assert!(later.time >= first.time + 1.5, "playback clock stalled: {first:?} then {later:?}");
    assert!(later.frames >= first.frames + 40, "decoding stalled: {first:?} then {later:?}");
    assert_eq!(later.state, "playing", "{later:?}");

    let screenshot = browser.screenshot().await.unwrap();
    let spread = luma_spread(&screenshot);
    assert!(spread > 20.0, "the page shows a flat picture (luma spread {spread:.1})");

    browser.close().await.unwrap();
    assert_eq!(server.app.stats().encoders_running, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_joining_after_a_keyframe_plays_from_the_frames_before_it_joined() {
    let _lock = exclusive().await;
    // At 2 fps the frames kept since a keyframe span 3.5 s: time for the page to load and
    // connect even when Chromium is cold on a busy machine (1.6 s at 5 fps was not).
    let server = TestServer::start_with(builder(options(json!({"framerate": 2})))).await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    let (_viewer, _) = server.playing_viewer().await;
    let requests_before = server.app.stats().keyframe_requests;
    browser.goto(&server.url("/")).await.unwrap();

    let first = wait_for_state(&browser, "playing", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = video_state(&browser).await;
    assert!(later.frames >= first.frames + 4, "decoding stalled: {first:?} then {later:?}");
    assert_eq!(
        server.app.stats().keyframe_requests,
        requests_before,
        "the page asked for a keyframe instead of starting from the recent frames"
    );
    browser.close().await.unwrap();
    server.stop().await;
}

/// A 640x360, 30 fps clip of `seconds` in High profile H.264 without B-frames, with a
/// keyframe every `keyframe_interval` frames, as streams are encoded.
fn high_profile_clip(name: &str, seconds: u32, keyframe_interval: u32) -> PathBuf {
    let clip = scratch_dir().join(name);
    let made = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-bf", "0"])
        .args(["-g", &keyframe_interval.to_string(), "-pix_fmt", "yuv420p"])
        .arg(&clip)
        .status()
        .expect("ffmpeg is installed");
    assert!(made.success(), "ffmpeg made {}", clip.display());
    clip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_an_h264_file_passed_through_as_it_is() {
    let _lock = exclusive().await;
    // What a file made for streaming looks like: High profile (CABAC, 8x8 transforms), no
    // B-frames, a keyframe every 2 s. The browser decodes the file's own H.264.
    let clip = high_profile_clip("high-profile.mp4", 30, 60);
    let builder = builder(options(json!({"frame_size_reduction": 0}))).source(SourceSpec::File(clip));
    let server = TestServer::start_with(builder).await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    // A first viewer starts the file. The page joins well after a keyframe, so that it
    // starts from a second or more of frames sent before it came.
    let (_first_viewer, _) = server.playing_viewer().await;
    while server.app.stats().frames_passed_through % 60 / 20 != 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    browser.goto(&server.url("/")).await.unwrap();

    let first = wait_for_state(&browser, "playing", Duration::from_secs(15)).await;
    assert_eq!((first.width, first.height), (640, 360), "the file's own size: {first:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = video_state(&browser).await;
    assert!(later.time >= first.time + 1.5, "playback clock stalled: {first:?} then {later:?}");
    assert!(later.frames >= first.frames + 40, "decoding stalled: {first:?} then {later:?}");
    let spread = luma_spread(&browser.screenshot().await.unwrap());
    assert!(spread > 20.0, "the page shows a flat picture (luma spread {spread:.1})");
    // It went through those frames at once and plays live, not as far behind as they were.
    let lags: Vec<f64> = serde_json::from_value(browser.eval(DISPLAY_LAGS).await.unwrap()).unwrap();
    let worst = lags.iter().copied().fold(0.0, f64::max);
    assert!(worst < 500.0, "frames shown up to {worst:.0} ms after they arrived: {lags:?}");

    browser.close().await.unwrap();
    let stats = server.app.stats();
    assert_eq!(stats.encoders_running, 0, "{stats:?}");
    assert!(stats.frames_passed_through > 60, "{stats:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_keeps_playing_a_live_stream_across_the_switch_to_passing_it_through() {
    let _lock = exclusive().await;
    // A live encoder's stream: High profile, no B-frames, a keyframe a second, over UDP.
    // It plays decoded and encoded (OpenH264's Baseline) while its H.264 is checked, then
    // the page gets the stream's own H.264 on the same connection, from a keyframe.
    let clip = high_profile_clip("live-high-profile.mp4", 20, 30);
    let stream = format!("udp://127.0.0.1:{}", free_udp_port());
    let _sender = live_sender(&clip, "mpegts", &[], &format!("{stream}?pkt_size=1316"));
    let builder = builder(options(json!({"frame_size_reduction": 0}))).source(stream.parse().unwrap());
    let server = TestServer::start_with(builder).await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    browser.goto(&server.url("/")).await.unwrap();
    wait_for_state(&browser, "playing", Duration::from_secs(15)).await;
    browser.eval("window.firstPeer = window.webgearRtc.peer; return true;").await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.app.stats().frames_passed_through < 30 {
        assert!(tokio::time::Instant::now() < deadline, "never passed through: {:?}", server.app.stats());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let switched = video_state(&browser).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = video_state(&browser).await;
    assert_eq!((later.width, later.height), (640, 360), "the stream's own size: {later:?}");
    assert!(later.frames >= switched.frames + 40, "decoding stalled after the switch: {switched:?} then {later:?}");
    let spread = luma_spread(&browser.screenshot().await.unwrap());
    assert!(spread > 20.0, "the page shows a flat picture (luma spread {spread:.1})");
    let same_peer = browser.eval("return window.firstPeer === window.webgearRtc.peer;").await.unwrap();
    assert_eq!(same_peer, json!(true), "the page reconnected instead of playing on");

    browser.close().await.unwrap();
    let stats = server.app.stats();
    assert!(stats.frames_encoded > 0 && stats.encoders_running == 0, "encoded first, then not: {stats:?}");
    server.stop().await;
}

/// Waits until the page's state is `wanted` (and, for "playing", the clock has moved).
async fn wait_for_state(browser: &Browser, wanted: &str, limit: Duration) -> VideoState {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = video_state(browser).await;
        if state.state == wanted && (wanted != "playing" || state.time > 0.0) {
            return state;
        }
        assert!(tokio::time::Instant::now() < deadline, "the page never reached {wanted:?}: {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_reconnects_by_itself_and_says_goodbye_when_it_leaves() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    browser.goto(&server.url("/")).await.unwrap();
    wait_for_state(&browser, "playing", Duration::from_secs(15)).await;

    // The server drops every connection; the page notices, says so, and comes back.
    server.close_all_connections().await;
    wait_for_state(&browser, "reconnecting", Duration::from_secs(10)).await;
    let back = wait_for_state(&browser, "playing", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = video_state(&browser).await;
    assert!(later.time > back.time + 0.5, "playback did not resume: {back:?} then {later:?}");
    assert_eq!(server.app.stats().viewers, 1, "exactly one connection after reconnecting");

    // Leaving the page posts /close_connection, so the server lets go at once rather than
    // after the ICE timeout.
    browser.goto("about:blank").await.unwrap();
    server.until_no_viewers(Duration::from_secs(3), "the peer outlived the page").await;
    browser.close().await.unwrap();
    server.stop().await;
}

/// The local and remote candidate types of the page's selected candidate pair.
const SELECTED_PAIR: &str = r#"
    const stats = await window.webgearRtc.peer.getStats();
    let pair = null;
    stats.forEach((report) => {
        if (report.type === "transport" && report.selectedCandidatePairId) pair = stats.get(report.selectedCandidatePairId);
    });
    if (!pair) return null;
    return { local: stats.get(pair.localCandidateId).candidateType, remote: stats.get(pair.remoteCandidateId).candidateType };
"#;

/// The page may only relay through `turn`, configured by `ice_options`: it still plays,
/// its selected candidate pair is a relayed one, and coturn logs the allocation for
/// `turn_user` (a user name, or the end of a minted one).
async fn plays_only_through(turn: &TurnServer, ice_options: Value, turn_user: &str) {
    let mut options = Options::default();
    let mut map = ice_options.as_object().unwrap().clone();
    map.insert("ice_transport_policy".into(), json!("relay"));
    let warnings = options.apply_map(&map);
    assert!(warnings.is_empty(), "{warnings:?}");
    let server = TestServer::start_with(builder(options)).await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    browser.goto(&server.url("/")).await.unwrap();

    let first = wait_for_state(&browser, "playing", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = video_state(&browser).await;
    assert!(later.frames >= first.frames + 40, "decoding stalled: {first:?} then {later:?}");
    let pair = browser.eval(SELECTED_PAIR).await.unwrap();
    assert_eq!(pair, json!({"local": "relay", "remote": "host"}), "the media goes through the TURN relay");
    let log = turn.log();
    assert!(
        log.contains(&format!("{turn_user}>: incoming packet ALLOCATE processed, success")),
        "coturn allocated a relay for {turn_user}:\n{log}"
    );
    browser.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_through_a_turn_relay_when_the_page_may_only_relay() {
    let _lock = exclusive().await;
    let turn = TurnServer::start().expect("coturn starts (needs the coturn package)");
    plays_only_through(&turn, json!({"ice_servers": [turn.url()]}), "user <webgear").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relays_with_credentials_minted_from_the_turn_secret() {
    let _lock = exclusive().await;
    let turn = TurnServer::start_with_secret("north-wind").expect("coturn starts (needs the coturn package)");
    let options = json!({"ice_servers": [turn.url()], "turn_secret": "north-wind"});
    plays_only_through(&turn, options, ":webgear-rtc").await;
}
