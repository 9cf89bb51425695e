//! WHEP: a player posts an `application/sdp` offer, gets `201 Created` with the answer, the
//! session's `Location`, an `ETag` and the ICE servers in `Link` headers, trickles with
//! `PATCH` and leaves with `DELETE`. Our own client and Chromium (a WHEP player page on
//! another origin) both watch this way; bad requests get a status that names the problem.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{TestServer, builder, exclusive, options};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, ETAG, LOCATION};
use serde_json::json;
use webgear_rtc::Options;
use webgear_testkit::{Browser, Endpoint, Viewer};

fn whep(server: &TestServer, token: Option<&str>) -> Endpoint {
    Endpoint::Whep { url: server.url("/whep"), token: token.map(str::to_owned) }
}

/// Waits (up to 5 s) until the server holds `viewers` viewers.
async fn wait_for_viewers(server: &TestServer, viewers: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.app.stats().viewers != viewers {
        assert!(tokio::time::Instant::now() < deadline, "expected {viewers} viewers: {:?}", server.app.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_client_watches_learns_the_ice_servers_and_leaves_with_delete() {
    let _lock = exclusive().await;
    let server = TestServer::start_with(builder(options(json!({
        "ice_servers": ["stun:stun.example.net:3478", "turn:alice:s3cret@turn.example.net:3478?transport=udp"],
    }))))
    .await;
    let mut viewer = Viewer::connect_to(&whep(&server, None)).await.unwrap();
    let first = viewer.next_frame(Duration::from_secs(3)).await.expect("the WHEP viewer plays");
    assert_eq!((first.width, first.height), (1024, 576));
    let seen = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(seen.len() >= 25, "{} frames in 1 s", seen.len());

    let session = viewer.session().expect("a WHEP session").clone();
    assert!(session.url.starts_with(&server.url("/whep/")), "{}", session.url);
    assert!(session.etag.as_deref().is_some_and(|tag| tag.starts_with('"')), "{:?}", session.etag);
    assert_eq!(
        session.links,
        [
            "<stun:stun.example.net:3478>; rel=\"ice-server\"",
            "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"alice\"; \
             credential=\"s3cret\"; credential-type=\"password\"",
        ]
    );
    assert_eq!(server.app.stats().viewers, 1);

    // DELETE ends the session at once: the viewer is told (RTCP BYE, DTLS close) and the
    // server lets go without waiting for a timeout.
    assert_eq!(session.end().await.unwrap(), StatusCode::OK);
    wait_for_viewers(&server, 0).await;
    // Packets already on their way may still be decoded (and queued); nothing comes after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = viewer.frames_during(Duration::from_millis(500)).await;
    assert!(after.is_empty(), "{} frames after DELETE", after.len());
    assert_eq!(session.end().await.unwrap(), StatusCode::NOT_FOUND, "the session is gone");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_whep_requests_get_a_status_naming_the_problem_while_a_viewer_keeps_playing() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    let mut viewer = Viewer::connect_to(&whep(&server, None)).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer plays");
    let session = viewer.session().unwrap().clone();
    let etag = session.etag.clone().unwrap();
    let http = reqwest::Client::new();
    let sdpfrag = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
                   a=candidate:1 1 udp 2113937151 127.0.0.1 40000 typ host\r\n\
                   a=candidate:2 1 udp 2113937151 1f2e3d4c-aaaa.local 40001 typ host\r\n";
    let patch = |url: &str| http.patch(url).header(CONTENT_TYPE, "application/trickle-ice-sdpfrag").body(sdpfrag);
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "a JSON offer",
            http.post(server.url("/whep")).json(&json!({"sdp": "v=0", "type": "offer"})),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type: application/sdp, not \"application/json\"",
        ),
        ("no content type", http.post(server.url("/whep")).body("v=0"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "not none"),
        (
            "garbage SDP",
            http.post(server.url("/whep")).header(CONTENT_TYPE, "application/sdp").body("this is not SDP"),
            StatusCode::BAD_REQUEST,
            "SDP offer could not be parsed",
        ),
        (
            "a huge body",
            http.post(server.url("/whep")).header(CONTENT_TYPE, "application/sdp").body("v".repeat(1 << 20)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            "a trickle with the wrong content type",
            http.patch(&session.url).header(CONTENT_TYPE, "application/sdp").body(sdpfrag),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/trickle-ice-sdpfrag",
        ),
        (
            "a trickle to an unknown session",
            patch(&server.url("/whep/nope")),
            StatusCode::NOT_FOUND,
            "no WHEP session nope",
        ),
        (
            "an ICE restart",
            patch(&session.url).header("If-Match", "*"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restarts are not supported",
        ),
        (
            "a stale entity tag",
            patch(&session.url).header("If-Match", "\"old\""),
            StatusCode::PRECONDITION_FAILED,
            "does not match",
        ),
        (
            "DELETE of an unknown session",
            http.delete(server.url("/whep/nope")),
            StatusCode::NOT_FOUND,
            "no WHEP session",
        ),
        ("GET of the endpoint", http.get(server.url("/whep")), StatusCode::METHOD_NOT_ALLOWED, ""),
    ];
    for (what, request, status, says) in cases {
        let response = common::send(request).await;
        assert_eq!(response.status(), status, "{what}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{what}: {body:?} does not say {says:?}");
    }

    // A well-formed trickle is taken (the mDNS candidate is skipped, not an error).
    let response = patch(&session.url).header("If-Match", &etag).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // OPTIONS (and every other reply) says what the endpoint and the session take.
    let endpoint = http.request(reqwest::Method::OPTIONS, server.url("/whep")).send().await.unwrap();
    assert!(endpoint.status().is_success(), "{}", endpoint.status());
    assert_eq!(endpoint.headers()["accept-post"], "application/sdp");
    let resource = http.request(reqwest::Method::OPTIONS, &session.url).send().await.unwrap();
    assert_eq!(resource.headers()["accept-patch"], "application/trickle-ice-sdpfrag");

    // A CORS pre-flight from a player on another origin is allowed, as is reading the
    // headers a player needs from the answer.
    let preflight = http
        .request(reqwest::Method::OPTIONS, server.url("/whep"))
        .header("Origin", "https://player.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,authorization")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let allowed = preflight.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(["POST", "PATCH", "DELETE"].iter().all(|m| allowed.contains(m)), "{allowed}");

    let seen = viewer.frames_during(Duration::from_secs(1)).await;
    assert!(seen.len() >= 25, "the viewer kept playing: {} frames in 1 s", seen.len());
    assert_eq!(server.app.stats().viewers, 1, "no bad request left a session behind");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_every_whep_request() {
    let _lock = exclusive().await;
    let server = TestServer::start_with(builder(options(json!({"whep_token": "let-me-in"})))).await;
    for token in [None, Some("wrong")] {
        let error = Viewer::connect_to(&whep(&server, token)).await.unwrap_err().to_string();
        assert!(error.contains("401"), "{token:?}: {error}");
    }
    let response = reqwest::Client::new()
        .post(server.url("/whep"))
        .header(CONTENT_TYPE, "application/sdp")
        .body("v=0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(response.text().await.unwrap().contains("Authorization: Bearer"));

    let mut viewer = Viewer::connect_to(&whep(&server, Some("let-me-in"))).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the viewer with the token plays");
    let session = viewer.session().unwrap().clone();
    let unauthorized = reqwest::Client::new().delete(&session.url).send().await.unwrap();
    assert_eq!(unauthorized.status(), StatusCode::UNAUTHORIZED, "DELETE needs the token too");
    assert_eq!(server.app.stats().viewers, 1);
    assert_eq!(session.end().await.unwrap(), StatusCode::OK);
    wait_for_viewers(&server, 0).await;
    // The page and /offer are not WHEP: the token does not guard them.
    assert_eq!(reqwest::get(server.url("/")).await.unwrap().status(), StatusCode::OK);
    server.stop().await;
}

/// Serves the WHEP player page on its own port: another origin than the server's.
async fn serve_player() -> (String, tokio::task::JoinHandle<()>) {
    let page = include_str!("fixtures/whep-player.html");
    let router = axum::Router::new().route("/", axum::routing::get(move || async move { axum::response::Html(page) }));
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let url = format!("http://localhost:{}/", listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_through_a_whep_player_on_another_origin() {
    let _lock = exclusive().await;
    let server = TestServer::start_with(builder(options(json!({
        "whep_token": "let-me-in",
        "ice_servers": ["stun:127.0.0.1:9"],
    }))))
    .await;
    let (player, player_task) = serve_player().await;
    let browser = Browser::launch().await.expect("headless Chromium starts (needs chromium and chromium-driver)");
    browser.goto(&format!("{player}?whep={}&token=let-me-in", server.url("/whep"))).await.unwrap();

    let state = r#"
        const video = document.getElementById("video");
        return Object.assign({}, window.whep, {
            frames: video.getVideoPlaybackQuality().totalVideoFrames,
            width: video.videoWidth,
            connection: window.pc && window.pc.connectionState,
            ice: window.pc && window.pc.iceConnectionState,
        });
    "#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let playing = loop {
        let value = browser.eval(state).await.unwrap();
        assert!(value["error"].is_null(), "the player failed: {value}");
        if value["frames"].as_u64().unwrap_or(0) >= 30 {
            break value;
        }
        assert!(tokio::time::Instant::now() < deadline, "the WHEP player never played: {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(playing["status"], 201, "{playing}");
    assert_eq!(playing["width"], 1024, "{playing}");
    assert!(playing["location"].as_str().unwrap().starts_with("/whep/"), "{playing}");
    assert_eq!(playing["links"], json!(["<stun:127.0.0.1:9>; rel=\"ice-server\""]), "CORS exposes Link: {playing}");
    let patches = playing["patches"].as_array().unwrap();
    assert!(!patches.is_empty() && patches.iter().all(|s| s == 204), "trickled candidates taken: {playing}");
    assert_eq!(server.app.stats().viewers, 1);

    browser.eval("await window.leave(); return window.whep.ended;").await.unwrap();
    let ended = browser.eval("return window.whep.ended;").await.unwrap();
    assert_eq!(ended, 200, "DELETE from the page");
    wait_for_viewers(&server, 0).await;

    browser.close().await.unwrap();
    player_task.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_location_follows_the_path_the_app_is_nested_under() {
    let _lock = exclusive().await;
    let app = builder(Options::default()).build().await.unwrap();
    let router = axum::Router::new().nest("/cam", app.router());
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(webgear_rtc::serve(listener, router, std::future::pending()));
    let endpoint = Endpoint::Whep { url: format!("http://{addr}/cam/whep"), token: None };
    let mut viewer = Viewer::connect_to(&endpoint).await.unwrap();
    viewer.next_frame(Duration::from_secs(3)).await.expect("the nested WHEP endpoint serves");
    let session = viewer.session().unwrap().clone();
    assert!(session.url.starts_with(&format!("http://{addr}/cam/whep/")), "{}", session.url);
    assert_eq!(session.end().await.unwrap(), StatusCode::OK);
    serve.abort();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_sdp_with_the_session_headers() {
    let _lock = exclusive().await;
    let server = TestServer::start().await;
    // A real offer from a WebRTC stack (str0m), sent by hand to look at the raw reply.
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(str0m::media::MediaKind::Video, str0m::media::Direction::RecvOnly, None, None, None);
    let (offer, _) = change.apply().unwrap();
    let response = reqwest::Client::new()
        .post(server.url("/whep"))
        .header(CONTENT_TYPE, "application/sdp; charset=utf-8")
        .body(offer.to_sdp_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/sdp");
    let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(location.len() > "/whep/".len() + 20, "an unguessable session id: {location}");
    assert!(response.headers().contains_key(ETAG));
    assert!(response.headers().get("link").is_none(), "no ICE servers configured, no Link");
    let answer = response.text().await.unwrap();
    assert!(answer.starts_with("v=0") && answer.contains("a=candidate:"), "{answer}");
    // Transport-wide congestion feedback (offered by str0m, as by browsers) is not taken
    // up: viewers estimate their bandwidth on their side and send it (REMB).
    let transport_cc = "transport-wide-cc-extensions";
    assert!(offer.to_sdp_string().contains(transport_cc));
    assert!(!answer.contains(transport_cc), "{answer}");
    server.stop().await;
}
