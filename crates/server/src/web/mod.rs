//! The web app, route for route as WebGear_RTC serves it:
//!
//! | route | behaviour |
//! |---|---|
//! | `GET /` | renders `templates/index.html` |
//! | `POST /offer` | JSON SDP offer in, JSON answer out ([`offer`]) |
//! | `POST /close_connection` | closes the peers (`OK`), or `DISABLED` when broadcasting |
//! | `GET /metrics` | Prometheus (OpenMetrics) text, unless `enable_metrics` is false |
//! | `/whep`, `/whep/<session>` | WHEP signalling for standard players ([`whep`]) |
//! | `/static/...` | files under the data folder's `static/` |
//! | anything else | renders `templates/404.html` with status 404 |
//!
//! Failures render `templates/500.html` (with logging on, a readable error report
//! instead). [`router`] returns a plain `axum::Router`, so users add their own routes,
//! nest it and wrap it in layers like any axum app. The web layer only hands out
//! sessions; it never touches frames.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::services::ServeDir;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

mod data;
mod error;
mod offer;
mod serve;
mod templates;
mod whep;

pub use data::DataError;
pub(crate) use data::DataFiles;
pub(crate) use error::AppError;
use error::ErrorReport;
pub use serve::{HEADER_READ_TIMEOUT, STOP_GRACE, raise_open_file_limit, serve};
pub(crate) use templates::Templates;

use crate::ice::IceConfig;
use crate::rtc::RtcServer;
use crate::stream::StreamClock;

/// SDP offers are a few kilobytes; anything far larger is refused before parsing.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request whose body stops coming for this long is answered with an error (400, "data
/// was not received within the designated timeout") rather than held open: a client that
/// stalls halfway through an offer must not hold a task and a connection for ever.
const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) rtc: Arc<RtcServer>,
    pub(crate) templates: Templates,
    pub(crate) clock: StreamClock,
    /// URL path → folder, for every static folder served (`/static` first).
    pub(crate) static_dirs: Vec<(String, PathBuf)>,
    pub(crate) live_broadcast: bool,
    pub(crate) logging: bool,
    pub(crate) metrics: bool,
    /// The ICE servers given to WHEP players in `Link` headers.
    pub(crate) ice: Arc<IceConfig>,
    /// WHEP requests must carry this bearer token, when set.
    pub(crate) whep_token: Option<Arc<str>>,
}

/// The paths of the app's own routes, which static folders cannot take.
pub(crate) const ROUTES: [&str; 5] = ["/", "/offer", "/close_connection", "/metrics", whep::WHEP_PATH];

/// The app's routes.
pub(crate) fn router(state: AppState) -> Router {
    let [index_path, offer_path, close_path, metrics_path, _] = ROUTES;
    let mut router = Router::new()
        .route(index_path, get(index))
        .route(offer_path, post(offer::offer))
        .route(close_path, post(close_connection))
        .merge(whep::routes());
    if state.metrics {
        router = router.route(metrics_path, get(metrics));
    }
    for (url_path, dir) in &state.static_dirs {
        let mount = url_path.clone();
        let missing_file = get(move |State(state): State<AppState>, original: OriginalUri, request: Request| {
            let path = format!("{mount}{}", request.uri().path());
            async move { render_not_found(&state, &url_prefix(&original, &path), &original) }
        });
        router = router.nest_service(url_path, ServeDir::new(dir).fallback(missing_file.with_state(state.clone())));
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), error_pages))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyTimeoutLayer::new(BODY_STALL_TIMEOUT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The path the app is mounted under, for links in pages: what the original URI has in
/// front of the path this router sees.
fn url_prefix(original: &OriginalUri, request_path: &str) -> String {
    let full = original.path();
    let prefix = full.strip_suffix(request_path).unwrap_or(full);
    prefix.trim_end_matches('/').to_owned()
}

async fn index(State(state): State<AppState>, original: OriginalUri) -> Result<Html<String>, AppError> {
    let prefix = url_prefix(&original, "/");
    let page = state
        .templates
        .render("index.html", &prefix, minijinja::Value::UNDEFINED)
        .map_err(|error| AppError::internal("rendering templates/index.html", &error))?;
    Ok(Html(page))
}

async fn not_found(State(state): State<AppState>, original: OriginalUri, request: Request) -> Response {
    render_not_found(&state, &url_prefix(&original, request.uri().path()), &original)
}

/// Renders `404.html`, or a plain message if that template is broken.
fn render_not_found(state: &AppState, prefix: &str, original: &OriginalUri) -> Response {
    match state.templates.render("404.html", prefix, minijinja::Value::UNDEFINED) {
        Ok(page) => (StatusCode::NOT_FOUND, Html(page)).into_response(),
        Err(error) => {
            tracing::warn!(%error, "templates/404.html failed to render");
            (StatusCode::NOT_FOUND, format!("nothing here: {}", original.path())).into_response()
        }
    }
}

/// WebGear_RTC's reset: body `1` closes every peer and restarts the stream clock; `0` (a
/// page reload) changes nothing. A live broadcast answers `DISABLED` and changes nothing.
async fn close_connection(State(state): State<AppState>, body: String) -> Result<&'static str, AppError> {
    if state.live_broadcast {
        return Ok("DISABLED");
    }
    match body.trim() {
        "0" => Ok("OK"),
        "1" => {
            state.rtc.close_all().await;
            state.clock.reset();
            Ok("OK")
        }
        other => Err(AppError::BadRequest(format!("the body must be 0 or 1, not {other:?}"))),
    }
}

/// Viewers, encoders, frames, bytes and per-stage timings, for Prometheus to scrape.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, OPENMETRICS_TEXT)], state.rtc.prometheus_text())
}

/// The content type of the OpenMetrics text format, which Prometheus scrapes.
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Turns an [`ErrorReport`] left by a handler into the `500.html` page, or with logging on
/// into a readable report of what failed and why.
async fn error_pages(State(state): State<AppState>, original: OriginalUri, request: Request, next: Next) -> Response {
    let prefix = url_prefix(&original, request.uri().path());
    let response = next.run(request).await;
    let Some(report) = response.extensions().get::<ErrorReport>() else {
        return response;
    };
    let status = response.status();
    if state.logging {
        return (status, Html(report.to_html())).into_response();
    }
    match state.templates.render("500.html", &prefix, minijinja::Value::UNDEFINED) {
        Ok(page) => (status, Html(page)).into_response(),
        Err(error) => {
            tracing::warn!(%error, "templates/500.html failed to render");
            (status, "internal server error").into_response()
        }
    }
}
