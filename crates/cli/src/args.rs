//! The command line: every option as a flag (with its default in `--help`), vidgear's
//! spellings as aliases, and where settings come from when given more than once.
//!
//! Precedence, lowest first: the built-in defaults, `--config FILE`, `--options MAP`, then
//! the flags themselves. A flag counts only when it is given, so a default shown in
//! `--help` never overrides a value from a file.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use serde::Serialize;
use serde_json::{Map, Value, json};
use webgear_rtc::Options;

/// Stream a video source to browsers and WebRTC clients, encoded once for every viewer.
///
/// With no arguments it streams the built-in test pattern at http://localhost:8000/.
/// Viewers open that page, or point any WHEP player at http://HOST:PORT/whep.
#[derive(Debug, Parser, Serialize)]
#[command(
    name = "webgear-rtc",
    version,
    about,
    after_help = "vidgear's flags work too: -ip/--ipaddress, -pt, -op, -cs, -td/--time_delay, -S.\n\
                  Settings are read from the defaults, then --config, then --options, then the flags."
)]
pub(crate) struct Args {
    /// What to stream: `testsrc` (the built-in moving test pattern), a camera (`0`,
    /// `/dev/video0`), a video file, a network stream (rtsp://, http(s)://, rtmp://, udp://,
    /// srt://), or an image sequence (`frames/%04d.png`, `frames/*.png`). Files, streams
    /// and sequences need ffmpeg.
    #[arg(short = 's', long, default_value = "testsrc")]
    #[serde(skip)]
    pub(crate) source: String,

    /// The address to listen on (HTTP and media). 0.0.0.0 serves every IPv4 interface,
    /// :: every IPv4 and IPv6 one.
    #[arg(long, visible_alias = "ipaddress", default_value = "0.0.0.0")]
    #[serde(skip)]
    pub(crate) host: IpAddr,

    /// The HTTP port (0: any free port).
    #[arg(short = 'p', long, default_value_t = 8000)]
    #[serde(skip)]
    pub(crate) port: u16,

    /// The UDP port all WebRTC media uses [default: the same number as --port].
    #[arg(long)]
    #[serde(skip)]
    pub(crate) udp_port: Option<u16>,

    /// A YAML or JSON file of settings: any option below by its option name (e.g.
    /// `frame_size_reduction: 50`), and `source`, `host`, `port`, `udp_port`.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,

    /// Options as a JSON or YAML map, or the path of a file holding one, e.g.
    /// '{"frame_size_reduction": 50}' (vidgear's -op).
    #[arg(short = 'o', long, value_name = "MAP")]
    #[serde(skip)]
    options: Option<String>,

    /// Debug logging; error pages show a report of what failed.
    #[arg(short = 'l', long)]
    pub(crate) logging: bool,

    /// Shrink frames by this percentage (0 to 90) before encoding.
    #[arg(long, default_value_t = Options::default().frame_size_reduction, help_heading = "Stream",
          value_parser = clap::value_parser!(u8).range(0..=90))]
    frame_size_reduction: u8,

    /// Ask the source for frames of this size, WIDTHxHEIGHT (e.g. 1280x720).
    #[arg(short = 'r', long, value_parser = parse_resolution, help_heading = "Stream")]
    resolution: Option<(u32, u32)>,

    /// Ask the source for this many frames per second.
    #[arg(short = 'f', long, help_heading = "Stream")]
    framerate: Option<f64>,

    /// The encoder's target bitrate: bits per second, or with k or M (1500k, 1.5M)
    /// [default: 2M]. H.264 passed through from a camera or file keeps its own.
    #[arg(long, value_name = "RATE", value_parser = Options::bitrate_from_str, help_heading = "Stream")]
    bitrate: Option<u32>,

    /// Always decode and encode, even H.264 that could go to viewers as it is: a joining
    /// viewer then gets a keyframe at once.
    #[arg(long, help_heading = "Stream")]
    #[serde(skip)]
    no_h264_passthrough: bool,

    /// An OpenCV-style colour conversion; conversions to gray (COLOR_BGR2GRAY) are
    /// supported (vidgear's -cs).
    #[arg(long, help_heading = "Stream")]
    colorspace: Option<String>,

    /// Seconds to wait before streaming the source; a live one is read and dropped
    /// meanwhile (vidgear's -td).
    #[arg(long, visible_alias = "time_delay", default_value_t = 0.0, help_heading = "Stream")]
    time_delay: f64,

    /// Take the shake out of the video.
    #[arg(short = 'S', long, help_heading = "Stream")]
    stabilize: bool,

    /// Frames stabilisation averages the camera's path over: steadier, but slower to
    /// follow pans.
    #[arg(long, default_value_t = Options::default().smoothing_radius, help_heading = "Stream")]
    smoothing_radius: u32,

    /// When the source ends or fails, keep streaming a blank "No Input" frame while a
    /// network stream or camera is reopened (one not there yet at start is waited for).
    #[arg(long, help_heading = "Stream")]
    enable_infinite_frames: bool,

    /// A live broadcast: the stream never ends and /close_connection answers DISABLED.
    #[arg(long, help_heading = "Stream")]
    enable_live_broadcast: bool,

    /// The folder whose .vidgear/webgear_rtc holds the templates and static files
    /// [default: the home folder].
    #[arg(long, value_name = "DIR", help_heading = "Web app")]
    custom_data_location: Option<PathBuf>,

    /// Rewrite the default templates and static files even if they exist.
    #[arg(long, help_heading = "Web app")]
    overwrite_default_files: bool,

    /// Do not serve Prometheus metrics at /metrics.
    #[arg(long, help_heading = "Web app")]
    #[serde(skip)]
    no_metrics: bool,

    /// The most viewers held at once; further offers get 503.
    #[arg(long, default_value_t = Options::default().max_viewers, help_heading = "Viewers and networks")]
    max_viewers: usize,

    /// A STUN or TURN server for viewers, repeatable: stun:HOST[:PORT] or
    /// turn:USER:PASSWORD@HOST[:PORT][?transport=udp|tcp]. Given to the page and to WHEP
    /// players [default: none, which suits a LAN].
    #[arg(long = "ice-server", value_name = "URL", help_heading = "Viewers and networks")]
    ice_servers: Vec<String>,

    /// The secret shared with the TURN server (coturn's static-auth-secret): TURN servers
    /// given without credentials get fresh, expiring ones for every viewer.
    #[arg(long, env = "WEBGEAR_TURN_SECRET", hide_env_values = true, help_heading = "Viewers and networks")]
    turn_secret: Option<String>,

    /// Seconds minted TURN credentials stay valid.
    #[arg(long, value_name = "SECONDS", help_heading = "Viewers and networks",
          default_value_t = Options::default().turn_credential_lifetime.as_secs())]
    turn_credential_lifetime: u64,

    /// Let the page connect directly or relayed (all), or only through a TURN relay.
    #[arg(long, value_enum, default_value_t = Policy::All, help_heading = "Viewers and networks")]
    ice_transport_policy: Policy,

    /// WHEP requests must carry `Authorization: Bearer TOKEN`.
    #[arg(long, env = "WEBGEAR_WHEP_TOKEN", hide_env_values = true, help_heading = "Viewers and networks")]
    whep_token: Option<String>,

    /// Offer media only on this IP address or network interface, repeatable
    /// [default: every address --host covers].
    #[arg(long = "host-address", value_name = "IP|INTERFACE", help_heading = "Viewers and networks")]
    host_addresses: Vec<String>,

    /// Also offer media over TCP on this port (ICE-TCP, for networks that block UDP; 0:
    /// any free port). It cannot be the HTTP port [default: UDP only].
    #[arg(long, value_name = "PORT", help_heading = "Viewers and networks")]
    ice_tcp_port: Option<u16>,

    /// Also offer this public IP or host name (a 1:1 NAT, such as a cloud VM's public
    /// address), repeatable.
    #[arg(long = "public-address", value_name = "IP|NAME", help_heading = "Viewers and networks")]
    public_addresses: Vec<String>,
}

/// `--ice-transport-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Policy {
    All,
    Relay,
}

/// What the server runs with, from every source of settings.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) source: String,
    pub(crate) host: IpAddr,
    pub(crate) port: u16,
    pub(crate) udp_port: u16,
    pub(crate) logging: bool,
    /// Option entries by name, in precedence order (later entries win).
    pub(crate) option_maps: Vec<Map<String, Value>>,
}

impl Settings {
    /// The options: the defaults with every map applied in order. Invalid entries are
    /// skipped with a warning (logged), as vidgear does.
    pub(crate) fn options(&self) -> Options {
        let mut options = Options::default();
        for map in &self.option_maps {
            options.apply_map(map);
        }
        options.logging |= self.logging;
        options
    }
}

/// vidgear's multi-letter short flags, which clap cannot declare, as their long forms.
const VIDGEAR_FLAGS: [(&str, &str); 5] =
    [("-ip", "--ipaddress"), ("-pt", "--port"), ("-op", "--options"), ("-cs", "--colorspace"), ("-td", "--time-delay")];

/// Rewrites vidgear's `-ip 0.0.0.0`, `-pt=8000`, … into flags clap knows.
fn with_vidgear_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            for (short, long) in VIDGEAR_FLAGS {
                if text == short {
                    return long.into();
                }
                if let Some(value) = text.strip_prefix(short).and_then(|rest| rest.strip_prefix('=')) {
                    return format!("{long}={value}").into();
                }
            }
            arg
        })
        .collect()
}

/// Parses the command line (exiting with clap's message on bad flags) and gathers the
/// settings from the config file, `--options` and the flags.
pub(crate) fn settings_from(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Settings> {
    let matches = Args::command().get_matches_from(with_vidgear_flags(args));
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    resolve(&args, &matches)
}

fn resolve(args: &Args, matches: &ArgMatches) -> anyhow::Result<Settings> {
    let given =
        |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
    let mut settings = Settings {
        source: args.source.clone(),
        host: args.host,
        port: args.port,
        udp_port: args.udp_port.unwrap_or(args.port),
        logging: args.logging,
        option_maps: Vec::new(),
    };

    if let Some(path) = &args.config {
        let mut file = read_map_file(path)?;
        let mut take = |keys: &[&str]| keys.iter().find_map(|key| file.remove(*key));
        if let Some(source) = take(&["source"]).filter(|_| !given("source")) {
            settings.source = match source {
                Value::String(text) => text,
                other => other.to_string(),
            };
        }
        if let Some(host) = take(&["host", "ipaddress"]).filter(|_| !given("host")) {
            let text = host.as_str().map(str::to_owned).unwrap_or_else(|| host.to_string());
            settings.host =
                text.parse().with_context(|| format!("{}: `host` {text} is not an IP address", path.display()))?;
        }
        let port_of = |value: Value, key: &str| -> anyhow::Result<u16> {
            value
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .with_context(|| format!("{}: `{key}` {value} is not a port number", path.display()))
        };
        if let Some(port) = take(&["port"]).filter(|_| !given("port")) {
            settings.port = port_of(port, "port")?;
            settings.udp_port = settings.port;
        }
        if let Some(udp_port) = take(&["udp_port"]).filter(|_| !given("udp_port")) {
            settings.udp_port = port_of(udp_port, "udp_port")?;
        } else if given("udp_port") || given("port") {
            settings.udp_port = args.udp_port.unwrap_or(args.port);
        }
        settings.logging |= file.get("logging").and_then(Value::as_bool).unwrap_or(false);
        settings.option_maps.push(file);
    }

    if let Some(text) = &args.options {
        let map = parse_option_map(text)?;
        settings.logging |= map.get("logging").and_then(Value::as_bool).unwrap_or(false);
        settings.option_maps.push(map);
    }

    // The flags given, by option name (each field is named as its option).
    let Value::Object(all_flags) = serde_json::to_value(args)? else {
        bail!("the flags did not serialize to a map");
    };
    let mut flags: Map<String, Value> = all_flags.into_iter().filter(|(name, _)| given(name)).collect();
    if given("no_metrics") {
        flags.insert("enable_metrics".into(), json!(false));
    }
    if given("no_h264_passthrough") {
        flags.insert("h264_passthrough".into(), json!(false));
    }
    settings.option_maps.push(flags);
    Ok(settings)
}

/// `--options`: inline JSON/YAML, or the path of a file holding it.
fn parse_option_map(text: &str) -> anyhow::Result<Map<String, Value>> {
    let path = Path::new(text);
    if !text.trim_start().starts_with('{') && path.is_file() {
        return read_map_file(path);
    }
    parse_map(text, "--options")
}

fn read_map_file(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let content = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    parse_map(&content, &path.display().to_string())
}

fn parse_map(content: &str, origin: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_yaml_ng::from_str::<Value>(content).with_context(|| format!("{origin} is not valid JSON or YAML"))? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => bail!("{origin} must be a map of option names to values, not {other}"),
    }
}

/// `WIDTHxHEIGHT` (or `WIDTH,HEIGHT`).
fn parse_resolution(text: &str) -> Result<(u32, u32), String> {
    let (width, height) = text.split_once(['x', 'X', ',']).ok_or("expected WIDTHxHEIGHT, e.g. 1280x720")?;
    let side = |side: &str| side.trim().parse::<u32>().map_err(|_| format!("{side:?} is not a whole number"));
    Ok((side(width)?, side(height)?))
}

#[cfg(test)]
mod tests {
    use webgear_rtc::IceTransportPolicy;

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let argv = std::iter::once("webgear-rtc").chain(args.iter().copied()).map(OsString::from);
        let matches = Args::command().try_get_matches_from(with_vidgear_flags(argv)).unwrap();
        resolve(&Args::from_arg_matches(&matches).unwrap(), &matches).unwrap()
    }

    #[test]
    fn no_flags_means_the_test_pattern_on_port_8000_with_default_options() {
        let settings = settings(&[]);
        assert_eq!(settings.source, "testsrc");
        assert_eq!((settings.host.to_string().as_str(), settings.port, settings.udp_port), ("0.0.0.0", 8000, 8000));
        assert_eq!(settings.options(), Options::default());
    }

    #[test]
    fn every_option_has_a_flag_and_vidgear_spellings_work() {
        let settings = settings(&[
            "-ip",
            "127.0.0.1",
            "-pt=9000",
            "-s",
            "clip.mp4",
            "-l",
            "--frame-size-reduction",
            "0",
            "-r",
            "640x480",
            "-f",
            "15",
            "--bitrate",
            "1.5M",
            "-cs",
            "COLOR_BGR2GRAY",
            "-td",
            "0.5",
            "-S",
            "--smoothing-radius",
            "10",
            "--enable-infinite-frames",
            "--enable-live-broadcast",
            "--custom-data-location",
            "/srv",
            "--overwrite-default-files",
            "--no-metrics",
            "--no-h264-passthrough",
            "--max-viewers",
            "7",
            "--ice-server",
            "stun:stun.example.net",
            "--ice-server",
            "turn:u:p@turn.example.net",
            "--ice-transport-policy",
            "relay",
            "--whep-token",
            "t",
            "--host-address",
            "lo",
            "--public-address",
            "203.0.113.7",
            "--ice-tcp-port",
            "8001",
            "--turn-secret",
            "north-wind",
            "--turn-credential-lifetime",
            "600",
        ]);
        assert_eq!((settings.source.as_str(), settings.port, settings.udp_port), ("clip.mp4", 9000, 9000));
        assert_eq!(settings.host.to_string(), "127.0.0.1");
        let options = settings.options();
        assert!(options.logging && options.stabilize && options.grayscale());
        assert_eq!(options.frame_size_reduction, 0);
        assert_eq!(options.resolution, Some((640, 480)));
        assert_eq!(options.framerate, Some(15.0));
        assert_eq!(options.bitrate, 1_500_000);
        assert_eq!(options.time_delay.as_millis(), 500);
        assert_eq!(options.smoothing_radius, 10);
        assert!(options.enable_infinite_frames && options.enable_live_broadcast && options.overwrite_default_files);
        assert_eq!(options.custom_data_location, Some(PathBuf::from("/srv")));
        assert!(!options.enable_metrics && !options.h264_passthrough);
        assert_eq!(options.max_viewers, 7);
        assert_eq!(options.ice_servers.len(), 2);
        assert_eq!(options.ice_servers[1].username.as_deref(), Some("u"));
        assert_eq!(options.ice_transport_policy, IceTransportPolicy::Relay);
        assert_eq!(options.whep_token.as_deref(), Some("t"));
        assert_eq!(options.host_addresses, ["lo"]);
        assert_eq!(options.public_addresses, ["203.0.113.7"]);
        assert_eq!(options.ice_tcp_port, Some(8001));
        assert_eq!(options.turn_secret.as_deref(), Some("north-wind"));
        assert_eq!(options.turn_credential_lifetime.as_secs(), 600);
    }

    #[test]
    fn vidgear_long_spellings_work_too() {
        assert_eq!(settings(&["--time_delay", "2"]).options().time_delay.as_secs(), 2);
        assert_eq!(settings(&["--ipaddress", "::1"]).host.to_string(), "::1");
    }

    #[test]
    fn flags_beat_options_which_beat_the_config_file_and_defaults_never_override() {
        let dir = std::env::temp_dir().join(format!("webgear-cli-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("webgear.yaml");
        std::fs::write(
            &config,
            "source: clip.mp4\nport: 9100\nframe_size_reduction: 50\nmax_viewers: 3\nstabilize: true\nframerate: 12\n",
        )
        .unwrap();
        let config = config.to_str().unwrap();
        let from_file = settings(&["--config", config]);
        assert_eq!((from_file.source.as_str(), from_file.port, from_file.udp_port), ("clip.mp4", 9100, 9100));
        let options = from_file.options();
        assert_eq!((options.frame_size_reduction, options.max_viewers), (50, 3), "flag defaults do not override");
        assert!(options.stabilize);

        let layered = settings(&[
            "--config",
            config,
            "--options",
            "{max_viewers: 4, framerate: 20}",
            "--max-viewers",
            "5",
            "-p",
            "9200",
        ]);
        assert_eq!((layered.port, layered.udp_port), (9200, 9200));
        let options = layered.options();
        assert_eq!(options.max_viewers, 5, "the flag wins");
        assert_eq!(options.framerate, Some(20.0), "--options beats the file");
        assert_eq!(options.frame_size_reduction, 50, "the file beats the defaults");
    }

    #[test]
    fn bad_values_name_the_flag_or_the_file() {
        let parse = |args: &[&str]| {
            let argv = std::iter::once("webgear-rtc").chain(args.iter().copied()).map(OsString::from);
            Args::command().try_get_matches_from(with_vidgear_flags(argv)).unwrap_err().to_string()
        };
        assert!(parse(&["--frame-size-reduction", "95"]).contains("--frame-size-reduction"));
        assert!(parse(&["-r", "wide"]).contains("WIDTHxHEIGHT"));
        assert!(parse(&["--ice-transport-policy", "none"]).contains("relay"));
        assert!(parse(&["--bitrate", "fast"]).contains("bits per second"));
        assert!(parse(&["-ip", "localhost"]).contains("invalid value 'localhost' for '--host"));
        let error = parse_map("[1]", "--options").unwrap_err().to_string();
        assert!(error.contains("must be a map"), "{error}");
    }
}
