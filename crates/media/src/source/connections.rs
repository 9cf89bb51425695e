//! The live connections a source makes (a relay's ffmpeg, an RTSP session), gathered so
//! that whoever stops using the source can close them from another thread.

use std::sync::{Arc, Mutex, Weak};

/// A connection to a live stream that can be closed from any thread: its reader then
/// sees the stream end.
pub(super) trait LiveConnection: Send + Sync {
    fn close(&self);
}

/// The live streams connected to for one source (see [`SourceSettings`]), which whoever
/// stops using the source can close from another thread, openings still in progress
/// included: a sender not there yet would otherwise keep the receiving ffmpeg waiting
/// after the stream stopped (holding its port), and a reader blocked on a stalled stream
/// (a relay's, an RTSP camera's) would keep its thread waiting for the stall to be
/// noticed. Clones share one set.
///
/// [`SourceSettings`]: super::SourceSettings
#[derive(Clone, Default)]
pub struct LiveConnections(Arc<Mutex<Connections>>);

#[derive(Default)]
struct Connections {
    closed: bool,
    open: Vec<Weak<dyn LiveConnection>>,
}

impl std::fmt::Debug for LiveConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let connections = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = connections.open.iter().filter(|connection| connection.strong_count() > 0).count();
        f.debug_struct("LiveConnections").field("closed", &connections.closed).field("open", &open).finish()
    }
}

impl LiveConnections {
    /// Closes every live stream connected to, and any connected to from now on: their
    /// readers see their input end.
    pub fn close_all(&self) {
        let open = {
            let mut connections = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            connections.closed = true;
            std::mem::take(&mut connections.open)
        };
        for connection in open.iter().filter_map(Weak::upgrade) {
            connection.close();
        }
    }

    /// Adds `connection`, held for as long as its owner keeps it; closed at once if the
    /// set is closed already.
    pub(super) fn add(&self, connection: Arc<dyn LiveConnection>) {
        let mut connections = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if connections.closed {
            drop(connections);
            connection.close();
            return;
        }
        connections.open.retain(|kept| kept.strong_count() > 0);
        connections.open.push(Arc::downgrade(&connection));
    }
}
