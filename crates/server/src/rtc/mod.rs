//! WebRTC for the server: peers (one str0m session per viewer), the sans-IO fan-out that
//! sends them the stream, the driver tasks that run it on one UDP port (one driver per
//! core, with a dispatcher between the sockets and the drivers), and the host addresses
//! they are reached at.
//!
//! [`RtcServer`] is the web layer's handle: it turns an SDP offer into an answer and hands
//! the new peer to the driver.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

mod datagram;
mod dispatch;
mod driver;
mod fanout;
mod net;
mod peer;
mod recent;
mod rtp_frame;
mod rung;
mod socket;
mod tcp;

use dispatch::Dispatcher;
use driver::{DATAGRAM_QUEUE, Driver, Request};
use fanout::Command;
pub(crate) use net::host_ips;
pub(crate) use peer::OfferError;
use peer::{Peer, PeerConfig};
use socket::MediaSocket;

use crate::stats::Metrics;
use crate::stream::VideoStream;

/// Where the media listens.
#[derive(Debug, Clone)]
pub(crate) struct RtcSettings {
    /// The address the server listens on; a wildcard offers every interface's address.
    pub(crate) listen_ip: IpAddr,
    /// The UDP port for all media (0: any free port).
    pub(crate) udp_port: u16,
    /// Viewers held at most; offers beyond are refused.
    pub(crate) max_viewers: usize,
    /// IPs or interfaces to offer media on (empty: decided by `listen_ip`).
    pub(crate) host_addresses: Vec<String>,
    /// Addresses of a 1:1 NAT in front of the host addresses.
    pub(crate) public_addresses: Vec<String>,
    /// The ICE-TCP port, if media is offered over TCP too (0: any free port).
    pub(crate) ice_tcp_port: Option<u16>,
}

/// Why offers cannot be answered right now.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the server is at its limit of {0} viewers; try again later")]
    Full(usize),
    #[error(
        "the server is at capacity: sending video to the {0} viewers it has keeps it busy all \
         the time, and another would slow them all down; try again later"
    )]
    Saturated(usize),
    #[error("could not make a session id: {0}")]
    Randomness(#[source] getrandom::Error),
}

/// A viewer's session as signalling names it (WHEP's session URL ends with it). Unguessable:
/// whoever knows it can end the session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionId(String);

impl SessionId {
    /// 128 random bits, in hex.
    fn random() -> Result<SessionId, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(SessionId(bytes.iter().map(|byte| format!("{byte:02x}")).collect()))
    }

    /// The id as the client got it.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for SessionId {
    fn from(id: String) -> Self {
        SessionId(id)
    }
}

/// An answered offer: the answer to send back and the new session's id.
#[derive(Debug)]
pub(crate) struct Answered {
    pub(crate) answer: SdpAnswer,
    pub(crate) session: SessionId,
}

/// The web layer's handle on the WebRTC side.
pub(crate) struct RtcServer {
    /// Each driver's request queue, in the dispatcher's order.
    drivers: Vec<mpsc::Sender<Request>>,
    dispatcher: Arc<Dispatcher>,
    peer_config: PeerConfig,
    next_peer_id: AtomicU64,
    max_viewers: usize,
    metrics: Arc<Metrics>,
    tasks: Mutex<Option<Tasks>>,
}

/// What runs until shutdown: the drivers, and the tasks reading the network.
struct Tasks {
    drivers: Vec<JoinHandle<()>>,
    network: JoinSet<()>,
}

impl std::fmt::Debug for RtcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcServer")
            .field("drivers", &self.drivers.len())
            .field("peer_config", &self.peer_config)
            .finish_non_exhaustive()
    }
}

impl RtcServer {
    /// Binds the media sockets and starts the driver for `stream`.
    pub(crate) async fn start(settings: RtcSettings, stream: &VideoStream, metrics: Arc<Metrics>) -> io::Result<Self> {
        let ips = net::host_ips(settings.listen_ip, &settings.host_addresses)?;
        let sockets = net::bind_all(&ips, settings.udp_port).await?;
        let host_addrs: Vec<SocketAddr> = sockets.iter().map(|(addr, _)| *addr).collect();
        let port = host_addrs.first().map_or(settings.udp_port, SocketAddr::port);
        let public_addrs = net::public_addrs(&settings.public_addresses, port).await?;
        let tcp_listeners = match settings.ice_tcp_port {
            Some(tcp_port) => net::bind_tcp_all(&ips, tcp_port).await?,
            None => Vec::new(),
        };
        let tcp_addrs: Vec<SocketAddr> = tcp_listeners.iter().map(|(addr, _)| *addr).collect();
        debug!(?host_addrs, ?public_addrs, ?tcp_addrs, "media sockets bound");
        let dtls_cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| io::Error::other("could not generate the DTLS certificate"))?;
        let sockets = sockets
            .into_iter()
            .map(|(addr, socket)| MediaSocket::new(addr, socket).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;

        let adaptive = stream.encoder_requests().ladder().rungs().len() > 1;
        let driver_count = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let (event_queues, mut event_receivers): (Vec<_>, Vec<_>) =
            (0..driver_count).map(|_| mpsc::channel(DATAGRAM_QUEUE)).unzip();
        let dispatcher = Arc::new(Dispatcher::new(event_queues));
        let mut drivers = Vec::with_capacity(driver_count);
        let mut driver_tasks = Vec::with_capacity(driver_count);
        for (index, events) in event_receivers.drain(..).enumerate() {
            let (commands, command_rx) = mpsc::channel(256);
            let driver = Driver::new(
                index,
                dispatcher.clone(),
                sockets.clone(),
                stream.subscribe(),
                stream.encoder_requests(),
                metrics.clone(),
            );
            drivers.push(commands);
            driver_tasks.push(tokio::spawn(driver.run(command_rx, events)));
        }

        let mut network = JoinSet::new();
        for socket in &sockets {
            network.spawn(socket::read_datagrams(socket.clone(), dispatcher.clone()));
        }
        // Every viewer may hold a connection, and as many more may be connecting.
        let tcp_limit = Arc::new(Semaphore::new(settings.max_viewers.saturating_mul(2)));
        for (addr, listener) in tcp_listeners {
            network.spawn(tcp::accept(listener, addr, dispatcher.clone(), tcp_limit.clone()));
        }
        debug!(drivers = driver_count, "peer drivers started");
        Ok(RtcServer {
            drivers,
            dispatcher,
            peer_config: PeerConfig { host_addrs, public_addrs, tcp_addrs, dtls_cert, adaptive },
            next_peer_id: AtomicU64::new(1),
            max_viewers: settings.max_viewers,
            metrics,
            tasks: Mutex::new(Some(Tasks { drivers: driver_tasks, network })),
        })
    }

    /// The UDP addresses the media listens on.
    pub(crate) fn media_addrs(&self) -> &[SocketAddr] {
        &self.peer_config.host_addrs
    }

    /// The ICE-TCP addresses, when media is offered over TCP too.
    pub(crate) fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.peer_config.tcp_addrs
    }

    /// The public (1:1 NAT) addresses offered besides them.
    pub(crate) fn public_addrs(&self) -> &[SocketAddr] {
        &self.peer_config.public_addrs
    }

    /// Fails when the server holds its maximum of viewers or its peer drivers are all busy
    /// all the time: checked before an offer is parsed, so a full server spends nothing on
    /// it. [`RtcServer::answer`] checks again.
    pub(crate) fn has_room(&self) -> Result<(), AnswerError> {
        if self.metrics.viewers_held() >= self.max_viewers {
            self.metrics.offers_refused.inc();
            return Err(AnswerError::Full(self.max_viewers));
        }
        self.refuse_if_saturated()
    }

    /// Fails when every peer driver works nearly all of its time: the viewers already
    /// watching keep their frame rate rather than all slowing down for one more.
    fn refuse_if_saturated(&self) -> Result<(), AnswerError> {
        if self.dispatcher.saturated() {
            self.metrics.offers_refused.inc();
            return Err(AnswerError::Saturated(self.metrics.viewers_held()));
        }
        Ok(())
    }

    /// Answers an offer and starts serving the new viewer, unless the server already holds
    /// its maximum of viewers or has no room for another.
    pub(crate) async fn answer(&self, offer: SdpOffer) -> Result<Answered, AnswerError> {
        self.refuse_if_saturated()?;
        if !self.metrics.admit_viewer(self.max_viewers) {
            return Err(AnswerError::Full(self.max_viewers));
        }
        let added = self.add_peer(offer).await;
        if added.is_err() {
            // Admitted, but never reached the driver, which counts a viewer out on removal.
            self.metrics.viewers.dec();
        }
        added
    }

    async fn add_peer(&self, offer: SdpOffer) -> Result<Answered, AnswerError> {
        let id = self.next_peer_id.fetch_add(1, Ordering::Relaxed);
        let session = SessionId::random().map_err(AnswerError::Randomness)?;
        let (peer, answer) = Peer::from_offer(id, session.clone(), offer, &self.peer_config, Instant::now())?;
        let driver = &self.drivers[self.dispatcher.with_fewest_peers()];
        let request = Request::Command(Command::Add(Box::new(peer)), None);
        driver.send(request).await.map_err(|_| AnswerError::ShuttingDown)?;
        Ok(Answered { answer, session })
    }

    /// Asks every driver the same question (made by `command`), and answers whether any
    /// said yes: a session lives in one driver, and finding it is rare enough not to
    /// need an index.
    async fn ask_every_driver(&self, mut command: impl FnMut() -> Command) -> Result<bool, AnswerError> {
        let mut found = false;
        for driver in &self.drivers {
            let (done, answer) = oneshot::channel();
            let request = Request::Command(command(), Some(done));
            driver.send(request).await.map_err(|_| AnswerError::ShuttingDown)?;
            found |= answer.await.map_err(|_| AnswerError::ShuttingDown)?;
        }
        Ok(found)
    }

    /// Ends one session, telling its viewer. False if there is no such session (it never
    /// existed, or has ended).
    pub(crate) async fn close_session(&self, session: SessionId) -> Result<bool, AnswerError> {
        self.ask_every_driver(|| Command::Close(session.clone())).await
    }

    /// Gives a session the viewer's trickled ICE candidates. False if there is no such
    /// session.
    pub(crate) async fn add_candidates(
        &self,
        session: SessionId,
        candidates: Vec<Candidate>,
    ) -> Result<bool, AnswerError> {
        self.ask_every_driver(|| Command::AddCandidates(session.clone(), candidates.clone())).await
    }

    /// Every metric in the Prometheus text format.
    pub(crate) fn prometheus_text(&self) -> String {
        self.metrics.prometheus_text()
    }

    /// Closes every peer; new offers are still answered.
    pub(crate) async fn close_all(&self) {
        for driver in &self.drivers {
            let (done, closed) = oneshot::channel();
            if driver.send(Request::Command(Command::CloseAll, Some(done))).await.is_ok() {
                // An error means the driver stopped, and with it its peers.
                let _ = closed.await;
            }
        }
    }

    /// Closes every peer and waits for the drivers to stop. Later offers are refused.
    pub(crate) async fn shutdown(&self) {
        for driver in &self.drivers {
            // A closed channel means the driver is already gone, which is what we want.
            let _ = driver.send(Request::Shutdown).await;
        }
        if let Some(mut tasks) = self.tasks.lock().await.take() {
            for driver in tasks.drivers {
                let _ = driver.await;
            }
            tasks.network.shutdown().await;
        }
    }
}
