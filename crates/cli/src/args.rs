//! The command line: every option as a flag, made from the option's own definition
//! ([`webgear_rtc::OPTIONS`]: its flag, its help, its default and its check), vidgear's
//! spellings as aliases, and where settings come from when given more than once.
//!
//! Precedence, lowest first: the built-in defaults, `--config FILE`, `--options MAP`, then
//! the flags themselves. A flag counts only when it is given, so a default shown in
//! `--help` never overrides a value from a file.

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::builder::ValueParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde_json::{Map, Value};
use webgear_rtc::{OPTIONS, OptionSpec, Options, Takes};

/// Stream a video source to browsers and WebRTC clients, encoded once for every viewer.
///
/// With no arguments it streams the built-in test pattern at http://localhost:8000/.
/// Viewers open that page, or point any WHEP player at http://HOST:PORT/whep.
#[derive(Debug, Parser)]
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
    pub(crate) source: String,

    /// The address to listen on (HTTP and media). 0.0.0.0 serves every IPv4 interface,
    /// :: every IPv4 and IPv6 one.
    #[arg(long, visible_alias = "ipaddress", default_value = "0.0.0.0")]
    pub(crate) host: IpAddr,

    /// The HTTP port (0: any free port).
    #[arg(short = 'p', long, default_value_t = 8000)]
    pub(crate) port: u16,

    /// The UDP port all WebRTC media uses [default: the same number as --port].
    #[arg(long)]
    pub(crate) udp_port: Option<u16>,

    /// A YAML or JSON file of settings: any option below by its option name (e.g.
    /// `frame_size_reduction: 50`), and `source`, `host`, `port`, `udp_port`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Options as a JSON or YAML map, or the path of a file holding one, e.g.
    /// '{"frame_size_reduction": 50}' (vidgear's -op).
    #[arg(short = 'o', long, value_name = "MAP")]
    options: Option<String>,
}

/// The whole command line: the arguments above, then a flag for every option.
fn command() -> clap::Command {
    OPTIONS.iter().fold(Args::command(), |command, option| command.arg(flag_of(option)))
}

/// The flag of `option`, its value checked as the option checks it from a map.
fn flag_of(option: &'static OptionSpec) -> Arg {
    let flag = option.flag;
    let mut help = option.doc.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(default) = flag.default {
        help.push_str(&format!(" [default: {default}]"));
    }
    let mut arg = Arg::new(option.name).long(flag.long).visible_aliases(flag.aliases).help(help);
    if let Some(short) = flag.short {
        arg = arg.short(short);
    }
    if let Some(heading) = flag.heading {
        arg = arg.help_heading(heading);
    }
    if let Some(env) = flag.env {
        arg = arg.env(env).hide_env_values(true);
    }
    let takes = flag.takes;
    let checked = move |text: &str| -> Result<Value, String> {
        let value = takes.value_of(text);
        option.check(&value).map(|()| value).map_err(|expected| format!("expected {expected}"))
    };
    match takes {
        Takes::Switch | Takes::SwitchOff => arg.action(ArgAction::SetTrue),
        Takes::Number(name) | Takes::Text(name) => arg.value_name(name).value_parser(ValueParser::new(checked)),
        Takes::Repeated(name) => arg.value_name(name).action(ArgAction::Append).value_parser(ValueParser::new(checked)),
        _ => arg,
    }
}

/// The options given as flags, by option name, as a map reads them.
fn flags_given(matches: &ArgMatches) -> Map<String, Value> {
    let mut flags = Map::new();
    for option in OPTIONS {
        if !given(matches, option.name) {
            continue;
        }
        let value = match option.flag.takes {
            Takes::Switch | Takes::SwitchOff => option.flag.takes.value_of(""),
            Takes::Repeated(_) => {
                Value::Array(matches.get_many::<Value>(option.name).into_iter().flatten().cloned().collect())
            }
            _ => matches.get_one::<Value>(option.name).cloned().unwrap_or(Value::Null),
        };
        flags.insert(option.name.to_owned(), value);
    }
    flags
}

/// Whether the argument `id` was given (not just defaulted).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
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
    let matches = command().get_matches_from(with_vidgear_flags(args));
    let args = Args::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    resolve(&args, &matches)
}

fn resolve(args: &Args, matches: &ArgMatches) -> anyhow::Result<Settings> {
    let given = |id: &str| given(matches, id);
    let flags = flags_given(matches);
    let mut settings = Settings {
        source: args.source.clone(),
        host: args.host,
        port: args.port,
        udp_port: args.udp_port.unwrap_or(args.port),
        logging: flags.get("logging").and_then(Value::as_bool).unwrap_or(false),
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

#[cfg(test)]
mod tests {
    use webgear_rtc::IceTransportPolicy;

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let argv = std::iter::once("webgear-rtc").chain(args.iter().copied()).map(OsString::from);
        let matches = command().try_get_matches_from(with_vidgear_flags(argv)).unwrap();
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
        assert!(options.logging() && options.stabilize() && options.grayscale());
        assert_eq!(options.frame_size_reduction(), 0);
        assert_eq!(options.resolution(), Some((640, 480)));
        assert_eq!(options.framerate(), Some(15.0));
        assert_eq!(options.bitrate(), 1_500_000);
        assert_eq!(options.time_delay().as_millis(), 500);
        assert_eq!(options.smoothing_radius(), 10);
        assert!(
            options.enable_infinite_frames() && options.enable_live_broadcast() && options.overwrite_default_files()
        );
        assert_eq!(options.custom_data_location(), Some(PathBuf::from("/srv")));
        assert!(!options.enable_metrics() && !options.h264_passthrough());
        assert_eq!(options.max_viewers(), 7);
        assert_eq!(options.ice_servers().len(), 2);
        assert_eq!(options.ice_servers()[1].username.as_deref(), Some("u"));
        assert_eq!(options.ice_transport_policy(), IceTransportPolicy::Relay);
        assert_eq!(options.whep_token().as_deref(), Some("t"));
        assert_eq!(options.host_addresses(), ["lo"]);
        assert_eq!(options.public_addresses(), ["203.0.113.7"]);
        assert_eq!(options.ice_tcp_port(), Some(8001));
        assert_eq!(options.turn_secret().as_deref(), Some("north-wind"));
        assert_eq!(options.turn_credential_lifetime().as_secs(), 600);
    }

    #[test]
    fn every_option_is_a_flag_that_checks_its_value_as_the_option_does() {
        let command = command();
        for option in OPTIONS {
            let flag = command.get_arguments().find(|arg| arg.get_id() == option.name);
            assert_eq!(flag.and_then(Arg::get_long), Some(option.flag.long), "{}", option.name);
        }
        // The same check, whether the value comes from a flag or a map.
        let from_flag = command.try_get_matches_from(["webgear-rtc", "--smoothing-radius", "0"]).unwrap_err();
        let mut options = Options::default();
        let from_map = options.set("smoothing_radius", &serde_json::json!(0)).unwrap_err();
        let webgear_rtc::OptionError::Invalid { expected, .. } = from_map else { panic!("{from_map}") };
        assert!(from_flag.to_string().contains(&expected), "{from_flag}");
    }

    #[test]
    fn vidgear_long_spellings_work_too() {
        assert_eq!(settings(&["--time_delay", "2"]).options().time_delay().as_secs(), 2);
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
        assert_eq!((options.frame_size_reduction(), options.max_viewers()), (50, 3), "flag defaults do not override");
        assert!(options.stabilize());

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
        assert_eq!(options.max_viewers(), 5, "the flag wins");
        assert_eq!(options.framerate(), Some(20.0), "--options beats the file");
        assert_eq!(options.frame_size_reduction(), 50, "the file beats the defaults");
    }

    #[test]
    fn bad_values_name_the_flag_or_the_file() {
        let parse = |args: &[&str]| {
            let argv = std::iter::once("webgear-rtc").chain(args.iter().copied()).map(OsString::from);
            command().try_get_matches_from(with_vidgear_flags(argv)).unwrap_err().to_string()
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
