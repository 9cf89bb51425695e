//! The web app: `GET /` serves the player page and `POST /offer` exchanges SDP the way
//! WebGear_RTC does. [`router`] returns a plain `axum::Router`, so users add their own
//! routes, nest it and wrap it in layers like any axum app.
//!
//! The web layer only hands out sessions; it never touches frames.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

mod error;
mod offer;

use crate::rtc::RtcServer;

/// SDP offers are a few kilobytes; anything far larger is refused before parsing.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) rtc: Arc<RtcServer>,
}

/// The app's routes.
pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/offer", post(offer::offer))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        format!("nothing here: {}", uri.path()),
    )
}
