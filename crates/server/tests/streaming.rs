//! End-to-end streaming: real servers, real WebRTC viewers that decode what they receive.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{TestServer, assert_increasing, builder, exclusive, fps, frames_during_together, options};
use serde_json::json;

const MEASURE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_viewer_gets_reduced_frames_in_order_at_full_rate() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut viewer, first) = server.playing_viewer().await;
    // The default frame_size_reduction of 20% turns 1280x720 into 1024x576.
    assert_eq!((first.width, first.height), (1024, 576));

    let frames = viewer.frames_during(MEASURE).await;
    assert_increasing(&frames);
    assert!(frames.iter().all(|f| (f.width, f.height) == (1024, 576)));
    let rate = fps(&frames, MEASURE);
    assert!(rate >= 25.0, "decoded {rate:.1} frames per second");

    viewer.close().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_viewers_each_get_every_frame_from_one_encoder() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let mut viewers = Vec::new();
    for _ in 0..5 {
        viewers.push(server.playing_viewer().await.0);
    }
    let stats = server.app.stats();
    assert_eq!(stats.encoders_running, 1, "{stats:?}");
    assert_eq!(stats.viewers, 5, "{stats:?}");

    for (index, (viewer, frames)) in frames_during_together(viewers, MEASURE).await.into_iter().enumerate() {
        assert_increasing(&frames);
        let rate = fps(&frames, MEASURE);
        assert!(rate >= 25.0, "viewer {index} decoded {rate:.1} frames per second");
        viewer.close().unwrap();
    }
    assert_eq!(server.app.stats().encoders_running, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_sees_a_picture_within_a_second() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut early, _) = server.playing_viewer().await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut late = webgear_testkit::Viewer::connect(&server.url("/offer")).await.unwrap();
    let first = late.next_frame(Duration::from_secs(1)).await.expect("a picture within 1 s of joining");
    assert!(first.arrived_at - late.offered_at <= Duration::from_secs(1));
    assert!(first.number.is_some());

    // The first viewer was not disturbed by the keyframe the join asked for.
    let frames = early.frames_during(Duration::from_secs(1)).await;
    assert_increasing(&frames);
    assert!(frames.len() >= 25, "the first viewer got {} frames in the second after the join", frames.len());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_soon_after_a_keyframe_starts_from_it_without_asking_for_another() {
    let _lock = exclusive().await;
    // At 5 fps the frames kept since a keyframe (30) span 6 s: room for a join anywhere.
    let server = TestServer::start_with(builder(options(json!({"framerate": 5})))).await;
    let (_early, first) = server.playing_viewer().await;
    assert!(first.keyframe);
    let requests_before = server.app.stats().keyframe_requests;

    let mut late = webgear_testkit::Viewer::connect(&server.url("/offer")).await.unwrap();
    let start = late.next_frame(Duration::from_secs(2)).await.expect("a picture within 2 s of joining");
    assert!(start.keyframe);
    assert_eq!(start.number, first.number, "the late viewer starts from the keyframe the first one started from");
    let mut frames = vec![start];
    frames.extend(late.frames_during(Duration::from_secs(1)).await);
    assert_increasing(&frames);
    assert!(frames.len() >= 4, "the late viewer decoded {} frames", frames.len());
    assert_eq!(server.app.stats().keyframe_requests, requests_before, "the late viewer asked for a keyframe");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_joins_starts_from_the_frames_kept_without_forcing_keyframes_on_everyone() {
    let _lock = exclusive().await;
    // At 15 fps the frames kept since a keyframe (30) span 2 s.
    let server = TestServer::start_with(builder(options(json!({"framerate": 15})))).await;
    let (_early, first) = server.playing_viewer().await;
    assert!(first.keyframe);
    let keyframes_before = server.app.stats().keyframes_encoded;
    // Well past a handful of frames, as a wave of joins goes on.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let offer_url = server.url("/offer");
    let joins: Vec<_> = (0..4)
        .map(|_| {
            let offer_url = offer_url.clone();
            tokio::spawn(async move {
                let mut viewer = webgear_testkit::Viewer::connect(&offer_url).await.unwrap();
                viewer.next_frame(Duration::from_secs(2)).await.expect("a picture within 2 s of joining")
            })
        })
        .collect();
    for join in joins {
        let start = join.await.unwrap();
        assert_eq!(start.number, first.number, "each joiner starts from the keyframe the first one started from");
    }
    // A keyframe forced for a joiner would have gone to every viewer.
    assert_eq!(server.app.stats().keyframes_encoded, keyframes_before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_leaves_is_removed() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (viewer, _) = server.playing_viewer().await;
    assert_eq!(server.app.stats().viewers, 1);

    // The viewer vanishes without a goodbye; the server notices when ICE goes quiet.
    viewer.close().unwrap();
    server.until_no_viewers(Duration::from_secs(30), "the peer was never removed").await;
    server.stop().await;
}

/// The test pattern, like a file, is read only while someone watches: not before the first
/// viewer, not once everyone has left, and the next viewer sees it go on from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_read_while_nobody_watches_and_a_returning_viewer_goes_on_from_there() {
    let _lock = exclusive().await;
    // At 5 fps a frame lasts 200 ms: where the pattern stopped is plain to see.
    let server = TestServer::start_with(builder(options(json!({"framerate": 5})))).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_anyone = server.app.stats();
    let read_before_anyone = (before_anyone.frames_encoded, before_anyone.frames_unwatched);
    assert_eq!(read_before_anyone, (0, 0), "the test pattern waits for its first viewer: {before_anyone:?}");

    let (_viewer, first) = server.playing_viewer().await;
    assert!(first.keyframe);
    server.close_all_connections().await;
    // A frame already being read as the viewer left may still be counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = server.app.stats();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = server.app.stats();
    let read = |stats: &webgear_rtc::Stats| (stats.frames_encoded, stats.frames_unwatched);
    assert_eq!(read(&idle), read(&left), "read or encoded with nobody watching: {left:?} then {idle:?}");

    // The next viewer starts from a keyframe where the pattern stopped (the frames kept for
    // joiners, which WebGear_RTC's reset leaves, or one made for it), not 1.8 s on.
    let (mut back, again) = server.playing_viewer().await;
    assert!(again.keyframe);
    let (left_at, resumed_at) = (first.number.unwrap(), again.number.unwrap());
    assert!(resumed_at >= left_at && resumed_at <= left_at + 4, "frame {resumed_at} after {left_at}");
    let mut frames = vec![again];
    frames.extend(back.frames_during(Duration::from_secs(1)).await);
    assert!(frames.len() >= 4, "{} frames in a second after the pause", frames.len());
    assert_increasing(&frames);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_loss_indication_brings_a_keyframe() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut viewer, first) = server.playing_viewer().await;
    assert!(first.keyframe, "a viewer starts on a keyframe");

    // Keyframes are made on demand only: none arrive while nobody asks.
    let quiet = viewer.frames_during(Duration::from_secs(2)).await;
    assert!(quiet.len() >= 50 && quiet.iter().all(|f| !f.keyframe), "unasked keyframes: {quiet:?}");
    let encoded_before = server.app.stats().keyframes_encoded;

    viewer.request_keyframe();
    let after = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(after.iter().any(|f| f.keyframe), "no keyframe within a second of the PLI");
    assert_increasing(&after);
    assert!(server.app.stats().keyframes_encoded > encoded_before);
    viewer.close().unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_loss_soon_after_a_keyframe_is_answered_with_the_frames_since_not_a_new_one() {
    let _lock = exclusive().await;
    // At 15 fps the frames kept since a keyframe (30) span 2 s.
    let server = TestServer::start_with(builder(options(json!({"framerate": 15})))).await;
    let (mut viewer, first) = server.playing_viewer().await;
    assert!(first.keyframe);
    let encoded_before = server.app.stats().keyframes_encoded;
    let latest = viewer.frames_during(Duration::from_millis(500)).await.last().and_then(|f| f.number).unwrap();

    viewer.request_keyframe();
    let mut after = Vec::new();
    while let Some(frame) = viewer.next_frame(Duration::from_millis(500)).await {
        after.push(frame);
        if after.len() >= 15 {
            break;
        }
    }
    let again = after.iter().position(|f| f.keyframe).unwrap_or_else(|| panic!("no keyframe after the PLI: {after:?}"));
    assert_eq!(after[again].number, first.number, "the keyframe sent again");
    assert_increasing(&after[again..]);
    assert!(after.last().and_then(|f| f.number) > Some(latest), "and on to the live frames");
    // A keyframe made for one viewer would have gone to every viewer.
    assert_eq!(server.app.stats().keyframes_encoded, encoded_before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_viewer_slows_nobody_and_recovers_with_a_keyframe() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut healthy, _) = server.playing_viewer().await;
    let (mut frozen, _) = server.playing_viewer().await;

    frozen.set_stalled(true);
    let frames = healthy.frames_during(MEASURE).await;
    assert_increasing(&frames);
    let rate = fps(&frames, MEASURE);
    assert!(rate >= 25.0, "the healthy viewer decoded {rate:.1} fps while the other was stalled");

    // Thawed, the frozen viewer has lost data; it asks for a keyframe and plays again.
    frozen.set_stalled(false);
    let resumed = frozen.frames_during(Duration::from_secs(2)).await;
    assert!(resumed.iter().any(|f| f.keyframe), "the thawed viewer never got a keyframe");
    let tail: Vec<_> = resumed.iter().skip_while(|f| !f.keyframe).cloned().collect();
    assert_increasing(&tail);
    assert!(tail.len() >= 20, "the thawed viewer decoded only {} frames after recovering", tail.len());
    server.stop().await;
}
