//! Behaviour under load: the viewer cap (503 with a reason and a Retry-After, nobody else
//! disturbed), the Prometheus metrics endpoint, and the load generator's light viewers.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, builder, exclusive, frames_during_together, offer_sdp};
use str0m::media::{Direction, MediaKind};
use webgear_rtc::Options;
use webgear_testkit::load::{Reception, Window, watch, watch_decoding};
use webgear_testkit::{Endpoint, Viewer, ViewerError};

/// The test pattern, holding at most `max_viewers`.
async fn server_holding(max_viewers: usize) -> TestServer {
    let mut options = Options::default();
    options.set("max_viewers", &serde_json::json!(max_viewers)).unwrap();
    TestServer::start_with(builder(options)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_beyond_max_viewers_get_503_and_a_freed_place_is_taken_again() {
    let _lock = exclusive().await;
    let server = server_holding(2).await;
    let (_first, _) = server.playing_viewer().await;
    let (mut second, _) = server.playing_viewer().await;

    let refused = Viewer::connect(&server.url("/offer")).await.err().unwrap();
    assert!(matches!(refused, ViewerError::Refused { .. }), "{refused:?}");
    let refused = refused.to_string();
    assert!(refused.contains("503") && refused.contains("limit of 2 viewers"), "{refused}");
    // By WHEP as well.
    let whep = Endpoint::Whep { url: server.url("/whep"), token: None };
    let refused = Viewer::connect_to(&whep).await.err().unwrap();
    assert!(matches!(refused, ViewerError::Refused { .. }), "{refused:?}");
    // Refused before the offer is even read, with a hint when to come back.
    let reply = reqwest::Client::new().post(server.url("/offer")).body("anything").send().await.unwrap();
    assert_eq!(reply.status(), 503);
    assert_eq!(reply.headers()["retry-after"], "5");
    let stats = server.app.stats();
    assert_eq!((stats.viewers, stats.offers_refused), (2, 3), "{stats:?}");
    assert!(second.frames_during(Duration::from_millis(500)).await.len() >= 10, "the viewers held play on");

    server.close_all_connections().await;
    assert_eq!(server.app.stats().viewers, 0);
    let (_again, first) = server.playing_viewer().await;
    assert!(first.number.is_some(), "a freed place is taken again");
    server.stop().await;
}

/// A viewer none of whose packets reach the server (a network that blocks the way, a
/// client that only offers) holds its place for seconds, not for the 30 s a connection
/// may take once under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_whose_maker_never_sends_a_packet_frees_its_place_within_seconds() {
    let _lock = exclusive().await;
    let server = server_holding(1).await;
    let offer = serde_json::json!({"sdp": offer_sdp(&[(MediaKind::Video, Direction::RecvOnly)]), "type": "offer"});
    let answered = common::send(reqwest::Client::new().post(server.url("/offer")).json(&offer)).await;
    assert_eq!(answered.status(), 200);
    let refused = Viewer::connect(&server.url("/offer")).await.err().unwrap().to_string();
    assert!(refused.contains("503"), "the silent viewer holds the only place: {refused}");

    server.until_no_viewers(Duration::from_secs(15), "the silent viewer still holds its place").await;
    let (mut viewer, _) = server.playing_viewer().await;
    assert!(viewer.frames_during(Duration::from_millis(500)).await.len() >= 10, "the place is taken again");
    server.stop().await;
}

/// The samples of a Prometheus text exposition, by name with labels.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(name, value)| (name.to_owned(), value.parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_viewers_frames_bytes_and_stage_timings() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut viewer, _) = server.playing_viewer().await;
    // Over 2 s since the server started: the peer drivers have measured their load once.
    viewer.frames_during(Duration::from_secs(2)).await;

    let reply = reqwest::get(server.url("/metrics")).await.unwrap();
    assert_eq!(reply.status(), 200);
    assert!(reply.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = reply.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let first = samples(&text);
    let value = |name: &str| *first.get(name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(value("webgear_viewers"), 1.0);
    assert_eq!(value("webgear_encoders_running"), 1.0);
    // Encoded since the viewer came, a little over a second ago.
    assert!(value("webgear_frames_encoded_total") >= 25.0, "{text}");
    assert!(value("webgear_frames_sent_total") >= 25.0, "{text}");
    // One viewer of a test pattern: no driver falls behind.
    assert_eq!(value("webgear_frames_dropped_total"), 0.0, "{text}");
    assert!(value("webgear_sent_bytes_total") >= 50_000.0, "{text}");
    assert!(value("webgear_encode_seconds_count") >= 25.0, "{text}");
    assert!(value("webgear_capture_to_send_seconds_count") >= 25.0, "{text}");
    // A bucket at the 15 ms target, so its quantile can be read against it.
    assert!(first.contains_key("webgear_capture_to_send_seconds_bucket{le=\"0.015\"}"), "{text}");
    assert!(value("webgear_capture_to_send_seconds_sum") > 0.0, "{text}");
    // With one viewer, its wait is the last viewer's: drivers without viewers observe none.
    // (A driver may be between the two observations as the page is made.)
    let last_sends = value("webgear_capture_to_last_send_seconds_count");
    assert!(last_sends >= 25.0 && (value("webgear_capture_to_send_seconds_count") - last_sends).abs() <= 1.0, "{text}");
    // The viewer's ICE checks and DTLS flights, at least, went through a driver's queue.
    assert!(value("webgear_datagram_wait_seconds_count") >= 3.0, "{text}");
    assert!(value("webgear_datagram_wait_seconds_sum") > 0.0, "{text}");
    assert_eq!(value("webgear_offers_refused_total"), 0.0);
    // Sending one viewer its frames is work, but far from all of a driver's time.
    let busy = value("webgear_drivers_busy_ratio");
    assert!(busy > 0.0 && busy < 0.5, "{text}");

    // With three viewers, each frame sent to each of them is one observation of its wait.
    let (second, _) = server.playing_viewer().await;
    let (third, _) = server.playing_viewer().await;
    let read = || async { samples(&reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap()) };
    let before = read().await;
    frames_during_together(vec![viewer, second, third], Duration::from_secs(1)).await;
    let after = read().await;
    let grew = |name: &str| after[name] - before[name];
    let (sent, waits) = (grew("webgear_frames_sent_total"), grew("webgear_capture_to_send_seconds_count"));
    assert!(sent >= 75.0 && (sent - waits).abs() <= 3.0, "{sent} frames sent, {waits} waits observed");
    server.stop().await;

    let mut options = Options::default();
    options.set("enable_metrics", &serde_json::json!(false)).unwrap();
    let server = TestServer::start_with(builder(options)).await;
    assert_eq!(reqwest::get(server.url("/metrics")).await.unwrap().status(), 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_viewers_measure_full_rate_no_loss_and_their_first_frame_in_steps() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let start = Instant::now() + Duration::from_secs(1);
    let window = Window { start, end: start + Duration::from_secs(2) };
    // By WebGear_RTC's /offer and by WHEP, through the WebRTC stack and from RTP headers.
    let endpoints = [Endpoint::Offer(server.url("/offer")), Endpoint::Whep { url: server.url("/whep"), token: None }];
    let kinds = [Reception::Full, Reception::HeadersOnly];
    let local_ip = endpoints[0].local_ip().unwrap();
    let viewers: Vec<_> = endpoints
        .iter()
        .flat_map(|endpoint| kinds.map(|reception| (endpoint.clone(), reception)))
        .cycle()
        .take(8)
        .map(|(endpoint, reception)| tokio::spawn(async move { watch(&endpoint, local_ip, window, reception).await }))
        .collect();
    // And viewers that decode every picture, as the load generator's `--decode` runs.
    let decoding: Vec<_> = endpoints
        .iter()
        .cloned()
        .map(|endpoint| tokio::spawn(async move { watch_decoding(&endpoint, local_ip, window).await }))
        .collect();
    for viewer in viewers {
        let report = viewer.await.unwrap().unwrap();
        // The stream is 30 fps: frames are told by the marker bit, not packets.
        assert!((25.0..=35.0).contains(&report.fps) && report.loss < 0.01, "{report:?}");
        assert!(report.first_frame.is_some_and(|d| d < Duration::from_secs(1)), "{report:?}");
        // The wait for the first frame in its steps: the answer, then the connection.
        let steps = [Some(report.answer), report.connected, report.first_frame];
        assert!(steps.is_sorted() && report.answer > Duration::ZERO, "{report:?}");
        assert!(report.bytes > 100_000, "{report:?}");
    }
    for viewer in decoding {
        let report = viewer.await.unwrap().unwrap();
        assert!((25.0..=35.0).contains(&report.fps), "{report:?}");
        assert!(report.first_picture.is_some_and(|d| d < Duration::from_secs(1)), "{report:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_valid_offers_stalls_neither_the_web_app_nor_the_viewers_watching() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut watching, _) = server.playing_viewer().await;

    // Forty viewers offer at the same instant.
    let start = Instant::now() + Duration::from_secs(2);
    let window = Window { start, end: start + Duration::from_secs(2) };
    let endpoint = Endpoint::Offer(server.url("/offer"));
    let local_ip = endpoint.local_ip().unwrap();
    let burst: Vec<_> = (0..40)
        .map(|_| {
            let endpoint = endpoint.clone();
            tokio::spawn(async move { watch(&endpoint, local_ip, window, Reception::Full).await })
        })
        .collect();
    let page = tokio::time::timeout(Duration::from_secs(2), reqwest::get(server.url("/"))).await;
    assert_eq!(page.expect("the page is served during the burst").unwrap().status(), 200);
    let seen = watching.frames_during(Duration::from_secs(3)).await;
    assert!(seen.len() >= 75, "the viewer already watching got {} frames in 3 s", seen.len());
    for viewer in burst {
        let report = viewer.await.unwrap().unwrap();
        assert!(report.first_frame.is_some() && report.fps >= 25.0, "{report:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_stray_datagrams_on_the_media_port_does_not_stop_the_video() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let (mut viewer, _) = server.playing_viewer().await;

    // Packets that look like RTP but belong to no session, as fast as one thread can send
    // them: the peers' own sending must not wait until the network falls quiet.
    let media = server.app.media_addrs()[0];
    let flooding = Arc::new(AtomicBool::new(true));
    let flood = std::thread::spawn({
        let flooding = flooding.clone();
        move || {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let mut junk = [0u8; 200];
            junk[0] = 0x80;
            junk[1] = 96;
            let mut sent = 0u64;
            while flooding.load(Ordering::Relaxed) {
                if socket.send_to(&junk, media).is_ok() {
                    sent += 1;
                }
            }
            sent
        }
    });
    let seen = viewer.frames_during(Duration::from_secs(3)).await;
    flooding.store(false, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 10_000, "the flood sent only {sent} datagrams");
    assert!(seen.len() >= 60, "the viewer got {} frames in 3 s while {sent} stray datagrams arrived", seen.len());
    common::assert_increasing(&seen);
    server.stop().await;
}
