//! A decoding WebRTC viewer: posts a recvonly offer (to WebGear_RTC's `/offer`, or to a
//! WHEP endpoint), then receives on its own thread and reports each decoded picture.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use serde::{Deserialize, Serialize};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc;
use webgear_media::source::test_pattern::FrameCode;

use crate::wire::{TcpLinks, Wire};

/// One picture the viewer decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFrame {
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// The frame number read from the picture's [`FrameCode`], if it carries one.
    pub number: Option<u16>,
    /// Whether the frame was an IDR (a keyframe).
    pub keyframe: bool,
    /// The spread (largest minus smallest) of the picture's U samples: near zero for a
    /// gray picture.
    pub chroma_range: u8,
    /// When the picture was decoded.
    pub arrived_at: Instant,
    /// The picture's RTP time at 90 kHz (extended past the 32-bit wrap as the viewer's
    /// session receives it): a player shows pictures at these times.
    pub rtp_time: u64,
    /// The picture's luma at a quarter of its width and height (each sample the mean of a
    /// 4x4 block), `width / 4` samples a row: enough to compare pictures.
    pub thumbnail: Arc<[u8]>,
}

/// The scale of [`DecodedFrame::thumbnail`].
const THUMBNAIL_SCALE: usize = 4;

impl DecodedFrame {
    /// How far the picture moved from `earlier` to this one, in thumbnail samples (four
    /// pixels), searching up to `range` samples each way: the shift that makes the
    /// thumbnails' centres most alike.
    pub fn moved_since(&self, earlier: &DecodedFrame, range: i32) -> (i32, i32) {
        let width = self.width as usize / THUMBNAIL_SCALE;
        let height = self.height as usize / THUMBNAIL_SCALE;
        let margin = range.unsigned_abs() as usize;
        let difference = |dx: i32, dy: i32| -> u64 {
            let mut total = 0u64;
            for y in margin..height.saturating_sub(margin) {
                for x in margin..width.saturating_sub(margin) {
                    let before = earlier.thumbnail
                        [(y as i64 - i64::from(dy)) as usize * width + (x as i64 - i64::from(dx)) as usize];
                    total += u64::from(before.abs_diff(self.thumbnail[y * width + x]));
                }
            }
            total
        };
        let shifts = (-range..=range).flat_map(|dy| (-range..=range).map(move |dx| (dx, dy)));
        shifts.min_by_key(|&(dx, dy)| (difference(dx, dy), dx.abs() + dy.abs())).unwrap_or((0, 0))
    }
}

/// What went wrong connecting or receiving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ViewerError {
    /// Socket trouble on the viewer's side.
    #[error("viewer I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC session failed.
    #[error("WebRTC session failed: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// The server turned the viewer away for now (`503 Service Unavailable`: at its viewer
    /// limit, or at capacity).
    #[error("the server at {url} refused the viewer: {reason}")]
    Refused {
        /// Where the offer was posted.
        url: String,
        /// The status and the server's reason.
        reason: String,
    },
    /// The offer exchange failed.
    #[error("offer exchange with {url} failed: {reason}")]
    Signalling {
        /// Where the offer was posted.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The H.264 decoder could not be created.
    #[error("H.264 decoder failed: {0}")]
    Decoder(String),
}

/// Where and how a viewer asks a server for the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// WebGear_RTC's protocol: a JSON offer posted to this URL (`…/offer`).
    Offer(String),
    /// WHEP: an `application/sdp` offer posted to this URL (`…/whep`), with a bearer token
    /// when the server asks for one.
    Whep {
        /// The WHEP endpoint.
        url: String,
        /// Sent as `Authorization: Bearer <token>`.
        token: Option<String>,
    },
}

impl Endpoint {
    /// The URL offers are posted to.
    pub fn url(&self) -> &str {
        match self {
            Endpoint::Offer(url) | Endpoint::Whep { url, .. } => url,
        }
    }

    /// The address this machine reaches the server from, which a viewer offers to receive
    /// on: loopback for a server on this machine, the address of the way out towards one
    /// elsewhere (a name is looked up, IPv4 first, as the server's default candidates are).
    ///
    /// # Errors
    /// If the URL names no host, or the host cannot be looked up or reached.
    pub fn local_ip(&self) -> Result<IpAddr, ViewerError> {
        let unusable = |reason: String| ViewerError::Signalling { url: self.url().to_owned(), reason };
        let url = url::Url::parse(self.url()).map_err(|e| unusable(e.to_string()))?;
        let host = url.host_str().ok_or_else(|| unusable("the URL names no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let server: Vec<SocketAddr> = (host.trim_matches(['[', ']']), port).to_socket_addrs()?.collect();
        let server = server
            .iter()
            .find(|addr| addr.is_ipv4())
            .or_else(|| server.first())
            .ok_or_else(|| unusable(format!("{host} has no address")))?;
        let any: IpAddr = if server.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
        // Connecting a UDP socket sends nothing; it only picks the route, and so the address.
        let socket = UdpSocket::bind((any, 0))?;
        socket.connect(server)?;
        Ok(socket.local_addr()?.ip())
    }
}

#[derive(Serialize, Deserialize)]
struct SessionDescription {
    sdp: String,
    #[serde(rename = "type")]
    kind: String,
}

/// A connected viewer. Dropping it stops the receive thread.
#[derive(Debug)]
pub struct Viewer {
    /// When the offer was posted: the start of time-to-first-frame.
    pub offered_at: Instant,
    frames: mpsc::UnboundedReceiver<DecodedFrame>,
    stop: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    keyframe_wanted: Arc<AtomicBool>,
    session: Option<WhepSession>,
    thread: Option<JoinHandle<Result<(), ViewerError>>>,
}

impl Viewer {
    /// Posts an offer to `offer_url` (e.g. `http://127.0.0.1:8000/offer`) and starts
    /// receiving on a UDP socket on the address the server is reached from
    /// ([`Endpoint::local_ip`]).
    pub async fn connect(offer_url: &str) -> Result<Viewer, ViewerError> {
        Viewer::connect_to(&Endpoint::Offer(offer_url.to_owned())).await
    }

    /// Asks `endpoint` for the stream and starts receiving on a UDP socket on the address
    /// the server is reached from ([`Endpoint::local_ip`]).
    pub async fn connect_to(endpoint: &Endpoint) -> Result<Viewer, ViewerError> {
        Viewer::connect_from(endpoint, endpoint.local_ip()?).await
    }

    /// Asks `endpoint` for the stream and starts receiving on a UDP socket bound to
    /// `local_ip` (e.g. `::1` to watch over IPv6).
    pub async fn connect_from(endpoint: &Endpoint, local_ip: IpAddr) -> Result<Viewer, ViewerError> {
        let negotiated = negotiate(endpoint, local_ip, false, Protocol::Udp).await?;
        Viewer::start(negotiated)
    }

    /// Asks `endpoint` for the stream offering only an active ICE-TCP candidate, as a
    /// viewer whose network blocks UDP: the media comes over a TCP connection to one of
    /// the server's passive TCP candidates.
    pub async fn connect_over_tcp(endpoint: &Endpoint) -> Result<Viewer, ViewerError> {
        let negotiated = negotiate(endpoint, endpoint.local_ip()?, false, Protocol::Tcp).await?;
        Viewer::start(negotiated)
    }

    /// Asks `endpoint` for the stream and receives on `socket`, a bound UDP socket made
    /// elsewhere (such as inside another network namespace, see `NatLab`).
    pub async fn connect_with_socket(endpoint: &Endpoint, socket: UdpSocket) -> Result<Viewer, ViewerError> {
        let negotiated = negotiate_on(endpoint, socket, false, Protocol::Udp).await?;
        Viewer::start(negotiated)
    }

    fn start(negotiated: Negotiated) -> Result<Viewer, ViewerError> {
        let Negotiated { rtc, mid, socket, local, offered_at, session: whep_session, protocol, .. } = negotiated;
        let wire = match protocol {
            Protocol::Tcp => Wire::Tcp(TcpLinks::default()),
            _ => Wire::Udp(socket),
        };

        let (frames_tx, frames) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let keyframe_wanted = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let decoder = Decoder::new().map_err(|e| ViewerError::Decoder(e.to_string()))?;
        let mut session = Session {
            rtc,
            mid,
            wire,
            local,
            decoder,
            frames: frames_tx,
            stop: stop.clone(),
            stalled: stalled.clone(),
            keyframe_wanted: keyframe_wanted.clone(),
            last_pli: None,
        };
        let thread = thread::Builder::new().name("viewer".into()).spawn(move || session.run())?;
        Ok(Viewer { offered_at, frames, stop, stalled, keyframe_wanted, session: whep_session, thread: Some(thread) })
    }

    /// The WHEP session's URL (from the server's `Location`), for a viewer that joined by
    /// WHEP.
    pub fn session(&self) -> Option<&WhepSession> {
        self.session.as_ref()
    }

    /// Freezes (`true`) or thaws the viewer: while frozen it neither reads its socket nor
    /// answers the server, like a client whose process stopped. Pictures received before
    /// the freeze can still be read with [`Viewer::next_frame`].
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Sends the server a picture loss indication (PLI), as a decoder that lost data does.
    pub fn request_keyframe(&self) {
        self.keyframe_wanted.store(true, Ordering::Relaxed);
    }

    /// The next decoded picture, or `None` if none arrives within `timeout` (or the session
    /// ended).
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<DecodedFrame> {
        tokio::time::timeout(timeout, self.frames.recv()).await.ok().flatten()
    }

    /// Every picture decoded during the next `duration`. Pictures decoded earlier and not
    /// yet read are not counted, so the result measures exactly this window.
    pub async fn frames_during(&mut self, duration: Duration) -> Vec<DecodedFrame> {
        while self.frames.try_recv().is_ok() {}
        let end = tokio::time::Instant::now() + duration;
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = tokio::time::timeout_at(end, self.frames.recv()).await {
            frames.push(frame);
        }
        frames
    }

    /// Stops receiving and reports how the session ended.
    pub fn close(mut self) -> Result<(), ViewerError> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<(), ViewerError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ViewerError::Decoder("the receive thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        // How the session ended matters only to callers of `close`.
        let _ = self.stop_thread();
    }
}

/// A client session whose offer the server answered; ICE and DTLS are still to come.
pub(crate) struct Negotiated {
    pub(crate) rtc: Rtc,
    /// The receive-only video transceiver.
    pub(crate) mid: Mid,
    pub(crate) socket: UdpSocket,
    pub(crate) local: SocketAddr,
    /// When the offer was posted.
    pub(crate) offered_at: Instant,
    /// When the answer came.
    pub(crate) answered_at: Instant,
    /// The WHEP session, when the viewer joined by WHEP.
    pub(crate) session: Option<WhepSession>,
    /// What the viewer's only candidate speaks: UDP (on `socket`) or active ICE-TCP.
    pub(crate) protocol: Protocol,
}

/// A WHEP session: where it lives, and what the server said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhepSession {
    /// The session's URL (the `Location` of the answer, made absolute).
    pub url: String,
    /// The `ETag` of the answer.
    pub etag: Option<String>,
    /// Every `Link` header of the answer (the ICE servers).
    pub links: Vec<String>,
    token: Option<String>,
}

impl WhepSession {
    /// Ends the session with `DELETE`, as a WHEP player leaving does; returns the status.
    pub async fn end(&self) -> Result<reqwest::StatusCode, reqwest::Error> {
        let mut request = reqwest::Client::new().delete(&self.url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        Ok(request.send().await?.status())
    }
}

/// Offers to receive H.264 video from `endpoint`, from a new UDP socket on `local_ip` (or,
/// for `Protocol::Tcp`, an active ICE-TCP candidate there), and accepts the answer. In
/// `rtp_mode` the session reports RTP packets instead of frames.
pub(crate) async fn negotiate(
    endpoint: &Endpoint,
    local_ip: IpAddr,
    rtp_mode: bool,
    protocol: Protocol,
) -> Result<Negotiated, ViewerError> {
    negotiate_on(endpoint, UdpSocket::bind((local_ip, 0))?, rtp_mode, protocol).await
}

/// Video packets a viewer holds back while it waits for lost ones to be sent again. str0m
/// asks for at least as many as the largest keyframe is split over (a 720p keyframe is 50
/// or more; its default, 30, is less); a browser holds thousands.
const REORDERING_PACKETS: usize = 1000;

/// [`negotiate`] with a UDP socket already bound (for TCP, its address names the active
/// candidate's IP).
async fn negotiate_on(
    endpoint: &Endpoint,
    socket: UdpSocket,
    rtp_mode: bool,
    protocol: Protocol,
) -> Result<Negotiated, ViewerError> {
    let signalling = |failure: PostFailure| failure.into_error(endpoint.url());
    let local_ip = socket.local_addr()?.ip();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .set_rtp_mode(rtp_mode)
        .set_reordering_size_video(REORDERING_PACKETS)
        .build(Instant::now());
    let (local, candidate) = if protocol == Protocol::Tcp {
        // Active TCP candidates name port 9: the real port is the connection's own.
        let local = SocketAddr::new(local_ip, 9);
        (local, Candidate::builder().tcp().host(local).tcptype(TcpType::Active).build())
    } else {
        let local = socket.local_addr()?;
        (local, Candidate::host(local, Protocol::Udp))
    };
    rtc.add_local_candidate(candidate.map_err(|e| signalling(e.to_string().into()))?);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().ok_or_else(|| signalling("no offer to make".into()))?;
    let offered_at = Instant::now();
    let (answer, session) = match endpoint {
        Endpoint::Offer(url) => (post_offer(url, &offer).await.map_err(signalling)?, None),
        Endpoint::Whep { url, token } => {
            let (answer, session) = post_whep_offer(url, token.as_deref(), &offer).await.map_err(signalling)?;
            (answer, Some(session))
        }
    };
    let answered_at = Instant::now();
    rtc.sdp_api().accept_answer(pending, answer)?;
    Ok(Negotiated { rtc, mid, socket, local, offered_at, answered_at, session, protocol })
}

/// Why posting an offer brought no answer.
enum PostFailure {
    /// `503 Service Unavailable`, and what the server said.
    Refused(String),
    Failed(String),
}

impl PostFailure {
    /// The failure of a request that got `status` back instead of an answer, `said` the
    /// message for it.
    fn answered(status: reqwest::StatusCode, said: String) -> PostFailure {
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            PostFailure::Refused(said)
        } else {
            PostFailure::Failed(said)
        }
    }

    fn into_error(self, url: &str) -> ViewerError {
        let url = url.to_owned();
        match self {
            PostFailure::Refused(reason) => ViewerError::Refused { url, reason },
            PostFailure::Failed(reason) => ViewerError::Signalling { url, reason },
        }
    }
}

impl From<String> for PostFailure {
    fn from(reason: String) -> Self {
        PostFailure::Failed(reason)
    }
}

impl From<&str> for PostFailure {
    fn from(reason: &str) -> Self {
        PostFailure::Failed(reason.to_owned())
    }
}

/// A failed HTTP request, with every cause: reqwest's own message ("error sending request")
/// leaves out why (a refused connection, too many open files).
fn request_failed(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}

/// WHEP: the offer as `application/sdp`; the answer comes back `201 Created` with the
/// session's `Location`.
async fn post_whep_offer(
    url: &str,
    token: Option<&str>,
    offer: &SdpOffer,
) -> Result<(SdpAnswer, WhepSession), PostFailure> {
    let mut request = reqwest::Client::new()
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/sdp")
        .body(offer.to_sdp_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(request_failed)?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.map_err(request_failed)?;
    if status != reqwest::StatusCode::CREATED {
        return Err(PostFailure::answered(status, format!("expected 201 Created, got {status}: {text}")));
    }
    let header = |name: reqwest::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let location = header(reqwest::header::LOCATION).ok_or("the answer has no Location")?;
    let session_url = url::Url::parse(url)
        .and_then(|base| base.join(&location))
        .map_err(|e| format!("bad Location {location:?}: {e}"))?;
    let links =
        headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    let session = WhepSession {
        url: session_url.to_string(),
        etag: header(reqwest::header::ETAG),
        links,
        token: token.map(str::to_owned),
    };
    let answer = SdpAnswer::from_sdp_string(&text).map_err(|e| format!("bad answer SDP: {e}"))?;
    Ok((answer, session))
}

async fn post_offer(url: &str, offer: &SdpOffer) -> Result<SdpAnswer, PostFailure> {
    let body = SessionDescription { sdp: offer.to_sdp_string(), kind: "offer".into() };
    let response = reqwest::Client::new().post(url).json(&body).send().await.map_err(request_failed)?;
    let status = response.status();
    let text = response.text().await.map_err(request_failed)?;
    if !status.is_success() {
        return Err(PostFailure::answered(status, format!("{status}: {text}")));
    }
    let answer: SessionDescription = serde_json::from_str(&text).map_err(|e| format!("bad answer JSON: {e}"))?;
    if answer.kind != "answer" {
        return Err(format!("expected type \"answer\", got {:?}", answer.kind).into());
    }
    Ok(SdpAnswer::from_sdp_string(&answer.sdp).map_err(|e| format!("bad answer SDP: {e}"))?)
}

/// The receive thread's state.
struct Session {
    rtc: Rtc,
    mid: Mid,
    wire: Wire,
    local: SocketAddr,
    decoder: Decoder,
    frames: mpsc::UnboundedSender<DecodedFrame>,
    stop: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    keyframe_wanted: Arc<AtomicBool>,
    last_pli: Option<Instant>,
}

impl Session {
    fn run(&mut self) -> Result<(), ViewerError> {
        let mut buffer = vec![0u8; 2048];
        while !self.stop.load(Ordering::Relaxed) && self.rtc.is_alive() {
            if self.stalled.load(Ordering::Relaxed) {
                // Neither read nor answer: the socket's queue overflows as it would for a
                // frozen client.
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            if self.keyframe_wanted.swap(false, Ordering::Relaxed)
                && let Some(mut writer) = self.rtc.writer(self.mid)
            {
                writer.request_keyframe(None, KeyframeRequestKind::Pli)?;
                self.last_pli = Some(Instant::now());
            }
            let deadline = match self.rtc.poll_output()? {
                Output::Timeout(deadline) => deadline,
                Output::Transmit(transmit) => {
                    // A candidate that cannot be reached fails its checks; ICE tries the others.
                    if let Err(error) = self.wire.send(&transmit.contents, transmit.destination) {
                        tracing::debug!(%error, destination = %transmit.destination, "send failed");
                    }
                    continue;
                }
                Output::Event(Event::MediaData(media)) => {
                    if !media.contiguous {
                        self.ask_for_keyframe_after_loss();
                    }
                    self.decode(&media.data, media.time.rebase(Frequency::NINETY_KHZ).numer());
                    continue;
                }
                Output::Event(_) => continue,
            };
            // Wake at least every 50 ms to notice `stop`.
            let wait = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            if wait.is_zero() {
                self.rtc.handle_input(Input::Timeout(Instant::now()))?;
                continue;
            }
            match self.wire.recv(&mut buffer, wait)? {
                Some((len, source)) => {
                    let Ok(contents) = buffer[..len].try_into() else {
                        continue;
                    };
                    let proto = self.wire.protocol();
                    let receive = Receive { proto, source, destination: self.local, contents };
                    self.rtc.handle_input(Input::Receive(Instant::now(), receive))?;
                }
                None => self.rtc.handle_input(Input::Timeout(Instant::now()))?,
            }
        }
        Ok(())
    }

    /// Like a browser's decoder after losing data: ask for a keyframe, at most twice a
    /// second.
    fn ask_for_keyframe_after_loss(&mut self) {
        if self.last_pli.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
            self.keyframe_wanted.store(true, Ordering::Relaxed);
        }
    }

    fn decode(&mut self, annex_b: &[u8], rtp_time: u64) {
        let arrived_at = Instant::now();
        match self.decoder.decode(annex_b) {
            Ok(Some(picture)) => {
                let (width, height) = picture.dimensions();
                let number = FrameCode::read(picture.y(), picture.strides().0, width, height);
                let keyframe = contains_idr(annex_b);
                let (chroma_width, chroma_height) = picture.dimensions_uv();
                let u_stride = picture.strides().1;
                let u_samples = picture.u().chunks(u_stride).take(chroma_height).flat_map(|row| &row[..chroma_width]);
                let (low, high) = u_samples.fold((u8::MAX, u8::MIN), |(low, high), &c| (low.min(c), high.max(c)));
                let chroma_range = high.saturating_sub(low);
                let thumbnail = thumbnail(picture.y(), picture.strides().0, width, height);
                let frame = DecodedFrame {
                    width: width as u32,
                    height: height as u32,
                    number,
                    keyframe,
                    chroma_range,
                    arrived_at,
                    rtp_time,
                    thumbnail,
                };
                // A closed channel means nobody is listening any more; keep the session up.
                let _ = self.frames.send(frame);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, "frame did not decode");
                self.ask_for_keyframe_after_loss();
            }
        }
    }
}

/// A quarter-size copy of a luma plane, each sample the mean of a 4x4 block.
fn thumbnail(luma: &[u8], stride: usize, width: usize, height: usize) -> Arc<[u8]> {
    let (thumb_width, thumb_height) = (width / THUMBNAIL_SCALE, height / THUMBNAIL_SCALE);
    let mut samples = Vec::with_capacity(thumb_width * thumb_height);
    for y in 0..thumb_height {
        for x in 0..thumb_width {
            let block = (0..THUMBNAIL_SCALE).flat_map(|row| {
                let start = (y * THUMBNAIL_SCALE + row) * stride + x * THUMBNAIL_SCALE;
                &luma[start..start + THUMBNAIL_SCALE]
            });
            let sum: usize = block.map(|&sample| usize::from(sample)).sum();
            samples.push((sum / (THUMBNAIL_SCALE * THUMBNAIL_SCALE)) as u8);
        }
    }
    samples.into()
}

/// Whether an Annex B access unit holds an IDR slice (NAL unit type 5).
fn contains_idr(annex_b: &[u8]) -> bool {
    annex_b.windows(4).any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

    use std::net::{IpAddr, Ipv4Addr, UdpSocket};

    use super::{Endpoint, contains_idr};

    #[test]
    fn finds_idr_slices_after_any_start_code() {
        assert!(contains_idr(&[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x65, 9]));
        assert!(!contains_idr(&[0, 0, 0, 1, 0x41, 1, 2, 3]));
    }

    #[test]
    fn a_viewer_receives_on_the_address_the_server_is_reached_from() {
        let local_ip = |url: &str| Endpoint::Offer(url.to_owned()).local_ip();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(local_ip("http://127.0.0.1:8000/offer").unwrap(), loopback);
        assert_eq!(local_ip("http://localhost:8000/offer").unwrap(), loopback);
        // A server elsewhere is reached from this machine's address on the way out (here
        // the way to a documentation address, if the machine has a way out).
        let outward = UdpSocket::bind("0.0.0.0:0").and_then(|socket| {
            socket.connect("192.0.2.1:9")?;
            socket.local_addr()
        });
        match outward {
            Ok(outward) => assert_eq!(local_ip(&format!("http://{}:8000/offer", outward.ip())).unwrap(), outward.ip()),
            Err(error) => eprintln!("not checked off loopback: no way out of this machine ({error})"),
        }
        let error = local_ip("not a url").unwrap_err().to_string();
        assert!(error.contains("not a url"), "{error}");
    }
}
