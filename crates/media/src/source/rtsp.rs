//! RTSP cameras and servers read natively (with `retina`), delivering their H.264 as it
//! arrives: a stream that needs no transform sends it to viewers without decoding or
//! encoding anything; one that does decodes it first ([`crate::decode::DecodingSource`]).
//!
//! retina is asynchronous. So that the capture thread stays blocking and this crate stays
//! free of any runtime the server owns, each source runs a private single-threaded tokio
//! runtime on a thread of its own, which hands access units to `read` over a channel.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use percent_encoding::percent_decode_str;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoFrame};
use tokio::sync::oneshot;
use tracing::{debug, warn};
use url::Url;

use super::connections::{LiveConnection, LiveConnections};
use super::{EncodedSource, LIVE_STALL_TIMEOUT, SourceError};
use crate::encode::EncodedFrame;

/// How long connecting, describing, setting up and starting to play may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Access units `read` may fall behind by. Beyond it, frames are dropped up to the next
/// keyframe: a live source is better late-free than complete.
const BACKLOG: usize = 30;

/// The RTCP packet type a sender ends its stream with (RFC 3550, 6.6).
const RTCP_BYE: u8 = 203;

/// Source timestamps that drift this far from the local clock are anchored afresh.
const MAX_TIMESTAMP_DRIFT: Duration = Duration::from_secs(1);

/// An RTSP stream's H.264 video, as Annex B access units with SPS/PPS before each keyframe.
#[derive(Debug)]
pub struct RtspSource {
    spec: String,
    frames: Receiver<Result<EncodedFrame, SourceError>>,
    frame_rate: Option<f64>,
    cancel: Arc<Cancel>,
    thread: Option<JoinHandle<()>>,
}

/// Tells the reader thread to end the session, from `stop` or from the source's
/// [`LiveConnections`] (the stream stopping while the camera stalls, or while it is still
/// being opened).
#[derive(Debug)]
struct Cancel(Mutex<Option<oneshot::Sender<()>>>);

impl LiveConnection for Cancel {
    fn close(&self) {
        let sender = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(sender) = sender {
            // The reader may have ended already; then there is nobody to tell.
            let _ = sender.send(());
        }
    }
}

/// What the stream announced when it started playing.
struct Playing {
    frame_rate: Option<f64>,
}

impl RtspSource {
    /// Connects to `url` (`rtsp://[user:password@]host[:port]/path`) and starts playing
    /// its first H.264 video stream over RTSP-interleaved TCP. Fails with
    /// [`SourceError::Unsupported`] when the stream has no H.264 video (another reader may
    /// handle it) and with [`SourceError::Open`] when the server cannot be reached or
    /// refuses. The session joins `connections`: closing them ends it, also while it is
    /// still opening.
    pub fn open(url: &str, connections: &LiveConnections) -> Result<Self, SourceError> {
        let spec = url.to_owned();
        let open_error = |reason: String| SourceError::Open { spec: spec.clone(), reason };
        let mut parsed = Url::parse(url).map_err(|e| open_error(format!("not a valid URL: {e}")))?;
        if parsed.scheme() != "rtsp" {
            return Err(SourceError::Unsupported { spec, reason: "only rtsp:// URLs are read natively".into() });
        }
        let credentials = take_credentials(&mut parsed);
        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        let (frames_tx, frames) = mpsc::sync_channel(BACKLOG);
        let (cancel, cancelled) = oneshot::channel();
        let cancel = Arc::new(Cancel(Mutex::new(Some(cancel))));
        connections.add(cancel.clone());
        let reader = Reader { spec: spec.clone(), frames: frames_tx, anchor: None, skipping: false };
        let thread = thread::Builder::new()
            .name("webgear-rtsp".into())
            .spawn(move || reader.run(parsed, credentials, opened_tx, cancelled))
            .map_err(|e| open_error(format!("could not start its reader thread: {e}")))?;
        let mut source = RtspSource { spec: spec.clone(), frames, frame_rate: None, cancel, thread: Some(thread) };
        match opened_rx.recv() {
            Ok(Ok(playing)) => {
                source.frame_rate = playing.frame_rate;
                Ok(source)
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(open_error("its reader thread ended unexpectedly".into())),
        }
    }
}

impl EncodedSource for RtspSource {
    fn read(&mut self) -> Result<Option<EncodedFrame>, SourceError> {
        match self.frames.recv() {
            Ok(Ok(frame)) => Ok(Some(frame)),
            Ok(Err(error)) => Err(error),
            Err(_) => Ok(None),
        }
    }

    fn stop(&mut self) {
        self.cancel.close();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!(source = %self.spec, "the RTSP reader thread panicked");
        }
    }

    fn frame_rate(&self) -> Option<f64> {
        self.frame_rate
    }

    fn is_live(&self) -> bool {
        true
    }
}

impl Drop for RtspSource {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Moves `user:password@` out of the URL (retina takes credentials separately).
fn take_credentials(url: &mut Url) -> Option<Credentials> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let credentials =
        Credentials { username: decode(url.username()), password: decode(url.password().unwrap_or_default()) };
    // Both only fail for URLs that cannot have credentials, which this one had.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Some(credentials)
}

/// The reader thread: runs the RTSP session and hands frames to `read`.
struct Reader {
    spec: String,
    frames: SyncSender<Result<EncodedFrame, SourceError>>,
    /// A local instant and the source timestamp (seconds) it corresponds to.
    anchor: Option<(Instant, f64)>,
    /// Dropping access units until the next keyframe, after `read` fell behind.
    skipping: bool,
}

impl Reader {
    fn run(
        mut self,
        url: Url,
        credentials: Option<Credentials>,
        opened: SyncSender<Result<Playing, SourceError>>,
        mut cancelled: oneshot::Receiver<()>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = opened.send(Err(self.open_error(format!("could not start its runtime: {error}"))));
                return;
            }
        };
        runtime.block_on(async move {
            let started = tokio::select! {
                _ = &mut cancelled => {
                    let _ = opened.send(Err(self.open_error("closed while it was opening".into())));
                    return;
                }
                started = tokio::time::timeout(OPEN_TIMEOUT, self.start(url, credentials)) => started,
            };
            let (mut demuxed, stream_index, playing) = match started {
                Ok(Ok(started)) => started,
                Ok(Err(error)) => {
                    let _ = opened.send(Err(error));
                    return;
                }
                Err(_) => {
                    let _ = opened.send(Err(self.open_error(format!("no answer within {OPEN_TIMEOUT:?}"))));
                    return;
                }
            };
            if opened.send(Ok(playing)).is_err() {
                return;
            }
            loop {
                let item = tokio::select! {
                    _ = &mut cancelled => return,
                    item = tokio::time::timeout(LIVE_STALL_TIMEOUT, demuxed.next()) => item,
                };
                let video = match item {
                    Ok(Some(Ok(CodecItem::VideoFrame(video)))) if video.stream_id() == stream_index => video,
                    Ok(Some(Ok(CodecItem::Rtcp(rtcp))))
                        if rtcp.stream_id() == stream_index && rtcp.pkts().any(|p| p.payload_type() == RTCP_BYE) =>
                    {
                        debug!(source = %self.spec, "the RTSP server ended the stream (RTCP BYE)");
                        return;
                    }
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(error))) => return self.fail(error.to_string()),
                    Ok(None) => {
                        debug!(source = %self.spec, "the RTSP stream ended");
                        return;
                    }
                    Err(_) => return self.fail(format!("no frame for {LIVE_STALL_TIMEOUT:?}")),
                };
                let size = match demuxed.streams()[stream_index].parameters() {
                    Some(ParametersRef::Video(parameters)) => parameters.pixel_dimensions(),
                    _ => (0, 0),
                };
                if !self.hand_over(video, size) {
                    return;
                }
            }
        });
    }

    /// DESCRIBE, SETUP of the first H.264 video stream, PLAY.
    async fn start(
        &self,
        url: Url,
        credentials: Option<Credentials>,
    ) -> Result<(retina::client::Demuxed, usize, Playing), SourceError> {
        let options = SessionOptions::default().creds(credentials).user_agent("webgear-rtc".into());
        let mut session =
            Session::describe(url, options).await.map_err(|e| self.open_error(format!("DESCRIBE failed: {e}")))?;
        let video = |encoding: &str| {
            session.streams().iter().position(|s| s.media() == "video" && s.encoding_name() == encoding)
        };
        let Some(index) = video("h264") else {
            let offered: Vec<String> =
                session.streams().iter().map(|s| format!("{} {}", s.media(), s.encoding_name())).collect();
            return Err(SourceError::Unsupported {
                spec: self.spec.clone(),
                reason: format!("the stream has no H.264 video (it offers: {})", offered.join(", ")),
            });
        };
        let frame_rate = session.streams()[index].framerate().map(f64::from);
        session
            .setup(index, SetupOptions::default().frame_format(FrameFormat::SIMPLE))
            .await
            .map_err(|e| self.open_error(format!("SETUP failed: {e}")))?;
        let playing =
            session.play(PlayOptions::default()).await.map_err(|e| self.open_error(format!("PLAY failed: {e}")))?;
        let demuxed = playing.demuxed().map_err(|e| self.open_error(e.to_string()))?;
        Ok((demuxed, index, Playing { frame_rate }))
    }

    /// Sends one access unit to `read`. `false` once nobody reads any more.
    fn hand_over(&mut self, video: VideoFrame, (width, height): (u32, u32)) -> bool {
        let keyframe = video.is_random_access_point();
        if self.skipping && !keyframe {
            return true;
        }
        let captured_at = self.capture_time(video.timestamp().elapsed_secs());
        let frame = EncodedFrame { data: video.into_data().into(), keyframe, width, height, captured_at };
        match self.frames.try_send(Ok(frame)) {
            Ok(()) => {
                self.skipping = false;
                true
            }
            Err(TrySendError::Full(_)) => {
                if !self.skipping {
                    debug!(source = %self.spec, "the stream fell behind; dropping frames up to the next keyframe");
                }
                self.skipping = true;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The local time a frame was captured, from its source timestamp: the camera's own
    /// spacing is kept, so network jitter does not reach the viewers' clocks.
    fn capture_time(&mut self, timestamp: f64) -> Instant {
        let now = Instant::now();
        if let Some((at, anchor)) = self.anchor
            && let Ok(offset) = Duration::try_from_secs_f64(timestamp - anchor)
        {
            let captured_at = at + offset;
            let drift = captured_at.max(now) - captured_at.min(now);
            if drift <= MAX_TIMESTAMP_DRIFT {
                return captured_at;
            }
        }
        self.anchor = Some((now, timestamp));
        now
    }

    fn fail(&self, reason: String) {
        // Nobody reading means the source was stopped; the failure is moot.
        let _ = self.frames.send(Err(SourceError::Read { spec: self.spec.clone(), reason }));
    }

    fn open_error(&self, reason: String) -> SourceError {
        SourceError::Open { spec: self.spec.clone(), reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_move_out_of_the_url_decoded() {
        let mut url = Url::parse("rtsp://admin:p%40ss%3Aword@cam.local:554/stream1").unwrap();
        let credentials = take_credentials(&mut url).unwrap();
        assert_eq!(credentials.username, "admin");
        assert_eq!(credentials.password, "p@ss:word");
        assert_eq!(url.as_str(), "rtsp://cam.local:554/stream1");
        assert!(take_credentials(&mut Url::parse("rtsp://cam.local/stream1").unwrap()).is_none());
    }

    #[test]
    fn an_unreachable_server_fails_at_open_naming_it() {
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("rtsp://127.0.0.1:{port}/stream");
        let error = RtspSource::open(&url, &LiveConnections::default()).err().unwrap().to_string();
        assert!(error.starts_with(&format!("cannot open source \"{url}\": DESCRIBE failed")), "{error}");
    }

    #[test]
    fn other_schemes_are_left_to_other_readers() {
        let error = RtspSource::open("rtsps://cam.local/stream", &LiveConnections::default()).err().unwrap();
        assert!(matches!(error, SourceError::Unsupported { .. }), "{error}");
    }
}
