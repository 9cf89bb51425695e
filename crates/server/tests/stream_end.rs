//! What viewers see when a finite source ends: one "The End" frame, the same for everyone,
//! viewers coming later included; or, in a live broadcast (infinite frames), "No Input"
//! frames for as long as it runs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{TestServer, exclusive, fps, frames_during_together, scratch_dir};
use webgear_media::source::test_pattern::TestPattern;
use webgear_rtc::{Frame, FrameSource, Options, SourceError, WebGearRtc};

/// The test pattern, cut off after `left` frames: a user's finite frame producer.
struct Finite {
    pattern: TestPattern,
    left: usize,
}

impl FrameSource for Finite {
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.pattern.read()
    }

    fn frame_rate(&self) -> Option<f64> {
        self.pattern.frame_rate()
    }
}

async fn server_with_finite_source(frames: usize, live_broadcast: bool) -> TestServer {
    let mut options = Options::default();
    options.set("enable_live_broadcast", &serde_json::json!(live_broadcast)).unwrap();
    options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    let source = Finite { pattern: TestPattern::default(), left: frames };
    TestServer::start_with(WebGearRtc::builder().custom_stream(source).options(options)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finite_source_ends_with_the_end_for_every_viewer() {
    let _lock = exclusive().await;
    let server = server_with_finite_source(90, false).await;
    let (first, _) = server.playing_viewer().await;
    let (second, _) = server.playing_viewer().await;

    let mut last_numbers = Vec::new();
    let mut viewers = Vec::new();
    for (viewer, frames) in frames_during_together(vec![first, second], Duration::from_secs(4)).await {
        viewers.push(viewer);
        let last = frames.last().expect("frames before the end");
        assert_eq!(last.number, None, "the last picture is the blank \"The End\" frame");
        assert_eq!((last.width, last.height), (1024, 576), "at the stream's size");
        let numbers: Vec<u16> = frames.iter().filter_map(|f| f.number).collect();
        last_numbers.push(*numbers.last().unwrap());
        assert_eq!(frames.iter().filter(|f| f.number.is_none()).count(), 1, "exactly one end frame");
    }
    assert_eq!(last_numbers, vec![89, 89], "both saw the source's last frame, then the end");
    assert_eq!(server.app.stats().encoders_running, 0, "the stream is over");
    assert!(viewers[0].frames_during(Duration::from_millis(500)).await.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_broadcast_streams_no_input_after_the_source_ends() {
    let _lock = exclusive().await;
    let server = server_with_finite_source(15, true).await;
    let (mut early, _) = server.playing_viewer().await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let frames = early.frames_during(Duration::from_secs(2)).await;
    assert!(frames.iter().all(|f| f.number.is_none()), "only blank frames once the source is gone");
    assert!(fps(&frames, Duration::from_secs(2)) >= 25.0, "blank frames keep the full rate");
    assert_eq!(server.app.stats().encoders_running, 1, "the stream never ends");

    // Viewers come and go: one joining now sees a picture at once.
    let (_late, first) = server.playing_viewer().await;
    assert_eq!(first.number, None);
    assert!(first.keyframe);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_coming_after_the_end_is_shown_the_end_too() {
    let _lock = exclusive().await;
    let server = server_with_finite_source(30, false).await;
    let (mut watching, _) = server.playing_viewer().await;
    let frames = watching.frames_during(Duration::from_secs(2)).await;
    assert_eq!(frames.last().map(|f| f.number), Some(None), "the source ended with \"The End\"");
    // Everyone leaves: nothing is left that a later viewer could be shown by mistake.
    server.close_all_connections().await;
    server.until_no_viewers(Duration::from_secs(10), "the viewer was never removed").await;

    let (mut late, shown) = server.playing_viewer().await;
    assert_eq!((shown.number, shown.keyframe), (None, true), "a late viewer sees \"The End\", not nothing");
    assert!(late.frames_during(Duration::from_millis(500)).await.is_empty(), "and nothing after it");
    server.stop().await;
}
