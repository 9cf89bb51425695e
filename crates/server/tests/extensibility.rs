//! The app extended the ways the examples show: own routes and templates, an extra static
//! folder, a tower layer, the whole app nested under a prefix, and a route that switches
//! its connection to another protocol (as WebSocket routes do) under `webgear_rtc::serve`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Html;
use axum::routing::get;
use common::{builder, exclusive, scratch_dir};
use tower::ServiceExt;
use tower_http::cors::CorsLayer;
use webgear_rtc::minijinja::context;
use webgear_rtc::{Error, Options, WebGearRtc};
use webgear_testkit::Viewer;

async fn fetch(router: Router, request: Request<Body>) -> (StatusCode, String, axum::http::HeaderMap) {
    let response = router.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, String::from_utf8_lossy(&body).into_owned(), parts.headers)
}

fn get_request(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn own_routes_render_own_templates() {
    let app = builder(Options::default()).build().await.unwrap();
    fs::write(
        app.data_location().join("templates/hello.html"),
        r#"{% extends "base.html" %}{% block content %}<h1>Hello, {{ name }}!</h1>{% endblock %}"#,
    )
    .unwrap();
    async fn hello(State(app): State<WebGearRtc>) -> Html<String> {
        Html(app.render("hello.html", "", context! { name => "visitor" }).unwrap())
    }
    let router = app.router().merge(Router::new().route("/hello", get(hello)).with_state(app.clone()));

    let (status, page, _) = fetch(router.clone(), get_request("/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("<h1>Hello, visitor!</h1>"), "{page}");
    assert!(page.contains(r#"href="/static/css/webgear.css""#), "the base theme wraps it: {page}");
    let (status, page, _) = fetch(router, get_request("/")).await;
    assert_eq!(status, StatusCode::OK, "the stream page is still there");
    assert!(page.contains("<video"));
    app.shutdown().await;
}

#[tokio::test]
async fn an_extra_static_folder_is_served_and_known_to_url_for() {
    let media = scratch_dir();
    fs::write(media.join("poster.txt"), "a poster").unwrap();
    let app = builder(Options::default()).static_folder("media", "/media", &media).build().await.unwrap();
    fs::write(
        app.data_location().join("templates/index.html"),
        r#"<img src="{{ url_for('media', path='/poster.txt') }}">"#,
    )
    .unwrap();
    let (status, body, _) = fetch(app.router(), get_request("/media/poster.txt")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a poster"));
    let (_, page, _) = fetch(app.router(), get_request("/")).await;
    assert_eq!(page, r#"<img src="/media/poster.txt">"#);
    let (status, _, _) = fetch(app.router(), get_request("/media/../media/poster.txt")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.shutdown().await;

    let taken = [("static", "/again"), ("x", "/static"), ("x", "/offer"), ("x", "/close_connection")];
    let malformed = [("x", "relative"), ("x", "/"), ("x", "/a/"), ("x", "/a/../b"), ("", "/a")];
    for (name, url_path) in taken.into_iter().chain(malformed) {
        let error = builder(Options::default()).static_folder(name, url_path, &media).build().await.unwrap_err();
        assert!(matches!(error, Error::StaticFolder { .. }), "{name} {url_path}: {error:?}");
    }
}

#[tokio::test]
async fn tower_layers_wrap_the_app() {
    let app = builder(Options::default()).build().await.unwrap();
    let router = app.router().layer(CorsLayer::permissive());
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri("/offer")
        .header(header::ORIGIN, "https://player.example")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let (status, _, headers) = fetch(router, preflight).await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_nested_under_a_prefix_links_and_streams_there() {
    let _lock = exclusive().await;
    let app = builder(Options::default()).build().await.unwrap();
    let site = Router::new().route("/", get(|| async { "the rest of the site" })).nest("/cam", app.router());

    // axum serves a nested router's root at the prefix itself.
    let (status, page, _) = fetch(site.clone(), get_request("/cam")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"href="/cam/static/css/webgear.css""#), "{page}");
    assert!(page.contains(r#"data-root="/cam""#), "{page}");
    assert!(page.contains(r#"class="brand" href="/cam""#), "{page}");
    let (status, _, _) = fetch(site.clone(), get_request("/cam/static/js/webgear.js")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, page, _) = fetch(site.clone(), get_request("/cam/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains(r#"<a href="/cam">Back to the stream</a>"#), "the 404 page links back into the app: {page}");
    let (_, page, _) = fetch(site.clone(), get_request("/")).await;
    assert_eq!(page, "the rest of the site");

    // Signalling works at the prefix too: a real viewer plays through /cam/offer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(webgear_rtc::serve(listener, site, std::future::pending()));
    let mut viewer = Viewer::connect(&format!("http://{addr}/cam/offer")).await.unwrap();
    let frame = viewer.next_frame(Duration::from_secs(2)).await.expect("plays through the nested app");
    assert_eq!((frame.width, frame.height), (1024, 576));
    viewer.close().unwrap();
    serve.abort();
    app.shutdown().await;
}

#[tokio::test]
async fn an_own_route_may_switch_its_connection_to_another_protocol() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = builder(Options::default()).build().await.unwrap();
    // What a WebSocket route does: answer 101, then speak another protocol on the
    // connection. This one echoes four bytes.
    let echo = get(|mut request: axum::extract::Request| async move {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut connection = hyper_util::rt::TokioIo::new(upgrade.await.expect("the connection is handed over"));
            let mut word = [0; 4];
            connection.read_exact(&mut word).await.unwrap();
            connection.write_all(&word).await.unwrap();
        });
        axum::response::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "echo")
            .body(Body::empty())
            .unwrap()
    });
    let router = app.router().route("/echo", echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = tokio::spawn(webgear_rtc::serve(listener, router, std::future::pending()));

    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "the connection closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client.write_all(b"ping").await.unwrap();
    let mut echoed = [0; 4];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echoed))
        .await
        .expect("an echo within 5 s")
        .expect("the upgraded connection echoes");
    assert_eq!(&echoed, b"ping");
    serve.abort();
    app.shutdown().await;
}
