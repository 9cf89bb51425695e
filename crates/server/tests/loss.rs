//! Viewers behind a lossy link: the kernel drops 15% of the packets the server sends
//! (an iptables rule), the viewer's WebRTC stack asks for the missing ones again (NACK)
//! and the server resends them from the packets it keeps. The decoding viewer checks that
//! nearly every frame arrives.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{CAMERA_H264, TestServer, exclusive, make_frames, may_change_the_network, scratch_dir};
use webgear_rtc::{Options, SourceSpec, WebGearRtc};
use webgear_testkit::{DecodedFrame, PacketLoss, Viewer, free_udp_port};

/// The share of the server's packets the link drops.
const LOSS: f64 = 0.15;

/// A server for `source` with frames left at their size (H.264 may pass through), its
/// media on a UDP port of its own, which it returns: the port the loss is made on.
async fn unreduced_server_on_free_port(source: SourceSpec) -> (TestServer, u16) {
    let port = free_udp_port();
    let mut options = Options::default();
    options.set("frame_size_reduction", &serde_json::json!(0)).unwrap();
    options.set("custom_data_location", &serde_json::json!(scratch_dir())).unwrap();
    let builder = WebGearRtc::builder().source(source).options(options).udp_port(port);
    (TestServer::start_with(builder).await, port)
}

/// Asserts that `frames` hold at least 90% of the source's frames from the first to the
/// last (with resends refused beyond str0m's default share, runs kept as few as 76%: each frame
/// lost for good breaks the pictures up to the next keyframe), and that the link dropped
/// packets meanwhile (`dropped`, at least 5).
fn assert_nearly_every_frame(frames: &[DecodedFrame], dropped: u64) {
    assert!(dropped >= 5, "the link dropped only {dropped} packets");
    let numbers: BTreeSet<u16> =
        frames.iter().map(|f| f.number.expect("every picture carries its frame code")).collect();
    let (Some(first), Some(last)) = (numbers.first(), numbers.last()) else { panic!("no frames") };
    let span = usize::from(last - first) + 1;
    assert!(span >= 40, "frames {first} to {last} only: {numbers:?}");
    assert!(numbers.len() * 10 >= span * 9, "{} of the {span} frames arrived: {numbers:?}", numbers.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_losing_15_percent_of_the_packets_still_gets_nearly_every_frame() {
    if !may_change_the_network("dropping packets with iptables") {
        return;
    }
    let _lock = exclusive().await;
    let (server, port) = unreduced_server_on_free_port(SourceSpec::TestPattern).await;
    let (mut viewer, _) = server.playing_viewer().await;
    let keyframes = server.app.stats().keyframes_encoded;

    let loss = PacketLoss::from_udp_port(port, LOSS).unwrap();
    let frames = viewer.frames_during(Duration::from_secs(5)).await;
    let dropped = loss.dropped().unwrap();
    drop(loss);
    assert_nearly_every_frame(&frames, dropped);
    let forced = server.app.stats().keyframes_encoded - keyframes;
    assert!(forced <= 2, "{forced} keyframes: lost packets were not sent again");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_a_passed_through_stream_over_a_lossy_link_gets_nearly_every_frame() {
    if !may_change_the_network("dropping packets with iptables") {
        return;
    }
    let _lock = exclusive().await;
    // Ten seconds, a keyframe every 15 frames: a joiner starts with up to 14 frames sent
    // at once.
    let path = scratch_dir().join("lossy-camera.mp4");
    make_frames(&path, 300, CAMERA_H264);
    let (server, port) = unreduced_server_on_free_port(SourceSpec::File(path)).await;
    let (mut watching, _) = server.playing_viewer().await;
    while watching.next_frame(Duration::from_secs(2)).await.and_then(|frame| frame.number).unwrap() < 20 {}

    // The loss starts before the joiner's offer: its handshake and its first frames (the
    // last keyframe and those since, in one burst) cross the lossy link too.
    let loss = PacketLoss::from_udp_port(port, LOSS).unwrap();
    let mut joiner = Viewer::connect(&server.url("/offer")).await.unwrap();
    // Its handshake may wait for a lost packet to be sent again (a second, for DTLS).
    let first = joiner.next_frame(Duration::from_secs(5)).await.expect("a first picture");
    let mut frames = vec![first];
    frames.extend(joiner.frames_during(Duration::from_secs(3)).await);
    let dropped = loss.dropped().unwrap();
    drop(loss);
    assert!(frames.first().is_some_and(|frame| frame.keyframe), "it starts from a keyframe: {frames:?}");
    assert_nearly_every_frame(&frames, dropped);
    assert_eq!(server.app.stats().encoders_running, 0);
    server.stop().await;
}
