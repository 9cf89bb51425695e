//! WebGear_RTC's options and webgear-rtc's own, each defined once in [`OPTIONS`]: its name,
//! its default, how a value is read and checked, its documentation and its command-line
//! flag. The map parser (the CLI's `--options`, a config file, a library user's JSON), the
//! command line and `--help` all come from that one definition, and [`Options`] can only be
//! changed through it, so no path skips the checks. As in vidgear, an invalid value of a
//! known option is skipped with a warning that names the option and the value; so is an
//! unknown option.

use std::path::PathBuf;
use std::time::Duration;

use crate::ladder::Ladder;
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::warn;
use webgear_media::encode::H264EncoderConfig;
use webgear_media::transform::MAX_FRAME_SIZE_REDUCTION;
use webgear_media::transform::stabilize::DEFAULT_SMOOTHING_RADIUS;

/// Why an option was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// No option has this name.
    #[error("skipped unknown option `{name}`")]
    Unknown {
        /// The name as written.
        name: String,
    },
    /// The value is not one the option takes.
    #[error("skipped invalid value {value} of option `{name}`: expected {expected}")]
    Invalid {
        /// The name as written.
        name: String,
        /// The value as given.
        value: Value,
        /// What the option takes.
        expected: String,
    },
    /// The option is given in code, not as a value.
    #[error("skipped option `{name}`: a custom stream is given in code (Builder::custom_stream)")]
    InCode {
        /// The name as written.
        name: String,
    },
}

/// How an option is written on the command line. The library knows no command-line
/// parser; the `webgear-rtc` command makes its flags from these.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Flag {
    /// The long flag, without `--`.
    pub long: &'static str,
    /// A one-letter flag, as vidgear's.
    pub short: Option<char>,
    /// Other long spellings (vidgear's).
    pub aliases: &'static [&'static str],
    /// What the flag takes.
    pub takes: Takes,
    /// The section of `--help` it is listed in (`None`: the top).
    pub heading: Option<&'static str>,
    /// An environment variable that may give it instead (for secrets).
    pub env: Option<&'static str>,
    /// The default as `--help` shows it, when there is one to show.
    pub default: Option<&'static str>,
}

/// What a flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Takes {
    /// Nothing: the flag sets the option to true.
    Switch,
    /// Nothing: this flag (e.g. `no-metrics`), rather than the option's own, sets it to
    /// false.
    SwitchOff,
    /// A number, named so in `--help`.
    Number(&'static str),
    /// Text, named so in `--help`.
    Text(&'static str),
    /// Text, given once per item, each an item of a list.
    Repeated(&'static str),
}

impl Takes {
    /// The value a flag's `text` stands for, as the option reads it from a map: a number
    /// for numbers (text the option may read itself if it is none), the text itself
    /// otherwise. Switches take no text.
    pub fn value_of(self, text: &str) -> Value {
        match self {
            Takes::Number(_) => serde_json::from_str::<serde_json::Number>(text.trim())
                .map_or_else(|_| Value::from(text), Value::Number),
            Takes::Switch => Value::Bool(true),
            Takes::SwitchOff => Value::Bool(false),
            Takes::Text(_) | Takes::Repeated(_) => Value::from(text),
        }
    }
}

/// One option: its name, documentation, flag, and how it is set from a value.
#[non_exhaustive]
pub struct OptionSpec {
    /// The name in maps (vidgear's, for vidgear's options).
    pub name: &'static str,
    /// What it does, as `--help` and the docs say it.
    pub doc: &'static str,
    /// Its command-line flag.
    pub flag: Flag,
    apply: fn(&mut Options, &Value) -> Result<(), String>,
}

impl std::fmt::Debug for OptionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OptionSpec").field("name", &self.name).field("flag", &self.flag).finish_non_exhaustive()
    }
}

impl OptionSpec {
    /// The option named `name` (case-insensitive, as vidgear's `SMOOTHING_RADIUS`).
    pub fn named(name: &str) -> Option<&'static OptionSpec> {
        let name = name.trim();
        OPTIONS.iter().find(|option| option.name.eq_ignore_ascii_case(name))
    }

    /// Checks `value` as this option reads it, without applying it: what it expects if
    /// the value is not one it takes.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        (self.apply)(&mut Options::default(), value)
    }
}

/// Defines [`Options`] (private fields with a getter each, and their defaults) and
/// [`OPTIONS`] from one list: for each option its doc, type, default, reader (a `&Value`
/// to the typed value, or what it expects) and flag.
macro_rules! define_options {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident: $ty:ty = $default:expr, read $read:expr, flag $flag:expr;
    )+) => {
        /// The options a server is built with, under WebGear_RTC's names and defaults. Set
        /// them by name with [`Options::set`] (or [`Options::apply_map`]), which checks each
        /// value as every other way of giving options does.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Options {
            $( $field: $ty, )+
        }

        impl Default for Options {
            fn default() -> Self {
                Options { $( $field: $default, )+ }
            }
        }

        // One getter shape for every option, whatever its type.
        #[allow(clippy::clone_on_copy)]
        impl Options {
            $(
                $(#[doc = $doc])+
                pub fn $field(&self) -> $ty {
                    self.$field.clone()
                }
            )+
        }

        /// Every option, in the order `--help` lists them.
        pub static OPTIONS: &[OptionSpec] = &[
            $(
                OptionSpec {
                    name: stringify!($field),
                    doc: concat!($($doc, "\n"),+),
                    flag: $flag,
                    apply: |options, value| {
                        options.$field = ($read)(value)?;
                        Ok(())
                    },
                },
            )+
        ];
    };
}

/// A flag with nothing but its long name and what it takes.
const fn flag(long: &'static str, takes: Takes) -> Flag {
    Flag { long, short: None, aliases: &[], takes, heading: None, env: None, default: None }
}

impl Flag {
    const fn short(self, short: char) -> Flag {
        Flag { short: Some(short), ..self }
    }

    const fn aliases(self, aliases: &'static [&'static str]) -> Flag {
        Flag { aliases, ..self }
    }

    const fn heading(self, heading: &'static str) -> Flag {
        Flag { heading: Some(heading), ..self }
    }

    const fn env(self, env: &'static str) -> Flag {
        Flag { env: Some(env), ..self }
    }

    const fn shows_default(self, default: &'static str) -> Flag {
        Flag { default: Some(default), ..self }
    }
}

const STREAM: &str = "Stream";
const WEB_APP: &str = "Web app";
const NETWORKS: &str = "Viewers and networks";

define_options! {
    /// Debug logging for this library; error pages show a readable error report instead
    /// of `500.html`. Default false.
    logging: bool = false, read flag_value, flag flag("logging", Takes::Switch).short('l');

    /// Shrink frames by this percentage (0 to 90) before encoding.
    frame_size_reduction: u8 = 20,
        read |value: &Value| whole(value, 0..=u64::from(MAX_FRAME_SIZE_REDUCTION), "percent").map(|p| p as u8),
        flag flag("frame-size-reduction", Takes::Number("PERCENT")).heading(STREAM).shows_default("20");

    /// Ask the source for frames of this size, `[640, 480]` or `"640x480"`.
    resolution: Option<(u32, u32)> = None, read |value: &Value| resolution(value).map(Some),
        flag flag("resolution", Takes::Text("WIDTHxHEIGHT")).short('r').heading(STREAM);

    /// Ask the source for this many frames per second.
    framerate: Option<f64> = None, read |value: &Value| real(value, 1.0..=240.0, "frames per second").map(Some),
        flag flag("framerate", Takes::Number("FPS")).short('f').heading(STREAM);

    /// The H.264 encoder's target, in bits per second (`1500000`, `"1500k"` or `"1.5M"`).
    /// H.264 passed through from a source keeps its own rate. Not a vidgear option.
    bitrate: u32 = H264EncoderConfig::default().bitrate_bps, read |value: &Value| accepted_bitrate(value).ok_or_else(bitrates_accepted),
        flag flag("bitrate", Takes::Text("RATE")).heading(STREAM).shows_default("2M");

    /// Adapt to each viewer's link: encode the stream once per rung of `ladder` that
    /// someone watches, estimate each viewer's bandwidth, pace its packets, and move it
    /// between rungs as its link allows. Default true; false sends every viewer one stream at
    /// `bitrate`. Not a vidgear option.
    adaptive: bool = true, read flag_value, flag flag("no-adaptive", Takes::SwitchOff).heading(STREAM);

    /// The rungs of the adaptive stream, full size first, each `[scale, bitrate]`:
    /// `[[1.0, "2.5M"], [0.5, "800k"], [0.25, "250k"]]` or `"1.0:2.5M,0.5:800k,0.25:250k"`.
    /// Default: full size at `bitrate`, half size at 30% of it, a quarter at 10%. Not a
    /// vidgear option.
    ladder: Option<Ladder> = None, read |value: &Value| Ladder::read(value, accepted_bitrate).map(Some),
        flag flag("ladder", Takes::Text("SCALE:RATE,...")).heading(STREAM);

    /// Send H.264 from a source that has it (an RTSP camera, a file browsers can play as
    /// it is) to viewers untouched when no transform is asked for. Default true. False
    /// always decodes and encodes: a joining viewer then gets a keyframe at once instead
    /// of waiting for the source's next one. Not a vidgear option.
    h264_passthrough: bool = true, read flag_value, flag flag("no-h264-passthrough", Takes::SwitchOff).heading(STREAM);

    /// An OpenCV-style colour conversion; conversions to gray (`COLOR_BGR2GRAY`) are
    /// supported (vidgear's `-cs`).
    colorspace: Option<String> = None, read |value: &Value| match value.as_str() {
            Some(conversion) if is_gray_conversion(conversion) => Ok(Some(conversion.to_owned())),
            _ => Err("a conversion to gray such as \"COLOR_BGR2GRAY\" (the only kind supported)".to_owned()),
        },
        flag flag("colorspace", Takes::Text("CONVERSION")).heading(STREAM);

    /// Wait this long before streaming the source, in seconds (vidgear's `time_delay`). A
    /// live source (a network stream, a camera, the screen) is read meanwhile and what it
    /// sends dropped, so that the stream starts live.
    time_delay: Duration = Duration::ZERO,
        read |value: &Value| real(value, 0.0..=3600.0, "seconds").map(Duration::from_secs_f64),
        flag flag("time-delay", Takes::Number("SECONDS")).aliases(&["time_delay"]).heading(STREAM).shows_default("0");

    /// Take the shake out of the video (vidgear's `stabilize`). Default false.
    stabilize: bool = false, read flag_value, flag flag("stabilize", Takes::Switch).short('S').heading(STREAM);

    /// How many frames stabilisation averages the camera's path over (vidgear's
    /// `SMOOTHING_RADIUS`): more is steadier, but follows pans more slowly.
    smoothing_radius: u32 = DEFAULT_SMOOTHING_RADIUS,
        read |value: &Value| whole(value, 1..=1000, "frames").map(|frames| frames as u32),
        flag flag("smoothing-radius", Takes::Number("FRAMES")).heading(STREAM).shows_default("25");

    /// When the source ends or fails, keep streaming a blank "No Input" frame instead of
    /// ending; a network stream or camera is opened again in the background, and one that
    /// cannot be opened at start is waited for the same way. Default false; always on with
    /// `enable_live_broadcast`.
    enable_infinite_frames: bool = false, read flag_value,
        flag flag("enable-infinite-frames", Takes::Switch).heading(STREAM);

    /// A live broadcast: viewers come and go, the stream never ends, and
    /// `/close_connection` answers `DISABLED`. Default false.
    enable_live_broadcast: bool = false, read flag_value,
        flag flag("enable-live-broadcast", Takes::Switch).heading(STREAM);

    /// The folder whose `.vidgear/webgear_rtc` holds the templates and static files
    /// (default: the home directory). It must exist and be writable.
    custom_data_location: Option<PathBuf> = None, read |value: &Value| match value.as_str() {
            Some(path) if !path.trim().is_empty() => Ok(Some(PathBuf::from(path))),
            _ => Err("the path of an existing, writable directory".to_owned()),
        },
        flag flag("custom-data-location", Takes::Text("DIR")).heading(WEB_APP);

    /// Rewrite the default data files even if they exist. Default false.
    overwrite_default_files: bool = false, read flag_value,
        flag flag("overwrite-default-files", Takes::Switch).heading(WEB_APP);

    /// Serve Prometheus metrics at `/metrics`. Default true. Not a vidgear option.
    enable_metrics: bool = true, read flag_value, flag flag("no-metrics", Takes::SwitchOff).heading(WEB_APP);

    /// The most viewers held at once (connected or connecting); further offers get
    /// `503 Service Unavailable`. Not a vidgear option.
    max_viewers: usize = 1000,
        read |value: &Value| whole(value, 1..=u64::MAX, "viewers").map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        flag flag("max-viewers", Takes::Number("VIEWERS")).heading(NETWORKS).shows_default("1000");

    /// STUN and TURN servers for viewers: `stun:HOST[:PORT]`,
    /// `turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]`, or `RTCIceServer` maps. Given
    /// to the default page and, in `Link` headers, to WHEP players. Default none, which
    /// suits a LAN. Not a vidgear option.
    ice_servers: Vec<IceServer> = Vec::new(), read |value: &Value| match value {
            Value::Array(servers) => servers.iter().map(IceServer::from_value).collect(),
            single => IceServer::from_value(single).map(|server| vec![server]),
        }
        .map_err(|reason| format!("a list of stun:/turn: URLs or RTCIceServer maps ({reason})")),
        flag flag("ice-server", Takes::Repeated("URL")).heading(NETWORKS);

    /// A secret shared with the TURN server (coturn's `static-auth-secret`): TURN servers
    /// in `ice_servers` without credentials then get fresh, expiring ones for every viewer.
    /// Default none. Not a vidgear option.
    turn_secret: Option<String> = None, read |value: &Value| match value.as_str() {
            Some(secret) if !secret.is_empty() => Ok(Some(secret.to_owned())),
            _ => Err("the non-empty secret the TURN server shares (coturn's static-auth-secret)".to_owned()),
        },
        flag flag("turn-secret", Takes::Text("SECRET")).heading(NETWORKS).env("WEBGEAR_TURN_SECRET");

    /// How long minted TURN credentials stay valid, in seconds. Not a vidgear option.
    turn_credential_lifetime: Duration = Duration::from_secs(24 * 3600),
        read |value: &Value| real(value, 60.0..=30.0 * 86400.0, "seconds").map(Duration::from_secs_f64),
        flag flag("turn-credential-lifetime", Takes::Number("SECONDS")).heading(NETWORKS).shows_default("86400");

    /// Which routes the default page lets the browser use: `all` (direct or relayed) or
    /// `relay` (only through a TURN server). Not a vidgear option.
    ice_transport_policy: IceTransportPolicy = IceTransportPolicy::All,
        read |value: &Value| match value.as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("all") => Ok(IceTransportPolicy::All),
            Some("relay") => Ok(IceTransportPolicy::Relay),
            _ => Err("\"all\" or \"relay\"".to_owned()),
        },
        flag flag("ice-transport-policy", Takes::Text("all|relay")).heading(NETWORKS).shows_default("all");

    /// When set, WHEP requests must carry `Authorization: Bearer <token>`. Default none.
    /// Not a vidgear option.
    whep_token: Option<String> = None, read |value: &Value| match value {
            Value::String(token) if !token.trim().is_empty() => Ok(Some(token.trim().to_owned())),
            Value::Null => Ok(None),
            _ => Err("a non-empty string".to_owned()),
        },
        flag flag("whep-token", Takes::Text("TOKEN")).heading(NETWORKS).env("WEBGEAR_WHEP_TOKEN");

    /// The addresses media is offered on: IP addresses or network interface names (all of
    /// an interface's addresses). Default: the listen address, or for `0.0.0.0` every IPv4
    /// address and for `::` every IPv4 and IPv6 address of the machine. Not a vidgear
    /// option.
    host_addresses: Vec<String> = Vec::new(), read addresses,
        flag flag("host-address", Takes::Repeated("IP|INTERFACE")).heading(NETWORKS);

    /// This machine's addresses as viewers beyond a 1:1 NAT see them (a cloud VM's public
    /// IP, or a host name looked up at start), offered besides the host addresses on the
    /// same port. Default none. Not a vidgear option.
    public_addresses: Vec<String> = Vec::new(), read addresses,
        flag flag("public-address", Takes::Repeated("IP|NAME")).heading(NETWORKS);

    /// Also offer media over TCP on this port (ICE-TCP, for networks that block UDP), on
    /// the same addresses as UDP; 0 picks a free port. Default none: UDP only. It cannot
    /// share the HTTP port. Not a vidgear option.
    ice_tcp_port: Option<u16> = None, read |value: &Value| match value {
            Value::Null => Ok(None),
            _ => value
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .map(Some)
                .ok_or_else(|| "a TCP port number (0 for any free port), or null for none".to_owned()),
        },
        flag flag("ice-tcp-port", Takes::Number("PORT")).heading(NETWORKS);
}

/// The range `bitrate` accepts, in bits per second.
const BITRATES: std::ops::RangeInclusive<u32> = 50_000..=50_000_000;

/// The largest side `resolution` accepts (8K).
const MAX_SIDE: u64 = 7680;

impl Options {
    /// Sets the option `name` (case-insensitive) to `value`, if the option takes it.
    pub fn set(&mut self, name: &str, value: &Value) -> Result<(), OptionError> {
        let Some(option) = OptionSpec::named(name) else {
            if name.trim().eq_ignore_ascii_case("custom_stream") {
                return Err(OptionError::InCode { name: name.to_owned() });
            }
            return Err(OptionError::Unknown { name: name.to_owned() });
        };
        (option.apply)(self, value).map_err(|expected| OptionError::Invalid {
            name: name.to_owned(),
            value: value.clone(),
            expected,
        })
    }

    /// Sets every valid entry of `map` and returns why each other entry was skipped. Each
    /// is also logged as a warning.
    pub fn apply_map(&mut self, map: &Map<String, Value>) -> Vec<OptionError> {
        let mut skipped = Vec::new();
        for (name, value) in map {
            if let Err(error) = self.set(name, value) {
                warn!("{error}");
                skipped.push(error);
            }
        }
        skipped
    }

    /// Whether the stream continues with blank frames after the source ends: asked for
    /// directly, or implied by a live broadcast.
    pub fn infinite_frames(&self) -> bool {
        self.enable_infinite_frames || self.enable_live_broadcast
    }

    /// The rungs the stream is encoded at: one at `bitrate` unless `adaptive`, else
    /// `ladder` or the default ladder for `bitrate`.
    pub fn rendition_ladder(&self) -> Ladder {
        match (&self.ladder, self.adaptive) {
            (_, false) => Ladder::single(self.bitrate),
            (Some(ladder), true) => ladder.clone(),
            (None, true) => Ladder::default_for(self.bitrate),
        }
    }

    /// Whether `colorspace` asks for grayscale frames.
    pub fn grayscale(&self) -> bool {
        self.colorspace.as_deref().is_some_and(is_gray_conversion)
    }
}

fn flag_value(value: &Value) -> Result<bool, String> {
    value.as_bool().ok_or_else(|| "true or false".to_owned())
}

/// A whole number in `range`, of `unit`.
fn whole(value: &Value, range: std::ops::RangeInclusive<u64>, unit: &str) -> Result<u64, String> {
    match value.as_u64() {
        Some(number) if range.contains(&number) => Ok(number),
        _ if *range.end() == u64::MAX => Err(format!("a whole number of {unit}, at least {}", range.start())),
        _ => Err(format!("a whole number of {unit} from {} to {}", range.start(), range.end())),
    }
}

/// A number in `range`, of `unit`.
fn real(value: &Value, range: std::ops::RangeInclusive<f64>, unit: &str) -> Result<f64, String> {
    match value.as_f64() {
        Some(number) if range.contains(&number) => Ok(number),
        _ => Err(format!("{unit} from {} to {}", range.start(), range.end())),
    }
}

/// `[width, height]` or `"WIDTHxHEIGHT"`, each side from 16 to [`MAX_SIDE`].
fn resolution(value: &Value) -> Result<(u32, u32), String> {
    let sides = match value {
        Value::Array(pair) if pair.len() == 2 => pair[0].as_u64().zip(pair[1].as_u64()),
        Value::String(text) => text
            .split_once(['x', 'X', ','])
            .and_then(|(w, h)| w.trim().parse::<u64>().ok().zip(h.trim().parse::<u64>().ok())),
        _ => None,
    };
    match sides {
        Some((w, h)) if (16..=MAX_SIDE).contains(&w) && (16..=MAX_SIDE).contains(&h) => Ok((w as u32, h as u32)),
        _ => Err(format!("[width, height] or \"WIDTHxHEIGHT\", each from 16 to {MAX_SIDE}")),
    }
}

/// One address or name, or a list of them.
fn addresses(value: &Value) -> Result<Vec<String>, String> {
    let list = match value {
        Value::String(one) => Some(vec![one.trim().to_owned()]),
        Value::Array(many) => many.iter().map(|item| item.as_str().map(|a| a.trim().to_owned())).collect(),
        _ => None,
    };
    list.filter(|list| list.iter().all(|address| !address.is_empty() && !address.contains(char::is_whitespace)))
        .ok_or_else(|| "a list of IP addresses or names".to_owned())
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
        let warnings = options.apply_map(value.as_object().unwrap()).iter().map(ToString::to_string).collect();
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
    fn errors_say_which_option_was_skipped_and_why() {
        let mut options = Options::default();
        assert_eq!(options.set("bogus", &json!(1)), Err(OptionError::Unknown { name: "bogus".into() }));
        assert_eq!(options.set("custom_stream", &json!(1)), Err(OptionError::InCode { name: "custom_stream".into() }));
        let Err(OptionError::Invalid { name, value, expected }) = options.set("MAX_VIEWERS", &json!(0)) else {
            panic!("0 viewers is invalid");
        };
        assert_eq!(
            (name.as_str(), value, expected.as_str()),
            ("MAX_VIEWERS", json!(0), "a whole number of viewers, at least 1")
        );
        assert_eq!(options, Options::default(), "nothing skipped was applied");
        options.set("Max_Viewers", &json!(7)).unwrap();
        assert_eq!(options.max_viewers(), 7, "names are case-insensitive, as vidgear's");
    }

    #[test]
    fn every_option_has_one_definition_with_a_flag_of_its_own() {
        let mut flags: Vec<&str> = OPTIONS.iter().map(|option| option.flag.long).collect();
        flags.sort_unstable();
        flags.dedup();
        assert_eq!(flags.len(), OPTIONS.len(), "two options share a flag");
        for option in OPTIONS {
            assert!(!option.doc.trim().is_empty(), "{} is undocumented", option.name);
            if matches!(option.flag.takes, Takes::Switch | Takes::SwitchOff) {
                assert!(option.check(&json!("yes")).is_err(), "{} takes only true or false", option.name);
            }
            // A flag's text reads as the option reads the map's value.
            if let Takes::Number(_) = option.flag.takes {
                assert_eq!(option.flag.takes.value_of("12"), json!(12));
            }
        }
        assert!(OptionSpec::named("smoothing_radius").is_some() && OptionSpec::named("nope").is_none());
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
