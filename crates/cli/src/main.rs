//! The `webgear-rtc` command: parse the flags, build the server with the library, serve
//! until Ctrl-C or SIGTERM, then close every peer and stop the stream.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Map, Value};
use tracing::info;
use tracing_subscriber::EnvFilter;
use webgear_rtc::{Options, SourceSpec, WebGearRtc};

/// Stream a video source to browsers and WebRTC clients, encoded once for every viewer.
///
/// With no arguments it streams the built-in test pattern at http://localhost:8000/.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// What to stream: `testsrc` (the built-in moving test pattern), a video file, a
    /// network stream (rtsp://, http(s)://, rtmp://, udp://, srt://), or an image sequence
    /// (`frames/%04d.png`, `frames/*.png`). Files, streams and sequences need ffmpeg.
    #[arg(short = 's', long, default_value = "testsrc")]
    source: String,

    /// The address to listen on (HTTP and media). 0.0.0.0 serves every interface.
    #[arg(long, visible_alias = "ipaddress", default_value = "0.0.0.0")]
    host: IpAddr,

    /// The HTTP port.
    #[arg(short = 'p', long, default_value_t = 8000)]
    port: u16,

    /// The UDP port all WebRTC media uses [default: the same number as --port].
    #[arg(long)]
    udp_port: Option<u16>,

    /// Options as a JSON or YAML map, or the path of a file holding one,
    /// e.g. '{"frame_size_reduction": 50}'.
    #[arg(short = 'o', long)]
    options: Option<String>,

    /// Debug logging (same as the `logging` option).
    #[arg(short = 'l', long)]
    logging: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let option_map = args.options.as_deref().map(parse_options).transpose()?;
    let logging = args.logging || option_map.as_ref().and_then(|map| map.get("logging")?.as_bool()).unwrap_or(false);
    init_logging(logging);

    let mut options = Options::default();
    if let Some(map) = &option_map {
        options.apply_map(map);
    }
    // `--logging` is the `logging` option too: error pages show their report.
    options.logging |= args.logging;
    let source: SourceSpec = args.source.parse()?;
    let app = WebGearRtc::builder()
        .source(source)
        .options(options)
        .listen_ip(args.host)
        .udp_port(args.udp_port.unwrap_or(args.port))
        .build()
        .await
        .context("could not start the stream")?;

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("could not listen on {}:{}", args.host, args.port))?;
    let http_port = listener.local_addr()?.port();
    for media in app.media_addrs() {
        info!("open http://{}:{http_port}/ to watch", media.ip());
    }

    axum::serve(listener, app.router()).with_graceful_shutdown(shutdown_signal()).await?;
    info!("shutting down");
    app.shutdown().await;
    Ok(())
}

/// Reads `--options`: inline JSON/YAML, or a file holding it.
fn parse_options(text: &str) -> anyhow::Result<Map<String, Value>> {
    let path = Path::new(text);
    let (content, origin) = if !text.trim_start().starts_with('{') && path.is_file() {
        let content = std::fs::read_to_string(path).with_context(|| format!("could not read options file {text}"))?;
        (content, format!("options file {text}"))
    } else {
        (text.to_owned(), "--options".to_owned())
    };
    match serde_yaml_ng::from_str::<Value>(&content).with_context(|| format!("{origin} is not valid JSON or YAML"))? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        other => bail!("{origin} must be a map of option names to values, not {other}"),
    }
}

fn init_logging(debug: bool) {
    let default = if debug {
        "webgear_rtc=debug,webgear_rtc_cli=debug,webgear_media=debug,tower_http=debug,info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
