//! `POST /offer`: WebGear_RTC's signalling. The body is `{"sdp": "...", "type": "offer"}`
//! with a complete (non-trickle) offer; the reply is `{"sdp": "...", "type": "answer"}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use str0m::change::SdpOffer;

use super::AppState;
use super::error::AppError;

/// A session description as browsers' `RTCSessionDescription` serialises it.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct SessionDescription {
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
}

pub(crate) async fn offer(State(state): State<AppState>, body: Bytes) -> Result<Json<SessionDescription>, AppError> {
    state.rtc.has_room()?;
    let request: SessionDescription = serde_json::from_slice(&body).map_err(|error| {
        AppError::BadRequest(format!(
            "the body must be JSON of the form {{\"sdp\": \"...\", \"type\": \"offer\"}}: {error}"
        ))
    })?;
    if request.kind != "offer" {
        return Err(AppError::BadRequest(format!("\"type\" must be \"offer\", not {:?}", request.kind)));
    }
    let offer = SdpOffer::from_sdp_string(&request.sdp)
        .map_err(|error| AppError::BadRequest(format!("the SDP offer could not be parsed: {error}")))?;
    let answered = state.rtc.answer(offer).await?;
    Ok(Json(SessionDescription { sdp: answered.answer.to_sdp_string(), kind: "answer".into() }))
}
