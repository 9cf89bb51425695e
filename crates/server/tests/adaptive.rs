//! The adaptive stream on real links: a viewer behind a slow link (a network namespace
//! whose link the kernel shapes with a token bucket) is moved to a lower rung of the
//! ladder, and decodes smaller pictures without a gap in frame numbers, while a viewer on
//! loopback beside it stays on the top rung at full rate. `adaptive: false` sends both the
//! one full-size stream.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{TestServer, builder, exclusive, may_change_the_network, options};
use serde_json::json;
use webgear_testkit::{DecodedFrame, Endpoint, NatLab, Viewer};

/// The test pattern's size, left whole.
const FULL: (u32, u32) = (1280, 720);

fn size(frame: &DecodedFrame) -> (u32, u32) {
    (frame.width, frame.height)
}

/// The frame numbers from the first to the last are all there.
fn assert_no_gap(frames: &[DecodedFrame], who: &str) {
    let numbers: Vec<u16> = frames.iter().map(|f| f.number.expect("every picture carries its frame code")).collect();
    let missing = numbers.windows(2).filter(|pair| pair[1] != pair[0].wrapping_add(1)).count();
    assert!(missing <= 2, "{who}: {missing} gaps in {numbers:?}");
}

/// A network namespace for a viewer, and a test-pattern server (frames left whole,
/// `adaptive` as given) that it reaches through the namespace's NAT.
async fn server_behind_a_namespace(adaptive: bool) -> (NatLab, TestServer) {
    let lab = NatLab::create().expect("a network namespace (needs root, iproute2, iptables and tc)");
    let (private, public) = (lab.private_ip.to_string(), lab.public_ip.to_string());
    let server = TestServer::start_with(builder(options(json!({
        "frame_size_reduction": 0,
        "adaptive": adaptive,
        "host_addresses": [private],
        "public_addresses": [public],
    }))))
    .await;
    (lab, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_behind_a_slow_link_moves_down_the_ladder_while_one_on_loopback_stays_on_top() {
    if !may_change_the_network("shaping a link with tc") {
        return;
    }
    let _lock = exclusive().await;
    let (lab, server) = server_behind_a_namespace(true).await;

    // 500 kbit/s, a small router buffer: below the top rung (2 Mbit/s) and the middle one.
    lab.limit_rate("500kbit", "32kb").unwrap();
    let socket = lab.viewer_socket().unwrap();
    let mut slow = Viewer::connect_with_socket(&Endpoint::Offer(server.url("/offer")), socket).await.unwrap();
    let mut fast = Viewer::connect(&server.url("/offer")).await.unwrap();
    slow.next_frame(Duration::from_secs(5)).await.expect("the slow viewer plays");
    fast.next_frame(Duration::from_secs(2)).await.expect("the fast viewer plays");

    // Long enough for the slow viewer's estimate to settle, both watching all along.
    let (slow_frames, fast_frames) =
        tokio::join!(slow.frames_during(Duration::from_secs(12)), fast.frames_during(Duration::from_secs(12)));
    let settled = &slow_frames[slow_frames.len() * 2 / 3..];
    assert!(settled.len() >= 60, "the slow viewer decoded {} frames in its last 4 s", settled.len());
    assert!(settled.iter().all(|frame| size(frame).0 < FULL.0), "still full size: {:?}", size(&settled[0]));
    assert_no_gap(settled, "the slow viewer, settled");

    assert!(fast_frames.len() >= 12 * 28, "the fast viewer decoded {} frames in 12 s", fast_frames.len());
    assert!(fast_frames.iter().all(|frame| size(frame) == FULL), "the fast viewer left the top rung");
    assert_no_gap(&fast_frames, "the fast viewer");
    assert!(server.app.stats().rung_switches >= 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_adaptive_a_viewer_behind_a_slow_link_is_sent_the_full_size_stream() {
    if !may_change_the_network("shaping a link with tc") {
        return;
    }
    let _lock = exclusive().await;
    let (lab, server) = server_behind_a_namespace(false).await;
    lab.limit_rate("1mbit", "64kb").unwrap();
    let socket = lab.viewer_socket().unwrap();
    let mut slow = Viewer::connect_with_socket(&Endpoint::Offer(server.url("/offer")), socket).await.unwrap();
    let frames = slow.frames_during(Duration::from_secs(6)).await;
    assert!(frames.iter().all(|frame| size(frame) == FULL), "one stream, at full size");
    let stats = server.app.stats();
    assert_eq!((stats.rung_switches, stats.encoders_running), (0, 1), "{stats:?}");
    server.stop().await;
}
