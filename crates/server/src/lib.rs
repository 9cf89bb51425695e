//! # webgear-rtc
//!
//! A WebRTC video server: it takes a video source, encodes it **once**, and streams it with
//! low latency to every viewer — browsers and native WebRTC clients — from a web app you
//! can extend. It speaks the same HTTP protocol as vidgear's WebGear_RTC (`GET /` plays the
//! stream, `POST /offer` exchanges SDP as JSON).
//!
//! Frames flow one way: source → transform → encode → fan-out → peers. Each stream has one
//! capture thread that reads the source, shrinks frames by `frame_size_reduction` (and
//! steadies or greys them if asked), and encodes H.264 once per rung of a [`Ladder`] that
//! someone watches; peer drivers (one per core, each around a synchronous fan-out core)
//! send the result to every peer over a single UDP port, each viewer paced at its own
//! bandwidth estimate and sent the rung its link carries.
//! A source's H.264 that needs no transform skips the encoder altogether: it is passed
//! through to the peers as it arrives. Options are set by name ([`Options::set`]), each
//! checked as its one definition in [`OPTIONS`] says.
//!
//! ```no_run
//! use webgear_rtc::{SourceSpec, WebGearRtc};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = WebGearRtc::builder()
//!     .source(SourceSpec::TestPattern)
//!     .frame_size_reduction(25)
//!     .build()
//!     .await?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
//! webgear_rtc::serve(listener, app.router(), async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await;
//! app.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};
use webgear_media::source::connections::LiveConnections;
use webgear_media::source::open::OpenedSource;
use webgear_media::transform::{FrameSizeReducer, TransformError};

mod ice;
mod ladder;
mod options;
mod rtc;
mod stats;
mod stream;
mod web;

pub use ladder::{Ladder, MAX_RUNGS, Rung};
pub use minijinja;
pub use options::{Flag, IceServer, IceTransportPolicy, OPTIONS, OptionError, OptionSpec, Options, Takes};
pub use stats::Stats;
pub use stream::StreamError;
pub use web::{DataError, HEADER_READ_TIMEOUT, STOP_GRACE, raise_open_file_limit, serve};
pub use webgear_media::frame::{Frame, I420Frame, PixelFormat};
pub use webgear_media::source::from_fn;
pub use webgear_media::source::{FrameSource, SourceError, SourceSettings, SourceSpec};

use ice::IceConfig;
pub use ice::MissingTurnCredentials;
use rtc::{RtcServer, RtcSettings};
use stats::Metrics;
use stream::{StreamClock, StreamSettings, StreamStart, VideoStream};
use web::{DataFiles, Templates};

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither a source nor a custom stream was given.
    #[error("no source to stream: give a source or a custom stream")]
    NoSource,
    /// The source could not be opened.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An option has an invalid value.
    #[error(transparent)]
    Transform(#[from] TransformError),
    /// The stream could not start.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The media sockets could not be set up.
    #[error("could not set up WebRTC media: {0}")]
    Media(#[source] std::io::Error),
    /// A TURN server has no credentials and no `turn_secret` can mint them.
    #[error(transparent)]
    TurnCredentials(#[from] MissingTurnCredentials),
    /// The data folder (templates, static files) could not be prepared.
    #[error(transparent)]
    Data(#[from] DataError),
    /// An option given to the builder has an invalid value.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A static folder was given an unusable name or URL path.
    #[error("static folder {name:?} at {url_path:?}: {reason}")]
    StaticFolder {
        /// The name `url_for` would know it by.
        name: String,
        /// The URL path it was to be served at.
        url_path: String,
        /// What is wrong.
        reason: &'static str,
    },
}

enum SourceChoice {
    Spec(SourceSpec),
    Custom(Box<dyn FrameSource>),
}

/// Configures and builds a [`WebGearRtc`]. Created by [`WebGearRtc::builder`].
pub struct Builder {
    source: Option<SourceChoice>,
    options: Options,
    /// An option the builder was given that is invalid, reported by `build`.
    invalid_option: Option<OptionError>,
    static_folders: Vec<StaticFolder>,
    listen_ip: IpAddr,
    udp_port: u16,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Some(SourceChoice::Spec(spec)) => spec.to_string(),
            Some(SourceChoice::Custom(_)) => "custom stream".to_owned(),
            None => "none".to_owned(),
        };
        f.debug_struct("Builder")
            .field("source", &source)
            .field("options", &self.options)
            .field("static_folders", &self.static_folders)
            .field("listen_ip", &self.listen_ip)
            .field("udp_port", &self.udp_port)
            .finish()
    }
}

impl Builder {
    /// What to stream (vidgear's `source`).
    pub fn source(mut self, spec: SourceSpec) -> Self {
        self.source = Some(SourceChoice::Spec(spec));
        self
    }

    /// Streams frames from your own producer instead of a source (vidgear's
    /// `custom_stream`). As in WebGear_RTC, it is read only while someone watches: its
    /// `read` is first called when the first viewer comes, and not while nobody does. A
    /// producer that goes on by itself (a camera of your own) says so with
    /// [`FrameSource::is_live`]: it is then read all along, and what it gives while
    /// nobody watches is dropped, so that viewers see it live.
    pub fn custom_stream(mut self, stream: impl FrameSource + 'static) -> Self {
        self.source = Some(SourceChoice::Custom(Box::new(stream)));
        self
    }

    /// Replaces all options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Shrinks frames by `percent` (0..=90, default 20) before encoding. Checked as the
    /// option is everywhere; an invalid value fails [`Builder::build`].
    pub fn frame_size_reduction(mut self, percent: u8) -> Self {
        if let Err(error) = self.options.set("frame_size_reduction", &percent.into()) {
            self.invalid_option.get_or_insert(error);
        }
        self
    }

    /// Serves the files under `dir` at `url_path` (e.g. `/assets`), and lets templates link
    /// to them with `url_for(name, path='/logo.png')`, as WebGear_RTC users mount folders
    /// in Starlette. The data folder's `static/` is always served as `static` at `/static`.
    pub fn static_folder(mut self, name: &str, url_path: &str, dir: impl AsRef<Path>) -> Self {
        self.static_folders.push(StaticFolder {
            name: name.to_owned(),
            url_path: url_path.to_owned(),
            dir: dir.as_ref().to_path_buf(),
        });
        self
    }

    /// The address whose interfaces carry media. The default, `0.0.0.0`, offers every
    /// IPv4 interface address to viewers, `::` every IPv4 and IPv6 address, and a specific
    /// address only itself. The `host_addresses` option chooses instead.
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// The UDP port all WebRTC media uses (default 0: any free port). One port serves
    /// every viewer.
    pub fn udp_port(mut self, port: u16) -> Self {
        self.udp_port = port;
        self
    }

    /// Prepares the data folder, opens the source, starts its encoder and binds the media
    /// port.
    ///
    /// Opening the source (a network stream may take seconds) runs off the async runtime.
    /// Dropping the returned future before it finishes, e.g. because the server is asked
    /// to stop while it is still starting, closes any live stream it had connected to.
    pub async fn build(self) -> Result<WebGearRtc, Error> {
        if let Some(error) = self.invalid_option {
            return Err(error.into());
        }
        let source = self.source.ok_or(Error::NoSource)?;
        let reducer = FrameSizeReducer::new(self.options.frame_size_reduction())?;
        let data =
            DataFiles::prepare(self.options.custom_data_location().as_deref(), self.options.overwrite_default_files())?;
        let mut folders =
            vec![StaticFolder { name: "static".into(), url_path: "/static".into(), dir: data.static_dir() }];
        folders.extend(self.static_folders);
        let mut url_paths = BTreeMap::new();
        for folder in &folders {
            folder.validate()?;
            if url_paths.values().any(|taken| taken == &folder.url_path)
                || web::ROUTES.contains(&folder.url_path.as_str())
            {
                return Err(folder.error("the URL path is already taken"));
            }
            if url_paths.insert(folder.name.clone(), folder.url_path.clone()).is_some() {
                return Err(folder.error("the name is already taken"));
            }
        }
        let ice = Arc::new(IceConfig::from_options(&self.options)?);
        let templates = Templates::new(data.templates_dir(), url_paths, ice.clone());
        let static_dirs = folders.into_iter().map(|folder| (folder.url_path, folder.dir)).collect();

        let mut reopen: Option<stream::Reopen> = None;
        let connections = LiveConnections::default();
        let unfinished = ClosedUnlessBuilt(Some(connections.clone()));
        let source = match source {
            SourceChoice::Spec(spec) => {
                info!(source = %spec, "opening source");
                // Network streams drop and cameras get unplugged; both are worth reopening.
                let may_come_back = matches!(spec, SourceSpec::Url(_) | SourceSpec::Camera(_));
                let mut settings = SourceSettings::default();
                settings.connections = connections.clone();
                settings.resolution = self.options.resolution();
                settings.framerate = self.options.framerate();
                // H.264 from the source goes to viewers untouched unless frames must change.
                let pass_through = self.options.h264_passthrough()
                    && self.options.frame_size_reduction() == 0
                    && !self.options.grayscale()
                    && !self.options.stabilize();
                let open = move || -> Result<OpenedSource, SourceError> {
                    if !pass_through {
                        return Ok(OpenedSource::Frames(spec.open(&settings)?));
                    }
                    let opened = spec.open_preferring_h264(&settings)?;
                    match &opened {
                        OpenedSource::H264(_) => {
                            info!(source = %spec, "passing the source's H.264 through: no encoder runs")
                        }
                        OpenedSource::FramesUntilH264(..) => {
                            info!(source = %spec, "decoding and encoding the live stream while its H.264 is checked");
                        }
                        OpenedSource::Frames(_) => {}
                    }
                    Ok(opened)
                };
                let open: stream::Reopen = Arc::new(open);
                // In infinite mode a camera or stream that is not there yet (an encoder
                // started after the server, a UDP sender not sending yet) is waited for while
                // "No Input" plays, as one that went away is.
                let wait_in_background = may_come_back && self.options.infinite_frames();
                let first_open = open.clone();
                let start = off_the_runtime(move || {
                    if wait_in_background { open_or_wait(first_open) } else { Ok(StreamStart::Playing(first_open()?)) }
                })
                .await?;
                if may_come_back {
                    reopen = Some(open);
                }
                start
            }
            SourceChoice::Custom(stream) => StreamStart::Playing(OpenedSource::Frames(stream)),
        };
        let metrics = Arc::new(Metrics::default());
        let stream_settings = StreamSettings {
            infinite: self.options.infinite_frames(),
            grayscale: self.options.grayscale(),
            stabilize: self.options.stabilize().then_some(self.options.smoothing_radius()),
            start_delay: self.options.time_delay(),
            ladder: self.options.rendition_ladder(),
            reopen: reopen.filter(|_| self.options.infinite_frames()),
            connections,
        };
        let stream = VideoStream::start(source, reducer, stream_settings, metrics.clone())?;
        let settings = RtcSettings {
            listen_ip: self.listen_ip,
            udp_port: self.udp_port,
            max_viewers: self.options.max_viewers(),
            host_addresses: self.options.host_addresses(),
            public_addresses: self.options.public_addresses(),
            ice_tcp_port: self.options.ice_tcp_port(),
        };
        let rtc = RtcServer::start(settings, &stream, metrics.clone()).await.map_err(Error::Media)?;
        info!(addrs = ?rtc.media_addrs(), public = ?rtc.public_addrs(), "WebRTC media listening (UDP)");
        let clock = stream.clock();
        unfinished.built();
        Ok(WebGearRtc {
            inner: Arc::new(Inner {
                rtc: Arc::new(rtc),
                stream: Mutex::new(Some(stream)),
                metrics,
                clock,
                templates,
                ice,
                static_dirs,
                data,
                options: self.options,
            }),
        })
    }
}

/// How long an infinite-mode start waits for its source to open before it goes on with
/// "No Input" and lets the opening finish in the background: longer than a source that is
/// there takes (a live stream whose picture size comes only with its keyframes may take
/// a few seconds).
const FIRST_OPEN_WAIT: Duration = Duration::from_secs(10);

/// Closes the live streams a [`Builder::build`] connected to unless it finished: when it
/// failed after opening the source, or was dropped while the source was still opening.
struct ClosedUnlessBuilt(Option<LiveConnections>);

impl ClosedUnlessBuilt {
    fn built(mut self) {
        self.0 = None;
    }
}

impl Drop for ClosedUnlessBuilt {
    fn drop(&mut self) {
        if let Some(connections) = self.0.take() {
            connections.close_all();
        }
    }
}

/// Runs `blocking` (opening a source: reading a file's header, connecting to a stream) on
/// a thread for blocking work, so the build does not hold up the runtime's other tasks.
async fn off_the_runtime<T: Send + 'static>(
    blocking: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    match tokio::task::spawn_blocking(blocking).await {
        Ok(result) => result,
        Err(failed) => match failed.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(cancelled) => Err(StreamError::Thread(std::io::Error::other(cancelled)).into()),
        },
    }
}

/// Opens the source for an infinite-mode stream, waiting up to [`FIRST_OPEN_WAIT`]. A
/// source that cannot be opened, or is still opening then, does not stop the start.
fn open_or_wait(open: stream::Reopen) -> Result<StreamStart, Error> {
    let pending = stream::open_in_background(open).map_err(StreamError::Thread)?;
    match pending.recv_timeout(FIRST_OPEN_WAIT) {
        Ok(Ok(input)) => Ok(StreamStart::Playing(input)),
        Ok(Err(error)) => {
            warn!(%error, "the source cannot be opened yet: \"No Input\" plays until it can");
            Ok(StreamStart::Gone)
        }
        Err(_) => {
            warn!("the source is still opening after {FIRST_OPEN_WAIT:?}: \"No Input\" plays until it has");
            Ok(StreamStart::Opening(pending))
        }
    }
}

/// The addresses a server listening on `listen_ip` is reached at: that address, or for a
/// wildcard every interface address (IPv4 for `0.0.0.0`, IPv4 and IPv6 for `::`),
/// loopback last. For telling users where to open the page.
pub fn reachable_ips(listen_ip: IpAddr) -> std::io::Result<Vec<IpAddr>> {
    rtc::host_ips(listen_ip, &[])
}

/// A running server: its stream, its peers and its web app. Cheap to clone.
#[derive(Clone)]
pub struct WebGearRtc {
    inner: Arc<Inner>,
}

struct Inner {
    rtc: Arc<RtcServer>,
    stream: Mutex<Option<VideoStream>>,
    metrics: Arc<Metrics>,
    clock: StreamClock,
    templates: Templates,
    ice: Arc<IceConfig>,
    static_dirs: Vec<(String, PathBuf)>,
    data: DataFiles,
    options: Options,
}

/// A folder of static files, served and known to `url_for`.
#[derive(Debug)]
struct StaticFolder {
    name: String,
    url_path: String,
    dir: PathBuf,
}

impl StaticFolder {
    fn validate(&self) -> Result<(), Error> {
        if self.name.trim().is_empty() {
            return Err(self.error("the name is empty"));
        }
        let path = self.url_path.as_str();
        if !path.starts_with('/') || path == "/" || path.ends_with('/') || path.contains("..") {
            return Err(self.error("the URL path must start with '/', name a folder, and not end with '/'"));
        }
        Ok(())
    }

    fn error(&self, reason: &'static str) -> Error {
        Error::StaticFolder { name: self.name.clone(), url_path: self.url_path.clone(), reason }
    }
}

impl fmt::Debug for WebGearRtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebGearRtc").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

impl WebGearRtc {
    /// Starts configuring a server.
    pub fn builder() -> Builder {
        Builder {
            source: None,
            options: Options::default(),
            invalid_option: None,
            static_folders: Vec::new(),
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            udp_port: 0,
        }
    }

    /// The web app: the pages, `/offer`, `/close_connection` and the static folders. Add
    /// routes and layers to it, or nest it under a prefix, like any `axum::Router`, and run
    /// it with [`serve`] (or `axum::serve`, which sets no deadline for request headers).
    pub fn router(&self) -> axum::Router {
        let inner = &self.inner;
        web::router(web::AppState {
            rtc: inner.rtc.clone(),
            templates: inner.templates.clone(),
            clock: inner.clock.clone(),
            static_dirs: inner.static_dirs.clone(),
            live_broadcast: inner.options.enable_live_broadcast(),
            logging: inner.options.logging(),
            metrics: inner.options.enable_metrics(),
            ice: inner.ice.clone(),
            whep_token: inner.options.whep_token().as_deref().map(Arc::from),
        })
    }

    /// Renders one of the data folder's templates (your own or the defaults) with
    /// `context`, for your own routes. `url_prefix` is the path the app is mounted under
    /// (`""` at the root); `url_for` puts it in front of every URL.
    pub fn render(
        &self,
        template: &str,
        url_prefix: &str,
        context: minijinja::Value,
    ) -> Result<String, minijinja::Error> {
        self.inner.templates.render(template, url_prefix, context)
    }

    /// The data folder in use (`…/.vidgear/webgear_rtc`).
    pub fn data_location(&self) -> &Path {
        self.inner.data.root()
    }

    /// The options the server was built with.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// What the server is doing right now.
    pub fn stats(&self) -> Stats {
        self.inner.metrics.snapshot()
    }

    /// The UDP addresses the media listens on (and offers to viewers).
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.inner.rtc.media_addrs().to_vec()
    }

    /// The TCP addresses media is also offered at (ICE-TCP, from `ice_tcp_port`).
    pub fn tcp_media_addrs(&self) -> Vec<SocketAddr> {
        self.inner.rtc.tcp_addrs().to_vec()
    }

    /// The public addresses (from `public_addresses`) offered to viewers besides them.
    pub fn public_addrs(&self) -> Vec<SocketAddr> {
        self.inner.rtc.public_addrs().to_vec()
    }

    /// Closes every peer, stops the capture thread and waits for both.
    pub async fn shutdown(&self) {
        self.inner.rtc.shutdown().await;
        let stream = self.inner.stream.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(mut stream) = stream {
            // Joining the capture thread waits for the source's next frame: at most one
            // frame interval. The source's connections (relayed live streams, RTSP
            // sessions, the ffmpeg reading a URL, a camera or the screen) are closed first,
            // so one that went silent does not hold it up.
            let _ = tokio::task::spawn_blocking(move || stream.stop()).await;
        }
    }
}
