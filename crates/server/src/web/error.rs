//! The one error type of the HTTP handlers: every failure becomes a status and a body that
//! says what was wrong with the request, never a panic. Internal failures carry an
//! [`ErrorReport`] that the error-page layer renders as `500.html` (or, with logging on,
//! as the report itself).

use std::error::Error as StdError;
use std::fmt::Write as _;

use axum::http::StatusCode;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::response::{IntoResponse, Response};

use super::templates::escape_html;
use crate::rtc::{AnswerError, OfferError};

/// How long a client refused by a full server is asked to wait before offering again.
const FULL_RETRY_AFTER_SECONDS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// The request is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// The request needs a credential it lacks.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// No such resource (e.g. a WHEP session that ended).
    #[error("{0}")]
    NotFound(String),
    /// The body's content type is not the one this route takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// An `If-Match` precondition does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// Well-formed, but asks for something this server does not do.
    #[error("{0}")]
    Unprocessable(String),
    /// The offer is well-formed but cannot be served.
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The server holds as many viewers as it may.
    #[error("the server is at its limit of {0} viewers; try again later")]
    Full(usize),
    /// The server is too busy for another viewer (the text says why).
    #[error("{0}")]
    Saturated(String),
    /// Something on the server failed; shown as the 500 page.
    #[error("{0}")]
    Internal(ErrorReport),
}

impl AppError {
    /// An internal failure while doing `what`, with the error and its causes.
    pub(crate) fn internal(what: &str, error: &(dyn StdError + 'static)) -> AppError {
        let mut causes = Vec::new();
        let mut next = Some(error);
        while let Some(cause) = next {
            causes.push(format!("{cause:#}"));
            next = cause.source();
        }
        AppError::Internal(ErrorReport { what: what.to_owned(), causes })
    }
}

impl From<AnswerError> for AppError {
    fn from(error: AnswerError) -> Self {
        match error {
            AnswerError::Offer(offer) => AppError::Offer(offer),
            AnswerError::ShuttingDown => AppError::ShuttingDown,
            AnswerError::Full(max) => AppError::Full(max),
            saturated @ AnswerError::Saturated(_) => AppError::Saturated(saturated.to_string()),
            AnswerError::Randomness(error) => AppError::internal("making a session id", &error),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            AppError::Offer(_) | AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::ShuttingDown | AppError::Full(_) | AppError::Saturated(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::debug!(%status, error = %self, "request failed");
        match self {
            AppError::Internal(report) => {
                let mut response = (status, report.to_string()).into_response();
                response.extensions_mut().insert(report);
                response
            }
            // Clients (the default page reconnects by itself) should not hammer a full server.
            AppError::Full(_) | AppError::Saturated(_) => {
                (status, [(RETRY_AFTER, FULL_RETRY_AFTER_SECONDS)], self.to_string()).into_response()
            }
            AppError::Unauthorized(_) => (status, [(WWW_AUTHENTICATE, "Bearer")], self.to_string()).into_response(),
            other => (status, other.to_string()).into_response(),
        }
    }
}

/// What failed and why, for the 500 page's logging-mode report.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReport {
    what: String,
    causes: Vec<String>,
}

impl std::fmt::Display for ErrorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.what, self.causes.join(": "))
    }
}

impl ErrorReport {
    /// A self-contained HTML page with the report, escaped.
    pub(crate) fn to_html(&self) -> String {
        let mut causes = String::new();
        for cause in &self.causes {
            let _ = write!(causes, "<li><pre>{}</pre></li>", escape_html(cause));
        }
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>500: {what}</title></head>\
             <body style=\"font-family:system-ui,sans-serif;margin:2rem\"><h1>500: {what} failed</h1>\
             <p>Error report (shown because logging is enabled):</p><ol>{causes}</ol></body></html>",
            what = escape_html(&self.what),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use super::*;

    #[tokio::test]
    async fn a_saturated_server_answers_503_with_a_retry_after_and_why() {
        let response = AppError::from(AnswerError::Saturated(1234)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], FULL_RETRY_AFTER_SECONDS);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("at capacity") && text.contains("1234 viewers"), "{text}");
    }
}
