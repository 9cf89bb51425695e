//! The `webgear-rtc` command: gather the settings ([`args`]), build the server with the
//! library, say where to open it, serve until Ctrl-C or SIGTERM, then close every peer and
//! stop the stream. A stop asked for while the stream is still starting ends the start;
//! HTTP requests still in progress get [`webgear_rtc::STOP_GRACE`] to finish; a second
//! Ctrl-C or SIGTERM ends the process at once, whatever the stop is waiting for.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use webgear_rtc::{SourceSpec, WebGearRtc};

mod args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = args::settings_from(std::env::args_os())?;
    init_logging(settings.logging);
    raise_open_file_limit();
    let options = settings.options();
    let source: SourceSpec = settings.source.parse()?;
    // Listening before anything starts: until then a signal would kill the server outright,
    // leaving its ffmpeg children behind.
    let stop = Stop::listen().context("could not listen for Ctrl-C and SIGTERM")?;
    let build = WebGearRtc::builder()
        .source(source)
        .options(options)
        .listen_ip(settings.host)
        .udp_port(settings.udp_port)
        .build();
    let app = tokio::select! {
        built = build => built.context("could not start the stream")?,
        () = stop.clone().asked() => {
            // Dropping the start closed the live streams it connected to. A source that
            // cannot be closed (a hung ffprobe) may still hold the thread opening it,
            // which returning from main would wait for.
            info!("stopped while the stream was starting");
            std::process::exit(0);
        }
    };

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(settings.host, settings.port))
        .await
        .with_context(|| format!("could not listen on {}", SocketAddr::new(settings.host, settings.port)))?;
    announce(&app, listener.local_addr()?);

    webgear_rtc::serve(listener, app.router(), stop.asked()).await;
    info!("shutting down");
    app.shutdown().await;
    Ok(())
}

/// Logs every URL the page (and the WHEP endpoint) can be opened at.
fn announce(app: &WebGearRtc, http: SocketAddr) {
    let ips = webgear_rtc::reachable_ips(http.ip()).unwrap_or_else(|error| {
        warn!(%error, "could not list this machine's addresses");
        vec![http.ip()]
    });
    for ip in ips {
        let base = SocketAddr::new(ip, http.port());
        info!("open http://{base}/ to watch (WHEP players: http://{base}/whep)");
    }
    for tcp in app.tcp_media_addrs() {
        info!("media is also offered over TCP at {tcp} (ICE-TCP)");
    }
    for public in app.public_addrs() {
        info!("media is also offered at public address {public}");
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

/// Raises the limit on open files, so that many browsers joining at once fit.
fn raise_open_file_limit() {
    match webgear_rtc::raise_open_file_limit() {
        Ok(limit) => tracing::debug!(limit, "open files allowed"),
        Err(error) => warn!(%error, "could not raise the limit on open files: fewer viewers can connect at once"),
    }
}

/// Whether a stop has been asked for. The first Ctrl-C or SIGTERM asks for a clean stop;
/// a second one ends the process at once with status 130, for a stop that hangs.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Listens for the signals from now on.
    fn listen() -> std::io::Result<Stop> {
        let mut signals = StopSignals::listen()?;
        let (ask, asked) = watch::channel(false);
        tokio::spawn(async move {
            signals.received().await;
            info!("stopping (Ctrl-C again to stop at once)");
            ask.send_replace(true);
            signals.received().await;
            warn!("asked again: stopping at once");
            std::process::exit(130);
        });
        Ok(Stop(asked))
    }

    /// Resolves once a stop has been asked for.
    async fn asked(mut self) {
        if self.0.wait_for(|asked| *asked).await.is_err() {
            // The listening task is gone: no stop can be asked for any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, caught from the moment they are listened for.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    #[cfg(unix)]
    fn listen() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    #[cfg(not(unix))]
    fn listen() -> std::io::Result<StopSignals> {
        Ok(StopSignals {})
    }

    /// Resolves when either signal comes.
    #[cfg(unix)]
    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }

    /// Resolves on Ctrl-C.
    #[cfg(not(unix))]
    async fn received(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
