//! Peers spread over several drivers, one per core, so sending a frame to every viewer is
//! shared between the cores instead of queueing behind one task.
//!
//! The network tasks (one per UDP socket, one per ICE-TCP connection) hand every packet
//! to the [`Dispatcher`], which knows which driver holds the peer talking from each remote
//! address. A packet from an address it does not know yet (a viewer's first connectivity
//! check) goes to every driver; the one whose peer accepts it claims the address, so its
//! later packets go straight there. A driver that no longer has a peer for an address it
//! was sent releases it again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::datagram::{Datagram, NetEvent};

/// The index of a driver among the dispatcher's.
pub(super) type DriverIndex = usize;

/// Delivers the network's packets to the drivers.
pub(super) struct Dispatcher {
    drivers: Vec<mpsc::Sender<NetEvent>>,
    /// Remote address → the driver whose peer talks from it.
    routes: RwLock<HashMap<SocketAddr, DriverIndex>>,
    /// Peers each driver holds, to give a new peer to the one with the fewest.
    peers: Vec<AtomicUsize>,
    /// The share of its time each driver spent working over its last measured window,
    /// in millionths.
    busy_ppm: Vec<AtomicU32>,
}

/// A driver working this share of its time or more has no room for another viewer:
/// every peer it holds would get its frames later.
const SATURATED_SHARE: f64 = 0.95;

/// The drivers have stopped; nothing more can be delivered.
#[derive(Debug)]
pub(super) struct Stopped;

impl Dispatcher {
    pub(super) fn new(drivers: Vec<mpsc::Sender<NetEvent>>) -> Self {
        let peers = drivers.iter().map(|_| AtomicUsize::new(0)).collect();
        let busy_ppm = drivers.iter().map(|_| AtomicU32::new(0)).collect();
        Dispatcher { drivers, routes: RwLock::new(HashMap::new()), peers, busy_ppm }
    }

    /// Hands a packet to the driver that owns its source, or to every driver if none does
    /// yet. A driver whose queue is full loses it, as a full network queue would.
    pub(super) fn deliver(&self, datagram: Datagram) -> Result<(), Stopped> {
        let owner = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&datagram.source).copied();
        match owner.and_then(|index| self.drivers.get(index)) {
            Some(driver) => offer(driver, NetEvent::Datagram(datagram)),
            None => {
                let (last, others) = self.drivers.split_last().ok_or(Stopped)?;
                for driver in others {
                    let copy = Datagram { data: datagram.data.clone(), ..datagram };
                    offer(driver, NetEvent::Datagram(copy))?;
                }
                offer(last, NetEvent::Datagram(datagram))
            }
        }
    }

    /// Tells every driver that an ICE-TCP connection opened; its packets go to `packets`.
    pub(super) async fn tcp_opened(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        packets: &mpsc::Sender<Vec<u8>>,
    ) -> Result<(), Stopped> {
        for driver in &self.drivers {
            let event = NetEvent::TcpOpened { local, remote, packets: packets.clone() };
            driver.send(event).await.map_err(|_| Stopped)?;
        }
        Ok(())
    }

    /// Tells every driver that an ICE-TCP connection closed.
    pub(super) async fn tcp_closed(&self, local: SocketAddr, remote: SocketAddr) {
        for driver in &self.drivers {
            // A stopped driver has nothing left to forget.
            let _ = driver.send(NetEvent::TcpClosed { local, remote }).await;
        }
    }

    /// Whether the drivers have stopped.
    pub(super) fn is_stopped(&self) -> bool {
        self.drivers.iter().all(mpsc::Sender::is_closed)
    }

    /// Records that `driver`'s peer talks from `source`.
    pub(super) fn claim(&self, source: SocketAddr, driver: DriverIndex) {
        self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(source, driver);
    }

    /// Forgets `source`, if `driver` owned it.
    pub(super) fn release(&self, source: SocketAddr, driver: DriverIndex) {
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        if routes.get(&source) == Some(&driver) {
            routes.remove(&source);
        }
    }

    /// The driver holding the fewest peers.
    pub(super) fn with_fewest_peers(&self) -> DriverIndex {
        (0..self.peers.len()).min_by_key(|&index| self.peers[index].load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Records the share of its time (0 to 1) a driver spent working over its last window.
    pub(super) fn report_busy(&self, driver: DriverIndex, share: f64) {
        if let Some(busy) = self.busy_ppm.get(driver) {
            busy.store((share.clamp(0.0, 1.0) * 1e6) as u32, Ordering::Relaxed);
        }
    }

    /// The share of its time (0 to 1) the least loaded driver spent working over its last
    /// window: how close the server is to refusing viewers.
    pub(super) fn least_busy_share(&self) -> f64 {
        let ppm = self.busy_ppm.iter().map(|busy| busy.load(Ordering::Relaxed)).min().unwrap_or(0);
        f64::from(ppm) / 1e6
    }

    /// Whether every driver is working nearly all of its time: another viewer would then
    /// slow down the ones already watching.
    pub(super) fn saturated(&self) -> bool {
        self.least_busy_share() >= SATURATED_SHARE
    }

    /// Counts a peer in (`+1`) or out (`-1`) of `driver`.
    pub(super) fn count_peer(&self, driver: DriverIndex, added: bool) {
        if let Some(count) = self.peers.get(driver) {
            if added {
                count.fetch_add(1, Ordering::Relaxed);
            } else {
                count.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

fn offer(driver: &mpsc::Sender<NetEvent>, event: NetEvent) -> Result<(), Stopped> {
    match driver.try_send(event) {
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Stopped),
        Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(source: &str) -> Datagram {
        let destination = "127.0.0.1:9000".parse().unwrap();
        Datagram::read_now(vec![1, 2, 3], source.parse().unwrap(), destination, false)
    }

    fn received(queue: &mut mpsc::Receiver<NetEvent>) -> Vec<SocketAddr> {
        std::iter::from_fn(|| match queue.try_recv() {
            Ok(NetEvent::Datagram(datagram)) => Some(datagram.source),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn unknown_sources_go_to_every_driver_and_claimed_ones_to_their_owner() {
        let (first_tx, mut first) = mpsc::channel(8);
        let (second_tx, mut second) = mpsc::channel(8);
        let dispatcher = Dispatcher::new(vec![first_tx, second_tx]);
        let viewer: SocketAddr = "127.0.0.1:5000".parse().unwrap();

        dispatcher.deliver(datagram("127.0.0.1:5000")).unwrap();
        assert_eq!(received(&mut first), [viewer]);
        assert_eq!(received(&mut second), [viewer]);

        dispatcher.claim(viewer, 1);
        dispatcher.deliver(datagram("127.0.0.1:5000")).unwrap();
        assert!(received(&mut first).is_empty());
        assert_eq!(received(&mut second), [viewer]);

        // Only the owner can release an address.
        dispatcher.release(viewer, 0);
        dispatcher.deliver(datagram("127.0.0.1:5000")).unwrap();
        assert!(received(&mut first).is_empty());
        dispatcher.release(viewer, 1);
        dispatcher.deliver(datagram("127.0.0.1:5000")).unwrap();
        assert_eq!(received(&mut first), [viewer]);
    }

    #[test]
    fn saturated_only_when_every_driver_works_nearly_all_the_time() {
        let (first_tx, _first) = mpsc::channel(1);
        let (second_tx, _second) = mpsc::channel(1);
        let dispatcher = Dispatcher::new(vec![first_tx, second_tx]);
        assert!(!dispatcher.saturated());
        dispatcher.report_busy(0, 1.0);
        assert!(!dispatcher.saturated(), "the second driver still has room");
        dispatcher.report_busy(1, 0.96);
        assert!(dispatcher.saturated());
        assert!((dispatcher.least_busy_share() - 0.96).abs() < 1e-6);
        dispatcher.report_busy(1, 0.90);
        assert!(!dispatcher.saturated());
    }

    #[test]
    fn new_peers_go_to_the_with_fewest_peers_driver() {
        let (first_tx, _first) = mpsc::channel(1);
        let (second_tx, _second) = mpsc::channel(1);
        let dispatcher = Dispatcher::new(vec![first_tx, second_tx]);
        dispatcher.count_peer(0, true);
        assert_eq!(dispatcher.with_fewest_peers(), 1);
        dispatcher.count_peer(1, true);
        dispatcher.count_peer(1, true);
        assert_eq!(dispatcher.with_fewest_peers(), 0);
        dispatcher.count_peer(1, false);
        dispatcher.count_peer(1, false);
        assert_eq!(dispatcher.with_fewest_peers(), 1);
    }

    #[test]
    fn delivery_fails_once_the_drivers_stop() {
        let (driver, queue) = mpsc::channel(1);
        let dispatcher = Dispatcher::new(vec![driver]);
        drop(queue);
        assert!(dispatcher.deliver(datagram("127.0.0.1:5000")).is_err());
        assert!(dispatcher.is_stopped());
    }
}
