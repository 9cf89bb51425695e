//! WebGear_RTC's options, by their vidgear names, read from a map (the CLI's `--options`,
//! a config file, or a library user's JSON). As in vidgear, an invalid value of a known
//! option is skipped with a warning that names the option and the value; so is an unknown
//! option.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::warn;
use webgear_media::encode::H264EncoderConfig;
use webgear_media::transform::MAX_FRAME_SIZE_REDUCTION;
use webgear_media::transform::stabilize::DEFAULT_SMOOTHING_RADIUS;

/// The options a server is built with, under WebGear_RTC's names and defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// Shrink frames by this percentage (0..=90) before encoding. Default 20.
    pub frame_size_reduction: u8,
    /// Debug logging for this library; error pages show a readable error report instead of
    /// `500.html`. Default false.
    pub logging: bool,
    /// When the source ends or fails, keep streaming a blank "No Input" frame instead of
    /// ending; a network stream or camera is opened again in the background, and one that
    /// cannot be opened at start is waited for the same way. Default false; always on with
    /// `enable_live_broadcast`.
    pub enable_infinite_frames: bool,
    /// A live broadcast: viewers come and go, the stream never ends, and
    /// `/close_connection` answers `DISABLED`. Every viewer always receives the full
    /// stream, broadcast or not. Default false.
    pub enable_live_broadcast: bool,
    /// The folder whose `.vidgear/webgear_rtc` holds the templates and static files
    /// (default: the home directory). It must exist and be writable.
    pub custom_data_location: Option<PathBuf>,
    /// Rewrite the default data files even if they exist. Default false.
    pub overwrite_default_files: bool,
    /// Ask the source for frames of this size (`[640, 480]` or `"640x480"`).
    pub resolution: Option<(u32, u32)>,
    /// Ask the source for this many frames per second.
    pub framerate: Option<f64>,
    /// An OpenCV-style colour conversion; conversions to gray (`COLOR_BGR2GRAY`) are
    /// supported.
    pub colorspace: Option<String>,
    /// Wait this long before streaming the source, as vidgear's `time_delay` (seconds). A
    /// live source (a network stream, a camera, the screen) is read meanwhile and what it
    /// sends dropped, so that the stream starts live rather than seconds behind.
    pub time_delay: Duration,
    /// Take the shake out of the video (vidgear's `stabilize`). Default false.
    pub stabilize: bool,
    /// How many frames stabilisation averages the camera's path over (vidgear's
    /// `SMOOTHING_RADIUS`, default 25): more is steadier, but follows pans more slowly.
    pub smoothing_radius: u32,
    /// The H.264 encoder's target, in bits per second (written `1500000`, `"1500k"` or
    /// `"1.5M"`). Default 2 Mbit/s. H.264 passed through from a source keeps its own rate.
    /// Not a vidgear option.
    pub bitrate: u32,
    /// Send H.264 from a source that has it (an RTSP camera, a file browsers can play as
    /// it is) to viewers untouched when no transform is asked for. Default true. False
    /// always decodes and encodes: a joining viewer then gets a keyframe at once instead
    /// of waiting for the source's next one, for the CPU of a decoder and an encoder. Not
    /// a vidgear option.
    pub h264_passthrough: bool,
    /// The most viewers held at once (connected or connecting); further offers get
    /// `503 Service Unavailable`. Default 1000. Not a vidgear option.
    pub max_viewers: usize,
    /// Serve Prometheus metrics at `/metrics`. Default true. Not a vidgear option.
    pub enable_metrics: bool,
    /// STUN and TURN servers for viewers: given to the default page and, in `Link`
    /// headers, to WHEP players. Default none, which suits a LAN: the server is reached
    /// directly at its own addresses. Not a vidgear option.
    pub ice_servers: Vec<IceServer>,
    /// Which routes the default page lets the browser use: all (direct or relayed) or
    /// only through a TURN server. Default all. Not a vidgear option.
    pub ice_transport_policy: IceTransportPolicy,
    /// A secret shared with the TURN server (coturn's `static-auth-secret`): TURN servers
    /// in `ice_servers` without credentials then get fresh, expiring ones for every viewer.
    /// Default none. Not a vidgear option.
    pub turn_secret: Option<String>,
    /// How long minted TURN credentials stay valid. Default 24 hours. Not a vidgear option.
    pub turn_credential_lifetime: Duration,
    /// When set, WHEP requests must carry `Authorization: Bearer <token>`. Default none.
    /// Not a vidgear option.
    pub whep_token: Option<String>,
    /// The addresses media is offered on: IP addresses or network interface names (all of
    /// an interface's addresses). Default: the listen address, or for `0.0.0.0` every IPv4
    /// address and for `::` every IPv4 and IPv6 address of the machine. Not a vidgear
    /// option.
    pub host_addresses: Vec<String>,
    /// This machine's addresses as viewers beyond a 1:1 NAT see them (a cloud VM's public
    /// IP, or a host name looked up at start), offered besides the host addresses on the
    /// same port. Default none. Not a vidgear option.
    pub public_addresses: Vec<String>,
    /// Also offer media over TCP on this port (ICE-TCP, for networks that block UDP), on
    /// the same addresses as UDP; 0 picks a free port. Default none: UDP only. It cannot
    /// share the HTTP port. Not a vidgear option.
    pub ice_tcp_port: Option<u16>,
}

/// A STUN or TURN server, as a browser's `RTCIceServer` describes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs of the same server.
    pub urls: Vec<String>,
    /// The TURN user name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// Reads one URL: `stun:HOST[:PORT]`, or `turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]`
    /// (also `stuns:` and `turns:`), the TURN credentials taken out of the URL.
    pub fn parse(text: &str) -> Result<IceServer, String> {
        let (url, credentials) = split_ice_url(text)?;
        let (username, credential) = credentials.unzip();
        IceServer { urls: vec![url], username, credential }.validated()
    }

    /// Reads a URL string (see [`IceServer::parse`]) or an `RTCIceServer`-shaped map:
    /// `{"urls": "turn:…" or [...], "username": "…", "credential": "…"}`.
    fn from_value(value: &Value) -> Result<IceServer, String> {
        match value {
            Value::String(url) => IceServer::parse(url),
            Value::Object(map) => {
                let urls = match map.get("urls").or_else(|| map.get("url")) {
                    Some(Value::String(url)) => vec![url.clone()],
                    Some(Value::Array(urls)) => urls
                        .iter()
                        .map(|url| url.as_str().map(str::to_owned).ok_or("every URL must be a string"))
                        .collect::<Result<_, _>>()?,
                    _ => return Err("an ICE server needs \"urls\"".to_owned()),
                };
                let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
                let mut server =
                    IceServer { urls: Vec::new(), username: text("username"), credential: text("credential") };
                for url in urls {
                    let (url, credentials) = split_ice_url(&url)?;
                    server.urls.push(url);
                    if let Some((username, credential)) = credentials {
                        server.username.get_or_insert(username);
                        server.credential.get_or_insert(credential);
                    }
                }
                server.validated()
            }
            _ => Err("an ICE server is a URL or a map with \"urls\"".to_owned()),
        }
    }

    /// TURN credentials are checked when the server is built: a `turn_secret` can supply
    /// them.
    fn validated(self) -> Result<IceServer, String> {
        if self.urls.is_empty() {
            return Err("an ICE server needs at least one URL".to_owned());
        }
        Ok(self)
    }
}

/// Checks a `stun:`/`turn:` URL and takes out the `USER:PASSWORD@` a TURN URL may carry.
fn split_ice_url(text: &str) -> Result<(String, Option<(String, String)>), String> {
    let text = text.trim();
    let (scheme, rest) = text.split_once(':').ok_or_else(|| format!("{text:?} has no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "stun" | "stuns" | "turn" | "turns") {
        return Err(format!("{text:?} is not a stun:, stuns:, turn: or turns: URL"));
    }
    let rest = rest.trim_start_matches("//");
    let (credentials, address) = match rest.rsplit_once('@') {
        Some((user_info, address)) => {
            let (user, password) = user_info
                .split_once(':')
                .ok_or_else(|| format!("{text:?}: credentials must be written USER:PASSWORD@"))?;
            (Some((user.to_owned(), password.to_owned())), address)
        }
        None => (None, rest),
    };
    let host = if address.starts_with('[') { address } else { address.split(['?', ':']).next().unwrap_or_default() };
    if host.is_empty() {
        return Err(format!("{text:?} names no host"));
    }
    Ok((format!("{scheme}:{address}"), credentials))
}

/// Which candidate pairs the browser may use (`RTCConfiguration.iceTransportPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    /// Direct or relayed, whichever works best.
    #[default]
    All,
    /// Only through a TURN relay: the server never sees the viewer's own address.
    Relay,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frame_size_reduction: 20,
            logging: false,
            enable_infinite_frames: false,
            enable_live_broadcast: false,
            custom_data_location: None,
            overwrite_default_files: false,
            resolution: None,
            framerate: None,
            colorspace: None,
            time_delay: Duration::ZERO,
            stabilize: false,
            smoothing_radius: DEFAULT_SMOOTHING_RADIUS,
            bitrate: H264EncoderConfig::default().bitrate_bps,
            h264_passthrough: true,
            max_viewers: 1000,
            enable_metrics: true,
            ice_servers: Vec::new(),
            ice_transport_policy: IceTransportPolicy::All,
            whep_token: None,
            turn_secret: None,
            turn_credential_lifetime: Duration::from_secs(24 * 3600),
            host_addresses: Vec::new(),
            public_addresses: Vec::new(),
            ice_tcp_port: None,
        }
    }
}

/// The range `bitrate` accepts, in bits per second.
const BITRATES: std::ops::RangeInclusive<u32> = 50_000..=50_000_000;

/// The largest side `resolution` accepts (8K).
const MAX_SIDE: u64 = 7680;

impl Options {
    /// Whether the stream continues with blank frames after the source ends: asked for
    /// directly, or implied by a live broadcast.
    pub fn infinite_frames(&self) -> bool {
        self.enable_infinite_frames || self.enable_live_broadcast
    }

    /// Whether `colorspace` asks for grayscale frames.
    pub fn grayscale(&self) -> bool {
        self.colorspace.as_deref().is_some_and(is_gray_conversion)
    }

    /// Reads a `bitrate` written as text (`"1500k"`, `"1.5M"`, `"800000"`), as a command
    /// line gives it: bits per second, or what is accepted instead.
    pub fn bitrate_from_str(text: &str) -> Result<u32, String> {
        accepted_bitrate(&Value::from(text)).ok_or_else(bitrates_accepted)
    }

    /// Applies every valid entry of `map` and returns a warning for each entry skipped.
    /// Each warning is also logged.
    pub fn apply_map(&mut self, map: &Map<String, Value>) -> Vec<String> {
        let mut warnings = Vec::new();
        for (name, value) in map {
            if let Err(warning) = self.apply(name, value) {
                warn!("{warning}");
                warnings.push(warning);
            }
        }
        warnings
    }

    fn apply(&mut self, name: &str, value: &Value) -> Result<(), String> {
        let invalid = |expected: &str| format!("skipped invalid value {value} of option `{name}`: expected {expected}");
        let flag = |target: &mut bool| value.as_bool().map(|v| *target = v).ok_or_else(|| invalid("true or false"));
        match name.trim().to_ascii_lowercase().as_str() {
            "frame_size_reduction" => match value.as_u64() {
                Some(percent) if percent <= u64::from(MAX_FRAME_SIZE_REDUCTION) => {
                    self.frame_size_reduction = percent as u8;
                    Ok(())
                }
                _ => Err(invalid(&format!("a whole number of percent from 0 to {MAX_FRAME_SIZE_REDUCTION}"))),
            },
            "logging" => flag(&mut self.logging),
            "enable_infinite_frames" => flag(&mut self.enable_infinite_frames),
            "enable_live_broadcast" => flag(&mut self.enable_live_broadcast),
            "overwrite_default_files" => flag(&mut self.overwrite_default_files),
            "stabilize" => flag(&mut self.stabilize),
            "enable_metrics" => flag(&mut self.enable_metrics),
            "h264_passthrough" => flag(&mut self.h264_passthrough),
            "max_viewers" => match value.as_u64() {
                Some(viewers) if viewers >= 1 => {
                    self.max_viewers = usize::try_from(viewers).unwrap_or(usize::MAX);
                    Ok(())
                }
                _ => Err(invalid("a whole number of viewers, at least 1")),
            },
            "bitrate" => match accepted_bitrate(value) {
                Some(bits_per_second) => {
                    self.bitrate = bits_per_second;
                    Ok(())
                }
                _ => Err(invalid(&bitrates_accepted())),
            },
            "smoothing_radius" => match value.as_u64() {
                Some(frames) if (1..=1000).contains(&frames) => {
                    self.smoothing_radius = frames as u32;
                    Ok(())
                }
                _ => Err(invalid("a whole number of frames from 1 to 1000")),
            },
            "custom_data_location" => match value.as_str() {
                Some(path) if !path.trim().is_empty() => {
                    self.custom_data_location = Some(PathBuf::from(path));
                    Ok(())
                }
                _ => Err(invalid("the path of an existing, writable directory")),
            },
            "resolution" => {
                let sides = match value {
                    Value::Array(pair) if pair.len() == 2 => pair[0].as_u64().zip(pair[1].as_u64()),
                    Value::String(text) => text
                        .split_once(['x', 'X'])
                        .and_then(|(w, h)| w.trim().parse::<u64>().ok().zip(h.trim().parse::<u64>().ok())),
                    _ => None,
                };
                match sides {
                    Some((w, h)) if (16..=MAX_SIDE).contains(&w) && (16..=MAX_SIDE).contains(&h) => {
                        self.resolution = Some((w as u32, h as u32));
                        Ok(())
                    }
                    _ => Err(invalid(&format!("[width, height] or \"WIDTHxHEIGHT\", each from 16 to {MAX_SIDE}"))),
                }
            }
            "framerate" => match value.as_f64() {
                Some(rate) if (1.0..=240.0).contains(&rate) => {
                    self.framerate = Some(rate);
                    Ok(())
                }
                _ => Err(invalid("frames per second from 1 to 240")),
            },
            "time_delay" => match value.as_f64() {
                Some(seconds) if (0.0..=3600.0).contains(&seconds) => {
                    self.time_delay = Duration::from_secs_f64(seconds);
                    Ok(())
                }
                _ => Err(invalid("seconds from 0 to 3600")),
            },
            "colorspace" => match value.as_str() {
                Some(conversion) if is_gray_conversion(conversion) => {
                    self.colorspace = Some(conversion.to_owned());
                    Ok(())
                }
                _ => Err(invalid("a conversion to gray such as \"COLOR_BGR2GRAY\" (the only kind supported)")),
            },
            "ice_servers" => {
                let servers = match value {
                    Value::Array(servers) => servers.iter().map(IceServer::from_value).collect(),
                    single => IceServer::from_value(single).map(|server| vec![server]),
                };
                match servers {
                    Ok(servers) => {
                        self.ice_servers = servers;
                        Ok(())
                    }
                    Err(reason) => Err(invalid(&format!("a list of stun:/turn: URLs or RTCIceServer maps ({reason})"))),
                }
            }
            "ice_transport_policy" => match value.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("all") => {
                    self.ice_transport_policy = IceTransportPolicy::All;
                    Ok(())
                }
                Some("relay") => {
                    self.ice_transport_policy = IceTransportPolicy::Relay;
                    Ok(())
                }
                _ => Err(invalid("\"all\" or \"relay\"")),
            },
            "turn_secret" => match value.as_str() {
                Some(secret) if !secret.is_empty() => {
                    self.turn_secret = Some(secret.to_owned());
                    Ok(())
                }
                _ => Err(invalid("the non-empty secret the TURN server shares (coturn's static-auth-secret)")),
            },
            "turn_credential_lifetime" => match value.as_f64() {
                Some(seconds) if (60.0..=30.0 * 86400.0).contains(&seconds) => {
                    self.turn_credential_lifetime = Duration::from_secs_f64(seconds);
                    Ok(())
                }
                _ => Err(invalid("seconds from 60 to 30 days")),
            },
            "whep_token" => match value {
                Value::String(token) if !token.trim().is_empty() => {
                    self.whep_token = Some(token.trim().to_owned());
                    Ok(())
                }
                Value::Null => {
                    self.whep_token = None;
                    Ok(())
                }
                _ => Err(invalid("a non-empty string")),
            },
            "host_addresses" | "public_addresses" => {
                let list = match value {
                    Value::String(one) => Some(vec![one.clone()]),
                    Value::Array(many) => many.iter().map(|item| item.as_str().map(str::to_owned)).collect(),
                    _ => None,
                };
                let list: Option<Vec<String>> = list.map(|list| list.iter().map(|a| a.trim().to_owned()).collect());
                match list {
                    Some(list)
                        if list.iter().all(|address| !address.is_empty() && !address.contains(char::is_whitespace)) =>
                    {
                        if name.contains("host") {
                            self.host_addresses = list;
                        } else {
                            self.public_addresses = list;
                        }
                        Ok(())
                    }
                    _ => Err(invalid("a list of IP addresses or names")),
                }
            }
            "ice_tcp_port" => match value {
                Value::Null => {
                    self.ice_tcp_port = None;
                    Ok(())
                }
                _ => match value.as_u64().and_then(|port| u16::try_from(port).ok()) {
                    Some(port) => {
                        self.ice_tcp_port = Some(port);
                        Ok(())
                    }
                    None => Err(invalid("a TCP port number (0 for any free port), or null for none")),
                },
            },
            "custom_stream" => {
                Err(format!("skipped option `{name}`: a custom stream is given in code (Builder::custom_stream)"))
            }
            _ => Err(format!("skipped unknown option `{name}`")),
        }
    }
}

fn bitrates_accepted() -> String {
    format!("bits per second from {} to {} (e.g. 1500000, \"1500k\" or \"1.5M\")", BITRATES.start(), BITRATES.end())
}

/// Reads a bitrate: a number of bits per second, or a string of one with an optional `k`
/// (thousands) or `M` (millions) after it. `None` if it is neither or outside [`BITRATES`].
fn accepted_bitrate(value: &Value) -> Option<u32> {
    let bits_per_second = match value {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => {
            let text = text.trim();
            let (digits, scale) = match text.char_indices().last()? {
                (at, 'k' | 'K') => (&text[..at], 1e3),
                (at, 'm' | 'M') => (&text[..at], 1e6),
                _ => (text, 1.0),
            };
            digits.trim().parse::<f64>().ok()? * scale
        }
        _ => return None,
    };
    let (lowest, highest) = (f64::from(*BITRATES.start()), f64::from(*BITRATES.end()));
    let bits_per_second = bits_per_second.round();
    (lowest..=highest).contains(&bits_per_second).then_some(bits_per_second as u32)
}

/// `COLOR_BGR2GRAY`, `COLOR_RGB2GRAY`, `COLOR_BGRA2GRAY`, … (case-insensitive).
fn is_gray_conversion(name: &str) -> bool {
    let upper = name.trim().to_ascii_uppercase();
    upper.starts_with("COLOR_") && upper.ends_with("2GRAY")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn apply(value: Value) -> (Options, Vec<String>) {
        let mut options = Options::default();
        let warnings = options.apply_map(value.as_object().unwrap());
        (options, warnings)
    }

    #[test]
    fn defaults_match_webgear_rtc() {
        let options = Options::default();
        assert_eq!(options.frame_size_reduction, 20);
        assert!(!options.logging && !options.enable_infinite_frames && !options.enable_live_broadcast);
        assert!(!options.overwrite_default_files && options.custom_data_location.is_none());
        assert!(options.h264_passthrough);
    }

    #[test]
    fn valid_values_apply() {
        let (options, warnings) = apply(json!({
            "frame_size_reduction": 0,
            "logging": true,
            "enable_infinite_frames": true,
            "enable_live_broadcast": true,
            "custom_data_location": "/srv/site",
            "overwrite_default_files": true,
            "resolution": [640, 480],
            "framerate": 29.97,
            "colorspace": "COLOR_BGR2GRAY",
            "time_delay": 1.5,
            "stabilize": true,
            "SMOOTHING_RADIUS": 10,
            "max_viewers": 5,
            "enable_metrics": false,
            "h264_passthrough": false,
        }));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(!options.h264_passthrough);
        assert_eq!(options.resolution, Some((640, 480)));
        assert_eq!(options.framerate, Some(29.97));
        assert!(options.grayscale());
        assert_eq!(options.time_delay, Duration::from_millis(1500));
        assert!(options.stabilize && !options.enable_metrics);
        assert_eq!(options.max_viewers, 5);
        assert_eq!(options.smoothing_radius, 10, "vidgear's upper-case stabiliser option names work");
        let (string_form, _) = apply(json!({"resolution": "1280x720"}));
        assert_eq!(string_form.resolution, Some((1280, 720)));
        assert_eq!(options.frame_size_reduction, 0);
        assert!(options.logging && options.enable_infinite_frames && options.enable_live_broadcast);
        assert!(options.overwrite_default_files);
        assert_eq!(options.custom_data_location, Some(PathBuf::from("/srv/site")));
    }

    #[test]
    fn ice_servers_read_urls_with_credentials_and_rtc_ice_server_maps() {
        let (options, warnings) = apply(json!({
            "ice_servers": [
                "stun:stun.example.net",
                "turn:alice:pa:ss@turn.example.net:3478?transport=tcp",
                {"urls": ["turns:turn.example.net:5349"], "username": "bob", "credential": "x"},
            ],
            "ice_transport_policy": "relay",
            "whep_token": "t0ken",
        }));
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(options.ice_servers[0].urls, ["stun:stun.example.net"]);
        assert_eq!(options.ice_servers[1].urls, ["turn:turn.example.net:3478?transport=tcp"]);
        assert_eq!(options.ice_servers[1].username.as_deref(), Some("alice"));
        assert_eq!(options.ice_servers[1].credential.as_deref(), Some("pa:ss"), "a password may hold a colon");
        assert_eq!(options.ice_servers[2].username.as_deref(), Some("bob"));
        assert_eq!(options.whep_token.as_deref(), Some("t0ken"));
        assert_eq!(options.ice_transport_policy, IceTransportPolicy::Relay);
        assert_eq!(
            serde_json::to_value(&options.ice_servers[1]).unwrap(),
            json!({"urls": ["turn:turn.example.net:3478?transport=tcp"], "username": "alice", "credential": "pa:ss"}),
            "serialised as the browser's RTCIceServer"
        );
    }

    #[test]
    fn bad_ice_settings_are_skipped_naming_what_is_wrong() {
        for (value, reason) in [
            (json!({"ice_servers": ["http://example.net"]}), "not a stun:"),
            (json!({"turn_credential_lifetime": 5}), "seconds from 60"),
            (json!({"turn_secret": 7}), "static-auth-secret"),
            (json!({"ice_servers": ["stun:"]}), "names no host"),
            (json!({"ice_servers": [{"username": "x"}]}), "needs \"urls\""),
            (json!({"ice_transport_policy": "none"}), "\"relay\""),
            (json!({"whep_token": ""}), "non-empty"),
        ] {
            let (options, warnings) = apply(value.clone());
            assert_eq!(options, Options::default(), "{value}");
            assert!(warnings.len() == 1 && warnings[0].contains(reason), "{value}: {warnings:?}");
        }
    }

    #[test]
    fn bitrates_read_as_numbers_or_with_k_and_m_and_stay_in_range() {
        for (value, bits_per_second) in [
            (json!(800_000), 800_000),
            (json!("1500k"), 1_500_000),
            (json!(" 1.5M "), 1_500_000),
            (json!("250K"), 250_000),
            (json!("4000000"), 4_000_000),
        ] {
            let (options, warnings) = apply(json!({ "bitrate": value }));
            assert_eq!((options.bitrate, warnings.len()), (bits_per_second, 0), "{value}");
        }
        for value in [json!(0), json!("-1M"), json!("10k"), json!("90M"), json!("M"), json!("infM"), json!([1])] {
            let (options, warnings) = apply(json!({ "bitrate": value }));
            assert_eq!(options.bitrate, Options::default().bitrate, "{value}");
            assert!(warnings[0].contains("`bitrate`") && warnings[0].contains("bits per second"), "{warnings:?}");
        }
    }

    #[test]
    fn live_broadcast_forces_infinite_frames() {
        let (options, _) = apply(json!({"enable_live_broadcast": true, "enable_infinite_frames": false}));
        assert!(options.infinite_frames());
        assert!(!Options::default().infinite_frames());
    }

    #[test]
    fn invalid_and_unknown_values_are_skipped_with_a_warning_naming_them() {
        let (options, warnings) = apply(json!({
            "frame_size_reduction": 95,
            "logging": "yes",
            "enable_live_broadcast": 1,
            "custom_data_location": 7,
            "bogus": 1,
            "stabilize": "on",
            "smoothing_radius": 0,
            "max_viewers": 0,
            "resolution": [10, 20, 30],
            "framerate": 0,
            "time_delay": -1,
            "colorspace": "COLOR_BGR2HSV",
            "bitrate": "fast",
        }));
        assert_eq!(options, Options::default());
        assert_eq!(warnings.len(), 13, "{warnings:?}");
        for (needle, name) in [
            ("95", "`frame_size_reduction`"),
            ("\"yes\"", "`logging`"),
            ("value 1", "`enable_live_broadcast`"),
            ("value 7", "`custom_data_location`"),
            ("unknown", "`bogus`"),
            ("\"on\"", "`stabilize`"),
            ("value 0", "`smoothing_radius`"),
            ("value 0", "`max_viewers`"),
            ("[10,20,30]", "`resolution`"),
            ("value 0", "`framerate`"),
            ("value -1", "`time_delay`"),
            ("COLOR_BGR2HSV", "`colorspace`"),
            ("\"fast\"", "`bitrate`"),
        ] {
            assert!(warnings.iter().any(|w| w.contains(needle) && w.contains(name)), "{name}: {warnings:?}");
        }
    }
}
