//! The `webgear-rtc` command: gather the settings ([`args`]), build the server with the
//! library, say where to open it, serve until Ctrl-C or SIGTERM, then close every peer and
//! stop the stream.

use std::net::SocketAddr;

use anyhow::Context;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;
use webgear_rtc::{SourceSpec, WebGearRtc};

mod args;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = args::settings_from(std::env::args_os())?;
    init_logging(settings.logging);
    let options = settings.options();
    let source: SourceSpec = settings.source.parse()?;
    let app = WebGearRtc::builder()
        .source(source)
        .options(options)
        .listen_ip(settings.host)
        .udp_port(settings.udp_port)
        .build()
        .await
        .context("could not start the stream")?;

    let listener = tokio::net::TcpListener::bind(SocketAddr::new(settings.host, settings.port))
        .await
        .with_context(|| format!("could not listen on {}", SocketAddr::new(settings.host, settings.port)))?;
    announce(&app, listener.local_addr()?);

    axum::serve(listener, app.router()).with_graceful_shutdown(shutdown_signal()).await?;
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
