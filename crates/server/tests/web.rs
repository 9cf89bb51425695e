//! The web app over HTTP against the real router: data files, templates, pages, static
//! files, errors, /close_connection and the options that shape them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::fs;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestServer, builder, exclusive, scratch_dir};
use tower::ServiceExt;
use webgear_rtc::{Error, Options, WebGearRtc};

async fn get(app: &WebGearRtc, uri: &str) -> (StatusCode, String, Option<String>) {
    let response = app.router().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned(), content_type)
}

async fn post(app: &WebGearRtc, uri: &str, body: &str) -> (StatusCode, String) {
    let request = Request::post(uri).body(Body::from(body.to_owned())).unwrap();
    let response = app.router().oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Whether a page or asset refers to anything outside the server (scripts, styles, fonts,
/// images, STUN servers). An SVG's `xmlns` is a name, not a load.
fn loads_from_outside(text: &str) -> bool {
    ["src=\"http", "href=\"http", "url(http", "url(\"http", "url('http", "@import", "stun:", "fetch(\"http"]
        .iter()
        .any(|marker| text.contains(marker))
}

fn options_in(folder: &std::path::Path) -> Options {
    let mut options = Options::default();
    options.set("custom_data_location", &serde_json::json!(folder.to_path_buf())).unwrap();
    options
}

#[tokio::test]
async fn the_default_site_is_generated_and_served() {
    let folder = scratch_dir();
    let app = builder(options_in(&folder)).build().await.unwrap();
    assert_eq!(app.data_location(), folder.join(".vidgear/webgear_rtc"));
    assert!(app.data_location().join("templates/index.html").is_file());

    let (status, page, content_type) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.unwrap().starts_with("text/html"));
    assert!(page.contains("<video"), "{page}");
    assert!(page.contains(r#"href="/static/css/webgear.css""#), "{page}");
    assert!(page.contains(r#"src="/static/js/webgear.js""#), "{page}");
    assert!(!loads_from_outside(&page), "{page}");

    for (path, kind) in [
        ("/static/css/webgear.css", "text/css"),
        ("/static/js/webgear.js", "javascript"),
        ("/static/img/favicon.svg", "image/svg+xml"),
    ] {
        let (status, body, content_type) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(content_type.unwrap().contains(kind), "{path}");
        assert!(!loads_from_outside(&body), "{path} loads nothing from outside");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_traversal_get_the_404_page() {
    let folder = scratch_dir();
    let app = builder(options_in(&folder)).build().await.unwrap();
    fs::write(app.data_location().join("templates/404.html"), "custom 404 at {{ url_prefix }}/").unwrap();
    for path in [
        "/nope",
        "/static/missing.css",
        "/static/../templates/index.html",
        "/static/%2e%2e/templates/index.html",
        "/static/..%2ftemplates/index.html",
        "/static/%2e%2e%2ftemplates%2findex.html",
        "/static/css/..%5c..%5ctemplates%5cindex.html",
    ] {
        let (status, body, _) = get(&app, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body, "custom 404 at /", "{path}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn get_offer_is_405_and_close_connection_validates_its_body() {
    let app = builder(Options::default()).build().await.unwrap();
    let (status, _, _) = get(&app, "/offer").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(post(&app, "/close_connection", "0").await, (StatusCode::OK, "OK".into()));
    assert_eq!(post(&app, "/close_connection", "1").await, (StatusCode::OK, "OK".into()));
    let (status, body) = post(&app, "/close_connection", "please").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("must be 0 or 1"), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_broken_template_renders_500_or_with_logging_a_readable_report() {
    for logging in [false, true] {
        let folder = scratch_dir();
        let mut options = options_in(&folder);
        options.set("logging", &serde_json::json!(logging)).unwrap();
        let app = builder(options).build().await.unwrap();
        let templates = app.data_location().join("templates");
        fs::write(templates.join("index.html"), r#"{% extends "no-such-base.html" %}"#).unwrap();
        fs::write(templates.join("500.html"), "custom 500").unwrap();

        let (status, body, _) = get(&app, "/").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        if logging {
            assert!(body.contains("rendering templates/index.html failed"), "{body}");
            assert!(body.contains("no-such-base.html"), "the report says why: {body}");
        } else {
            assert_eq!(body, "custom 500", "no internals leak without logging");
        }
        app.shutdown().await;
    }
}

#[tokio::test]
async fn a_template_written_for_vidgears_theme_renders_unchanged() {
    let folder = scratch_dir();
    // A user's existing WebGear_RTC site: their own base and index, in vidgear's style.
    let templates = folder.join(".vidgear/webgear_rtc/templates");
    fs::create_dir_all(&templates).unwrap();
    fs::write(
        templates.join("base.html"),
        r#"<html><head><title>{% block title %}WebGear_RTC{% endblock %}</title>
<link rel="stylesheet" href="{{ url_for('static', path='/css/custom.css') }}">
<link rel="icon" href="{{ url_for('static', path='/img/favicon-32x32.png') }}">
</head><body>{% include "header.html" %}{% block content %}{% endblock %}
<script src="{{ url_for('static', path='/js/custom.js') }}"></script></body></html>"#,
    )
    .unwrap();
    fs::write(templates.join("header.html"), "<header>My camera</header>").unwrap();
    fs::write(
        templates.join("index.html"),
        r#"{% extends "base.html" %}{% block title %}Garden cam{% endblock %}
{% block content %}<video id="my-video" autoplay playsinline></video>{% endblock %}"#,
    )
    .unwrap();
    fs::write(templates.join("404.html"), "{% extends \"base.html\" %}{% block content %}lost{% endblock %}").unwrap();
    fs::write(templates.join("500.html"), "broken").unwrap();

    let app = builder(options_in(&folder)).build().await.unwrap();
    let (status, page, _) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    for expected in [
        "<title>Garden cam</title>",
        r#"href="/static/css/custom.css""#,
        r#"href="/static/img/favicon-32x32.png""#,
        r#"src="/static/js/custom.js""#,
        "<header>My camera</header>",
        r#"<video id="my-video" autoplay playsinline></video>"#,
    ] {
        assert!(page.contains(expected), "missing {expected:?} in {page}");
    }
    // All three critical files existed, so nothing of the user's was replaced.
    assert_eq!(fs::read_to_string(templates.join("500.html")).unwrap(), "broken");
    app.shutdown().await;
}

#[tokio::test]
async fn an_unusable_data_location_stops_the_build_with_a_clear_error() {
    let missing = scratch_dir().join("not-there");
    let error = builder(options_in(&missing)).build().await.unwrap_err();
    assert!(matches!(error, Error::Data(_)), "{error:?}");
    assert!(error.to_string().contains("not-there"), "{error}");
    assert!(error.to_string().contains("is not an existing directory"), "{error}");

    let error = WebGearRtc::builder().build().await.unwrap_err();
    assert!(matches!(error, Error::NoSource), "{error:?}");
}

#[tokio::test]
async fn an_option_set_in_code_is_checked_as_everywhere_else() {
    let error = builder(Options::default()).frame_size_reduction(95).build().await.unwrap_err();
    assert!(matches!(error, Error::Option(_)), "{error:?}");
    assert!(
        error.to_string().contains("`frame_size_reduction`: expected a whole number of percent from 0 to 90"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_connection_closes_every_viewer_unless_broadcasting() {
    let _lock = exclusive().await;
    for broadcast in [false, true] {
        let mut options = Options::default();
        options.set("enable_live_broadcast", &serde_json::json!(broadcast)).unwrap();
        let server = TestServer::start_with(builder(options)).await;
        let (mut first, _) = server.playing_viewer().await;
        let (_second, _) = server.playing_viewer().await;
        let http = reqwest::Client::new();
        let reply = |body: &'static str| http.post(server.url("/close_connection")).body(body).send();

        // A page reload (0) never closes anything.
        assert_eq!(reply("0").await.unwrap().text().await.unwrap(), if broadcast { "DISABLED" } else { "OK" });
        assert_eq!(server.app.stats().viewers, 2);

        let answer = reply("1").await.unwrap().text().await.unwrap();
        if broadcast {
            assert_eq!(answer, "DISABLED");
            assert_eq!(server.app.stats().viewers, 2);
            assert!(first.frames_during(Duration::from_millis(500)).await.len() >= 10, "still streaming");
        } else {
            assert_eq!(answer, "OK");
            assert_eq!(server.app.stats().viewers, 0, "every peer closed before the answer");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(first.frames_during(Duration::from_millis(500)).await.is_empty(), "no frames after closing");
            // New viewers are still welcome, on a restarted clock.
            let (_third, frame) = server.playing_viewer().await;
            assert!(frame.number.is_some());
        }
        server.stop().await;
    }
}
