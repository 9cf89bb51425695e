//! The ICE servers viewers are given: by the default page (its `RTCConfiguration`) and in
//! WHEP's `Link` headers. The server itself is ICE-lite and needs none.
//!
//! With `turn_secret` set, TURN servers listed without credentials get fresh ones for every
//! viewer, by the TURN REST API scheme that coturn's `use-auth-secret` checks: the user
//! name is the expiry time (Unix seconds) and a name, the password the base64 HMAC-SHA1 of
//! that user name under the shared secret. Long-term TURN passwords then never reach a
//! browser, and what a viewer learns stops working after `turn_credential_lifetime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::options::{IceServer, IceTransportPolicy, Options};

/// The name part of minted TURN user names.
const TURN_USER: &str = "webgear-rtc";

/// What viewers are told about ICE.
#[derive(Debug, Clone)]
pub(crate) struct IceConfig {
    servers: Vec<IceServer>,
    policy: IceTransportPolicy,
    /// The secret shared with the TURN server, for minted credentials.
    secret: Option<String>,
    lifetime: Duration,
}

/// A TURN server that cannot be used as configured.
#[derive(Debug, thiserror::Error)]
#[error("TURN server {url} has no username and credential: write turn:USER:PASSWORD@host, or set turn_secret")]
pub struct MissingTurnCredentials {
    url: String,
}

impl IceConfig {
    /// The ICE settings of `options`. Every TURN server needs credentials of its own or a
    /// `turn_secret` to mint them.
    pub(crate) fn from_options(options: &Options) -> Result<IceConfig, MissingTurnCredentials> {
        let secret = options.turn_secret();
        let servers = options.ice_servers();
        for server in &servers {
            let turn = server.urls.iter().find(|url| url.starts_with("turn"));
            if let Some(url) = turn
                && secret.is_none()
                && (server.username.is_none() || server.credential.is_none())
            {
                return Err(MissingTurnCredentials { url: url.clone() });
            }
        }
        Ok(IceConfig {
            servers,
            policy: options.ice_transport_policy(),
            secret,
            lifetime: options.turn_credential_lifetime(),
        })
    }

    /// The servers as a viewer arriving at `now` gets them: minted credentials where the
    /// configuration has none.
    pub(crate) fn servers_at(&self, now: SystemTime) -> Vec<IceServer> {
        let Some(secret) = &self.secret else {
            return self.servers.clone();
        };
        let expiry = (now + self.lifetime).duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let (username, credential) = turn_rest_credentials(secret, expiry);
        self.servers
            .iter()
            .map(|server| {
                let turn = server.urls.iter().any(|url| url.starts_with("turn"));
                if turn && server.username.is_none() {
                    IceServer {
                        username: Some(username.clone()),
                        credential: Some(credential.clone()),
                        ..server.clone()
                    }
                } else {
                    server.clone()
                }
            })
            .collect()
    }

    /// What the default page gives `new RTCPeerConnection(...)` at `now`.
    pub(crate) fn rtc_configuration(&self, now: SystemTime) -> Value {
        json!({"iceServers": self.servers_at(now), "iceTransportPolicy": self.policy})
    }
}

/// The TURN REST API's user name and password, valid until `expiry` (Unix seconds).
fn turn_rest_credentials(secret: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{TURN_USER}");
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(username.as_bytes());
    let credential = BASE64.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(extra: Value) -> Result<IceConfig, MissingTurnCredentials> {
        let mut options = Options::default();
        assert!(options.apply_map(extra.as_object().unwrap()).is_empty());
        IceConfig::from_options(&options)
    }

    #[test]
    fn minted_credentials_follow_the_turn_rest_scheme() {
        // The same computation in Python: base64(hmac.new(b"north-wind", b"1767225600:webgear-rtc", sha1)).
        let (username, credential) = turn_rest_credentials("north-wind", 1_767_225_600);
        assert_eq!(username, "1767225600:webgear-rtc");
        assert_eq!(credential, "Xt5ANR6pgsjfN825C2cmWYuOGas=");
    }

    #[test]
    fn a_secret_mints_credentials_for_turn_servers_without_their_own() {
        let config = config(json!({
            "ice_servers": ["stun:stun.example.net", "turn:turn.example.net", "turn:u:p@other.example.net"],
            "turn_secret": "north-wind",
            "turn_credential_lifetime": 3600,
            "ice_transport_policy": "relay",
        }))
        .unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_767_222_000);
        let servers = config.servers_at(now);
        assert_eq!(servers[0].username, None, "STUN needs no credentials");
        assert_eq!(servers[1].username.as_deref(), Some("1767225600:webgear-rtc"));
        assert_eq!(servers[1].credential.as_deref(), Some("Xt5ANR6pgsjfN825C2cmWYuOGas="));
        assert_eq!(servers[2].username.as_deref(), Some("u"), "configured credentials are kept");
        assert_eq!(config.rtc_configuration(now)["iceTransportPolicy"], "relay");
        assert_eq!(config.rtc_configuration(now)["iceServers"][1]["urls"], json!(["turn:turn.example.net"]));
    }

    #[test]
    fn a_turn_server_without_credentials_or_secret_is_refused_by_name() {
        let error = config(json!({"ice_servers": ["turn:turn.example.net:3478"]})).unwrap_err().to_string();
        assert!(error.contains("turn:turn.example.net:3478") && error.contains("turn_secret"), "{error}");
        assert!(config(json!({"ice_servers": ["stun:stun.example.net"]})).is_ok());
    }
}
