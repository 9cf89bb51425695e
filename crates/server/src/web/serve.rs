//! Serving the web app over HTTP/1.1 on the open network. `axum::serve` gives hyper no
//! timer, so a client that opens a connection and never finishes its request headers (or
//! keeps an idle connection) holds it, a task and a file descriptor for as long as it likes:
//! a few hundred such clients would lock every viewer out. [`serve`] runs the same router
//! with a deadline for request headers, and stops gracefully without letting a stalled
//! client hold up the stop. [`raise_open_file_limit`] lets the process hold a connection
//! per watching browser.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{trace, warn};

/// How long a client has to send a request's headers, counted from when it connects or
/// finishes its previous request: an idle kept-alive connection is closed after this long
/// too (browsers open a new one when they need it). Bodies have their own deadline (see
/// the router's body timeout).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long requests still in progress when the stop is asked for may take to finish; any
/// left then are cut off.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Serves `router` (the app's [`crate::WebGearRtc::router`], extended or not) on
/// `listener` until `stop` resolves; then stops accepting, lets requests in progress finish
/// for up to [`STOP_GRACE`], and returns. Connections that have not sent complete request
/// headers within [`HEADER_READ_TIMEOUT`] are closed. Upgrades (WebSockets on routes a
/// user adds) work as with `axum::serve`.
///
/// ```no_run
/// # async fn run(app: webgear_rtc::WebGearRtc) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
/// webgear_rtc::serve(listener, app.router(), async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
/// app.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn serve(listener: TcpListener, router: Router, stop: impl Future<Output = ()>) {
    let mut stop = pin!(stop);
    let (ask_to_finish, finish_asked) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => {
                    connections.spawn(serve_connection(stream, router.clone(), finish_asked.clone()));
                }
                Err(error) => pause_after_accept_error(&error).await,
            },
            // Reap finished connections as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    ask_to_finish.send_replace(true);
    let finished = tokio::time::timeout(STOP_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        warn!("HTTP requests still in progress {STOP_GRACE:?} after the stop were cut off");
        connections.shutdown().await;
    }
}

/// Serves one connection until it closes, finishing the request in progress (and taking
/// no more) once `finish_asked` turns true.
async fn serve_connection(stream: TcpStream, router: Router, mut finish_asked: watch::Receiver<bool>) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let mut connection =
        pin!(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router)).with_upgrades());
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = async { _ = finish_asked.wait_for(|asked| *asked).await } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        trace!(%error, "HTTP connection ended");
    }
}

/// Raises this process's soft limit on open files to its hard limit, and returns the limit
/// now in force (`None` where this is not done: systems other than Linux). A browser keeps
/// its HTTP connection open after it joins (under [`serve`] until it has been idle for
/// [`HEADER_READ_TIMEOUT`]; under `axum::serve` as long as it watches), so viewers joining
/// at 100 a second hold a thousand connections, and at the usual soft limit (1024 on
/// Linux) a server stops accepting them. Call it at start, before any thread that opens
/// files runs; processes started later (ffmpeg) inherit the raised limit.
pub fn raise_open_file_limit() -> io::Result<Option<u64>> {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        if soft < hard {
            setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        }
        Ok(Some(hard))
    }
    #[cfg(not(target_os = "linux"))]
    Ok(None)
}

/// Waits after a failed accept. A connection that failed before it was taken costs
/// nothing; running out of file descriptors or memory would fail every accept in a tight
/// loop, so the server waits a second for some to be freed.
async fn pause_after_accept_error(error: &io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(error.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        trace!(%error, "a connection failed before it was accepted");
        return;
    }
    warn!(%error, "could not accept an HTTP connection; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
