//! The HTTP listener's connection slots: how many connections are open,
//! from which peer, and which one gives way to a newcomer.
//!
//! A connection is *busy* while hyper runs a request it has read whole;
//! otherwise it is idle: waiting for a request's headers, or kept alive
//! between requests. A client that opens connections and sends nothing
//! (or half a request line) holds only idle ones, so a newcomer always
//! finds room: past the per-peer limit the peer's own oldest idle
//! connection is closed, past the global limit the oldest idle one of
//! anyone's. Only when every connection is busy does a newcomer wait, for
//! a bounded time. A scrape of `/metrics` gets through a slowloris flood.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Slot {
    id: u64,
    peer: IpAddr,
    busy: Arc<AtomicBool>,
    close: CancellationToken,
}

impl Slot {
    /// Idle, and not already asked to close.
    fn evictable(&self) -> bool {
        !self.busy.load(Ordering::Relaxed) && !self.close.is_cancelled()
    }
}

#[derive(Debug)]
pub(crate) struct Slots {
    /// In the order they were opened: the first evictable is the oldest.
    open: Mutex<(u64, Vec<Slot>)>,
    freed: Notify,
    max: usize,
    per_peer: usize,
}

/// One open connection's slot; given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    slots: Arc<Slots>,
    id: u64,
    /// Set while a request runs: the connection is not to be evicted.
    pub busy: Arc<AtomicBool>,
    /// Cancelled when the connection must give way.
    pub close: CancellationToken,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.slots.open.lock().1.retain(|s| s.id != self.id);
        self.slots.freed.notify_waiters();
    }
}

impl Slots {
    pub(crate) fn new(max: usize, per_peer: usize) -> Arc<Slots> {
        Arc::new(Slots {
            open: Mutex::new((0, Vec::new())),
            freed: Notify::new(),
            max: max.max(1),
            per_peer: per_peer.max(1),
        })
    }

    /// Makes room for a connection from `peer`, closing an idle one if it
    /// must; `None` if every connection stays busy for `patience`.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        peer: IpAddr,
        patience: Duration,
    ) -> Option<Ticket> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut open = self.open.lock();
                let (next, slots) = &mut *open;
                let mine = slots.iter().filter(|s| s.peer == peer).count();
                let victim = if mine >= self.per_peer {
                    slots.iter().find(|s| s.peer == peer && s.evictable())
                } else if slots.len() >= self.max {
                    slots.iter().find(|s| s.evictable())
                } else {
                    *next += 1;
                    let (busy, close) =
                        (Arc::new(AtomicBool::new(false)), CancellationToken::new());
                    slots.push(Slot {
                        id: *next,
                        peer,
                        busy: busy.clone(),
                        close: close.clone(),
                    });
                    return Some(Ticket {
                        slots: self.clone(),
                        id: *next,
                        busy,
                        close,
                    });
                };
                if let Some(victim) = victim {
                    tracing::debug!(peer = %victim.peer, "idle HTTP connection closed to make room");
                    victim.close.cancel();
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test]
    async fn a_newcomer_closes_the_oldest_idle_connection() {
        let slots = Slots::new(2, 2);
        let patience = Duration::from_secs(5);
        let a = slots.admit(ip(1), patience).await.unwrap();
        let b = slots.admit(ip(2), patience).await.unwrap();
        b.busy.store(true, Ordering::Relaxed);
        let admitting = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit(ip(3), patience).await })
        };
        // `a` is idle and oldest: asked to close; once it has, room.
        a.close.cancelled().await;
        assert!(
            !b.close.is_cancelled(),
            "a busy connection is never evicted"
        );
        drop(a);
        assert!(admitting.await.unwrap().is_some());
    }

    #[tokio::test]
    async fn past_the_peer_limit_the_peers_own_idle_connection_gives_way() {
        let slots = Slots::new(10, 1);
        let patience = Duration::from_secs(5);
        let other = slots.admit(ip(9), patience).await.unwrap();
        let first = slots.admit(ip(1), patience).await.unwrap();
        let second = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.admit(ip(1), patience).await })
        };
        first.close.cancelled().await;
        assert!(!other.close.is_cancelled());
        drop(first);
        assert!(second.await.unwrap().is_some());
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_a_newcomer_waits_then_gives_up() {
        let slots = Slots::new(1, 1);
        let busy = slots.admit(ip(1), Duration::from_secs(1)).await.unwrap();
        busy.busy.store(true, Ordering::Relaxed);
        assert!(slots
            .admit(ip(2), Duration::from_millis(50))
            .await
            .is_none());
        assert!(!busy.close.is_cancelled());
    }
}
