//! Bad signalling input gets a 4xx that says what was wrong, and a viewer that is already
//! watching keeps receiving frames throughout.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, assert_increasing, exclusive};
use reqwest::StatusCode;
use serde_json::json;
use str0m::Rtc;
use str0m::media::{Direction, MediaKind};
use webgear_testkit::Viewer;

/// A well-formed offer made by a real WebRTC stack, with the given transceivers.
fn offer_sdp(media: &[(MediaKind, Direction)]) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    for &(kind, direction) in media {
        change.add_media(kind, direction, None, None, None);
    }
    let (offer, _pending) = change.apply().expect("an offer with media");
    offer.to_sdp_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_get_a_clear_4xx_while_a_viewer_keeps_playing() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect(&server.url("/offer")).await.unwrap();
    viewer.next_frame(Duration::from_secs(2)).await.expect("the viewer plays");

    let http = reqwest::Client::new();
    let audio_only = offer_sdp(&[(MediaKind::Audio, Direction::RecvOnly)]);
    let send_only_video = offer_sdp(&[(MediaKind::Video, Direction::SendOnly)]);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        ("not JSON", http.post(server.url("/offer")).body("hello"), StatusCode::BAD_REQUEST, "must be JSON"),
        (
            "JSON without sdp",
            http.post(server.url("/offer")).json(&json!({"type": "offer"})),
            StatusCode::BAD_REQUEST,
            "missing field `sdp`",
        ),
        (
            "wrong type",
            http.post(server.url("/offer")).json(&json!({"sdp": "v=0", "type": "answer"})),
            StatusCode::BAD_REQUEST,
            "\"type\" must be \"offer\"",
        ),
        (
            "garbage SDP",
            http.post(server.url("/offer")).json(&json!({"sdp": "this is not SDP", "type": "offer"})),
            StatusCode::BAD_REQUEST,
            "SDP offer could not be parsed",
        ),
        (
            "an offer with no video",
            http.post(server.url("/offer")).json(&json!({"sdp": audio_only, "type": "offer"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no video section",
        ),
        (
            "an offer that only sends video",
            http.post(server.url("/offer")).json(&json!({"sdp": send_only_video, "type": "offer"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no video section",
        ),
        (
            "a huge body",
            http.post(server.url("/offer")).body(vec![b'{'; 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        ("GET /offer", http.get(server.url("/offer")), StatusCode::METHOD_NOT_ALLOWED, ""),
        ("an unknown path", http.get(server.url("/nope/../x")), StatusCode::NOT_FOUND, ""),
    ];
    for (what, request, status, says) in cases {
        let response = common::send(request).await;
        assert_eq!(response.status(), status, "{what}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{what}: body {body:?} should say {says:?}");
    }

    // A flood of garbage offers does not disturb the viewer either.
    for _ in 0..200 {
        let response =
            http.post(server.url("/offer")).json(&json!({"sdp": "v=0\r\nx", "type": "offer"})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    let frames = viewer.frames_during(Duration::from_secs(1)).await;
    assert_increasing(&frames);
    assert!(frames.len() >= 25, "the viewer got {} frames in a second", frames.len());
    assert_eq!(server.app.stats().viewers, 1, "no bad offer left a peer behind");
    viewer.close().unwrap();
    server.stop().await;
}
