//! Users' own frame producers (vidgear's `custom_stream`), as a closure: any supported
//! pixel format and any size, odd ones included, reach a decoding viewer.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, assert_increasing, exclusive, fps, scratch_dir};
use webgear_media::source::test_pattern::TestPattern;
use webgear_rtc::{Frame, FrameSource, Options, PixelFormat, SourceError, WebGearRtc, from_fn};

/// Gray frames of an odd size (639x359), cut from the test pattern's luma, 30 per second.
fn odd_gray_frames() -> impl FnMut() -> Result<Option<Frame>, webgear_rtc::SourceError> + Send {
    let pattern = TestPattern::new(640, 360, 30);
    let start = Instant::now();
    let mut number = 0u64;
    move || {
        std::thread::sleep((start + Duration::from_millis(33 * number)).saturating_duration_since(Instant::now()));
        let picture = pattern.render(number, Instant::now());
        number += 1;
        let luma = picture.planes().0;
        let gray: Vec<u8> = luma.chunks_exact(640).take(359).flat_map(|row| row[..639].iter().copied()).collect();
        Ok(Some(Frame::new(639, 359, PixelFormat::Gray, gray)?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_producing_odd_sized_gray_frames_streams_at_full_rate() {
    let _lock = exclusive().await;
    let mut options = Options::default();
    options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    let builder = WebGearRtc::builder().custom_stream(from_fn(Some(30.0), odd_gray_frames())).options(options);
    let server = TestServer::start_with(builder).await;
    let (mut viewer, first) = server.playing_viewer().await;
    // 639x359 reduced by 20% is 511.2x287.2, rounded down to even sizes for 4:2:0.
    assert_eq!((first.width, first.height), (510, 286));

    let frames = viewer.frames_during(Duration::from_secs(2)).await;
    assert_increasing(&frames);
    let rate = fps(&frames, Duration::from_secs(2));
    assert!(rate >= 25.0, "decoded {rate:.1} frames per second");
    server.stop().await;
}

/// A user's source that says it is live (a camera of their own) goes on whether read or
/// not.
struct OwnCamera<F>(F);

impl<F: FnMut() -> Result<Option<Frame>, SourceError> + Send> FrameSource for OwnCamera<F> {
    fn read(&mut self) -> Result<Option<Frame>, SourceError> {
        (self.0)()
    }

    fn is_live(&self) -> bool {
        true
    }
}

/// A custom stream is read only while someone watches, as in WebGear_RTC, unless it says
/// it is live: then it is read all along, as a camera is, and what it gives while nobody
/// watches is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_stream_is_read_before_anyone_watches_only_if_it_is_live() {
    let _lock = exclusive().await;
    for live in [false, true] {
        let mut options = Options::default();
        options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
        let builder = if live {
            WebGearRtc::builder().custom_stream(OwnCamera(odd_gray_frames()))
        } else {
            WebGearRtc::builder().custom_stream(from_fn(Some(30.0), odd_gray_frames()))
        };
        let server = TestServer::start_with(builder.options(options)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stats = server.app.stats();
        if live {
            assert!(stats.frames_unwatched >= 15, "a live source left unread: {stats:?}");
        } else {
            assert_eq!(stats.frames_unwatched, 0, "read for nobody: {stats:?}");
        }
        let (mut viewer, _) = server.playing_viewer().await;
        assert_increasing(&viewer.frames_during(Duration::from_secs(1)).await);
        server.stop().await;
    }
}
