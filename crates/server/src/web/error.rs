//! The one error type of the HTTP handlers: every failure becomes a status and a body that
//! says what was wrong with the request, never a panic or an internal detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::rtc::{AnswerError, OfferError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    /// The request is malformed; the text says how.
    #[error("{0}")]
    BadRequest(String),
    /// The offer is well-formed but cannot be served.
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl From<AnswerError> for AppError {
    fn from(error: AnswerError) -> Self {
        match error {
            AnswerError::Offer(offer) => AppError::Offer(offer),
            AnswerError::ShuttingDown => AppError::ShuttingDown,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = match &self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Offer(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        tracing::debug!(%status, error = %self, "request failed");
        (status, self.to_string()).into_response()
    }
}
