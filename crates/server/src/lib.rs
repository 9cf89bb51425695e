//! # webgear-rtc
//!
//! A WebRTC video server: it takes a video source, encodes it **once**, and streams it with
//! low latency to every viewer — browsers and native WebRTC clients — from a web app you
//! can extend. It speaks the same HTTP protocol as vidgear's WebGear_RTC (`GET /` plays the
//! stream, `POST /offer` exchanges SDP as JSON).
//!
//! Frames flow one way: source → transform → encode → fan-out → peers. Each stream has one
//! capture thread that reads the source, shrinks frames by `frame_size_reduction`, and
//! encodes H.264; one driver task sends the result to every peer over a single UDP port.
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
//! axum::serve(listener, app.router()).await?;
//! app.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tracing::info;
use webgear_media::transform::{FrameSizeReducer, TransformError};

mod options;
mod rtc;
mod stats;
mod stream;
mod web;

pub use options::Options;
pub use stats::Stats;
pub use stream::StreamError;
pub use webgear_media::{Frame, FrameSource, PixelFormat, SourceError, SourceSpec};

use rtc::{RtcServer, RtcSettings};
use stats::Metrics;
use stream::VideoStream;

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
}

enum SourceChoice {
    Spec(SourceSpec),
    Custom(Box<dyn FrameSource>),
}

/// Configures and builds a [`WebGearRtc`]. Created by [`WebGearRtc::builder`].
pub struct Builder {
    source: Option<SourceChoice>,
    options: Options,
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
    /// `custom_stream`).
    pub fn custom_stream(mut self, stream: impl FrameSource + 'static) -> Self {
        self.source = Some(SourceChoice::Custom(Box::new(stream)));
        self
    }

    /// Replaces all options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Shrinks frames by `percent` (0..=90, default 20) before encoding.
    pub fn frame_size_reduction(mut self, percent: u8) -> Self {
        self.options.frame_size_reduction = percent;
        self
    }

    /// The address whose interfaces carry media. The default, `0.0.0.0`, offers every
    /// IPv4 interface address to viewers; a specific address offers only itself.
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

    /// Opens the source, starts its encoder and binds the media port.
    pub async fn build(self) -> Result<WebGearRtc, Error> {
        let reducer = FrameSizeReducer::new(self.options.frame_size_reduction)?;
        let source = match self.source.ok_or(Error::NoSource)? {
            SourceChoice::Spec(spec) => {
                info!(source = %spec, "opening source");
                spec.open()?
            }
            SourceChoice::Custom(stream) => stream,
        };
        let metrics = Arc::new(Metrics::default());
        let stream = VideoStream::start(source, reducer, metrics.clone())?;
        let settings = RtcSettings {
            listen_ip: self.listen_ip,
            udp_port: self.udp_port,
        };
        let rtc = RtcServer::start(settings, &stream, metrics.clone())
            .await
            .map_err(Error::Media)?;
        info!(addrs = ?rtc.media_addrs(), "WebRTC media listening (UDP)");
        Ok(WebGearRtc {
            inner: Arc::new(Inner {
                rtc: Arc::new(rtc),
                stream: Mutex::new(Some(stream)),
                metrics,
            }),
        })
    }
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
}

impl fmt::Debug for WebGearRtc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebGearRtc")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WebGearRtc {
    /// Starts configuring a server.
    pub fn builder() -> Builder {
        Builder {
            source: None,
            options: Options::default(),
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            udp_port: 0,
        }
    }

    /// The web app: `GET /` (the player page) and `POST /offer`. Add routes and layers to
    /// it like any `axum::Router`.
    pub fn router(&self) -> axum::Router {
        web::router(web::AppState {
            rtc: self.inner.rtc.clone(),
        })
    }

    /// What the server is doing right now.
    pub fn stats(&self) -> Stats {
        self.inner.metrics.snapshot()
    }

    /// The UDP addresses viewers reach the media at.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.inner.rtc.media_addrs().to_vec()
    }

    /// Closes every peer, stops the capture thread and waits for both.
    pub async fn shutdown(&self) {
        self.inner.rtc.shutdown().await;
        let stream = self
            .inner
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(mut stream) = stream {
            // Joining the capture thread blocks for at most one frame.
            let _ = tokio::task::spawn_blocking(move || stream.stop()).await;
        }
    }
}
