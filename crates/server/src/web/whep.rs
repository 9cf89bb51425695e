//! WHEP, the WebRTC-HTTP Egress Protocol (draft-ietf-wish-whep, which follows the rules of
//! WHIP, RFC 9725), so any WHEP player can watch:
//!
//! | request | reply |
//! |---|---|
//! | `POST /whep`, an `application/sdp` offer | `201 Created`: the SDP answer, `Location` of the session, `ETag`, one `Link` per ICE server URL |
//! | `PATCH /whep/<session>`, `application/trickle-ice-sdpfrag` | `204`: the viewer's trickled candidates are taken; an ICE restart (`If-Match: *`) gets `422` |
//! | `DELETE /whep/<session>` | `200`: the session ends and the viewer is told |
//! | `OPTIONS /whep`, `OPTIONS /whep/<session>` | `200`, with CORS headers for any origin |
//!
//! Every reply of the endpoint carries `Accept-Post: application/sdp`, and every reply of
//! a session `Accept-Patch: application/trickle-ice-sdpfrag`.
//!
//! With the `whep_token` option set, `POST`, `PATCH` and `DELETE` need
//! `Authorization: Bearer <token>`. The answer is complete (the server is ICE-lite and
//! knows its candidates up front), so clients need not trickle.

use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, LINK, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use str0m::Candidate;
use str0m::change::SdpOffer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tracing::debug;

use super::error::AppError;
use super::{AppState, url_prefix};
use crate::options::IceServer;
use crate::rtc::SessionId;

/// The endpoint's path; sessions live under it.
pub(crate) const WHEP_PATH: &str = "/whep";

const SDP: &str = "application/sdp";
const TRICKLE_ICE_SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");
const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");

/// The WHEP routes, with CORS for players served from other origins.
pub(crate) fn routes() -> Router<AppState> {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([CONTENT_TYPE, AUTHORIZATION, IF_MATCH])
        .expose_headers([LOCATION, ETAG, LINK, ACCEPT_POST, ACCEPT_PATCH]);
    let accepts = |name, value| SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value));
    let endpoint =
        Router::new().route(WHEP_PATH, post(start_session)).layer(cors.clone()).layer(accepts(ACCEPT_POST, SDP));
    let session = Router::new()
        .route(&format!("{WHEP_PATH}/{{session}}"), patch(trickle).delete(end_session))
        .layer(cors)
        .layer(accepts(ACCEPT_PATCH, TRICKLE_ICE_SDPFRAG));
    endpoint.merge(session)
}

/// `POST /whep`: answers an SDP offer and starts the session.
async fn start_session(
    State(state): State<AppState>,
    original: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    authorize(&state, &headers)?;
    require_content_type(&headers, SDP, "WHEP offers")?;
    state.rtc.has_room()?;
    let text =
        std::str::from_utf8(&body).map_err(|_| AppError::BadRequest("the SDP offer is not UTF-8 text".to_owned()))?;
    let offer = SdpOffer::from_sdp_string(text)
        .map_err(|error| AppError::BadRequest(format!("the SDP offer could not be parsed: {error}")))?;
    let answered = state.rtc.answer(offer).await?;

    let session = answered.session.as_str();
    let location = format!("{}{WHEP_PATH}/{session}", url_prefix(&original, WHEP_PATH));
    let mut response = (StatusCode::CREATED, answered.answer.to_sdp_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(SDP));
    headers.insert(LOCATION, header_value(&location)?);
    headers.insert(ETAG, header_value(&entity_tag(&answered.session))?);
    for link in ice_server_links(&state.ice.servers_at(SystemTime::now())) {
        headers.append(LINK, header_value(&link)?);
    }
    Ok(response)
}

/// `PATCH /whep/<session>`: trickled ICE candidates. The server is ICE-lite, so it learns
/// the viewer's working address from its checks anyway; ICE restarts are not supported
/// (a viewer whose network changed posts a new offer).
async fn trickle(
    State(state): State<AppState>,
    Path(session): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, AppError> {
    authorize(&state, &headers)?;
    require_content_type(&headers, TRICKLE_ICE_SDPFRAG, "trickled ICE candidates")?;
    let session = SessionId::from(session);
    match headers.get(IF_MATCH).map(HeaderValue::to_str) {
        Some(Ok("*")) => {
            return Err(AppError::Unprocessable(
                "ICE restarts are not supported: end this session and POST a new offer".to_owned(),
            ));
        }
        Some(Ok(tag)) if tag != entity_tag(&session) => {
            return Err(AppError::PreconditionFailed(format!(
                "If-Match {tag} does not match this session's ICE session {}",
                entity_tag(&session)
            )));
        }
        Some(Err(_)) => return Err(AppError::BadRequest("the If-Match header is not text".to_owned())),
        // No If-Match: clients should send one, but the fragment is still usable.
        _ => {}
    }
    let fragment = std::str::from_utf8(&body)
        .map_err(|_| AppError::BadRequest("the SDP fragment is not UTF-8 text".to_owned()))?;
    let candidates = fragment
        .lines()
        .filter_map(|line| line.trim().strip_prefix("a="))
        .filter(|attribute| attribute.starts_with("candidate:"))
        .filter_map(|attribute| match Candidate::from_sdp_string(attribute) {
            Ok(candidate) => Some(candidate),
            // Such as mDNS (`….local`) host names, which a server cannot resolve.
            Err(error) => {
                debug!(%error, attribute, "skipping a trickled candidate");
                None
            }
        })
        .collect();
    if state.rtc.add_candidates(session.clone(), candidates).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_session(&session))
    }
}

/// `DELETE /whep/<session>`: the viewer leaves.
async fn end_session(
    State(state): State<AppState>,
    Path(session): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, AppError> {
    authorize(&state, &headers)?;
    let session = SessionId::from(session);
    if state.rtc.close_session(session.clone()).await? { Ok(StatusCode::OK) } else { Err(no_such_session(&session)) }
}

fn no_such_session(session: &SessionId) -> AppError {
    AppError::NotFound(format!("no WHEP session {} (it ended, or never existed)", session.as_str()))
}

/// The entity tag of a session's ICE session. ICE is never restarted, so it is fixed for
/// the session's life.
fn entity_tag(session: &SessionId) -> String {
    format!("\"{}\"", session.as_str())
}

/// Checks the bearer token, when the server asks for one.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(expected) = &state.whep_token else {
        return Ok(());
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim);
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(AppError::Unauthorized("the bearer token is not valid for this server")),
        None => Err(AppError::Unauthorized("this server needs an `Authorization: Bearer <token>` header")),
    }
}

/// Compares without stopping at the first difference, so timing does not reveal how much
/// of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |differences, (x, y)| differences | (x ^ y)) == 0
}

fn require_content_type(headers: &HeaderMap, expected: &str, what: &str) -> Result<(), AppError> {
    let given = headers.get(CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        let given = if given.is_empty() { "none".to_owned() } else { format!("{given:?}") };
        Err(AppError::UnsupportedMediaType(format!("{what} must be sent as Content-Type: {expected}, not {given}")))
    }
}

/// One `Link` header value per ICE server URL (RFC 9725, section 4.6).
fn ice_server_links(servers: &[IceServer]) -> Vec<String> {
    let quoted = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    servers
        .iter()
        .flat_map(|server| {
            server.urls.iter().map(move |url| {
                let mut link = format!("<{url}>; rel=\"ice-server\"");
                if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                    link.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        quoted(username),
                        quoted(credential)
                    ));
                }
                link
            })
        })
        .collect()
}

fn header_value(text: &str) -> Result<HeaderValue, AppError> {
    HeaderValue::from_str(text).map_err(|error| AppError::internal("writing a WHEP response header", &error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_name_each_url_with_its_credentials() {
        let servers = [
            IceServer::parse("stun:stun.example.net:3478").unwrap(),
            IceServer {
                urls: vec!["turn:turn.example.net?transport=udp".into(), "turns:turn.example.net".into()],
                username: Some("user".into()),
                credential: Some("pa\"ss".into()),
            },
        ];
        assert_eq!(
            ice_server_links(&servers),
            [
                "<stun:stun.example.net:3478>; rel=\"ice-server\"",
                "<turn:turn.example.net?transport=udp>; rel=\"ice-server\"; username=\"user\"; \
                 credential=\"pa\\\"ss\"; credential-type=\"password\"",
                "<turns:turn.example.net>; rel=\"ice-server\"; username=\"user\"; \
                 credential=\"pa\\\"ss\"; credential-type=\"password\"",
            ]
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
