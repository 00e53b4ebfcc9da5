//! Client identifier → session. Touched on connect, disconnect and by the
//! expiry sweep, never on the publish path, so one mutex is enough.
//!
//! A slot is either held by a connection or parked. Session takeover
//! ([MQTT-3.1.4-3]): the new connection kicks the old one through its
//! [`Presence`], waits until that presence is done (the old connection
//! parks or removes the session first), then claims the slot. Parked sessions with a finite expiry are
//! also kept in deadline order, so the sweep looks only at those due.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferrymq_codec::Protocol;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::session::{SessionShared, SessionState};

#[derive(Debug)]
pub enum Slot {
    Connected {
        connection: u64,
        /// Also what the admin API shows of it, once its CONNECT is
        /// accepted.
        presence: Arc<Presence>,
    },
    Parked {
        state: Box<SessionState>,
        /// Key in the deadline index, if the session expires.
        deadline: Option<(Instant, u64)>,
    },
}

/// A connection's standing in its slot, shared with whoever takes the
/// session over: whether it was kicked (by a takeover or the admin API),
/// and whether it is done (its session parked or removed). One small
/// allocation per connection; a connection learns of a kick when its
/// mailbox wakes it, so no connection waits on a second thing.
#[derive(Debug, Default)]
pub struct Presence {
    state: AtomicU8,
    done: Notify,
    /// What the admin API shows; set once CONNECT is accepted (in the
    /// presence, so a connection costs one allocation for both).
    info: OnceLock<ConnectionInfo>,
}

const KICKED: u8 = 1;
const BY_ADMIN: u8 = 2;
const DONE: u8 = 4;

/// Why a connection was kicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    TakenOver,
    Administrative,
}

impl Presence {
    /// Asks the connection to end, and wakes it through its session's
    /// mailbox (known once its CONNECT is accepted; before that it looks
    /// at the flag before it first waits).
    pub fn kick(&self, kick: Kick) {
        let bits = match kick {
            Kick::TakenOver => KICKED,
            Kick::Administrative => KICKED | BY_ADMIN,
        };
        self.state.fetch_or(bits, Ordering::AcqRel);
        if let Some(info) = self.info.get() {
            info.session.mailbox.wake();
        }
    }

    /// What the admin API shows of the connection, once accepted.
    pub fn info(&self) -> Option<&ConnectionInfo> {
        self.info.get()
    }

    /// Whether, and why, the connection was kicked.
    pub fn kicked(&self) -> Option<Kick> {
        let state = self.state.load(Ordering::Acquire);
        if state & BY_ADMIN != 0 {
            Some(Kick::Administrative)
        } else if state & KICKED != 0 {
            Some(Kick::TakenOver)
        } else {
            None
        }
    }

    /// The session is parked or removed: a takeover may go on.
    pub fn finish(&self) {
        self.state.fetch_or(DONE, Ordering::AcqRel);
        self.done.notify_waiters();
    }

    /// Waits for [`Presence::finish`].
    pub async fn finished(&self) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.load(Ordering::Acquire) & DONE != 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connected client, as the admin API shows it. Written once at CONNECT;
/// what changes (queue depth, subscriptions) is read from the session's
/// shared parts and the topic index, so the connection task never updates
/// anything here.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub session: Arc<SessionShared>,
    pub peer: Option<SocketAddr>,
    pub protocol: Protocol,
    pub keep_alive: u16,
    pub username: Option<Arc<str>>,
    /// Unix seconds.
    pub connected_at: u64,
}

/// One session, as [`Registry::snapshot`] saw it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub client_id: Arc<str>,
    /// `None` while parked (or in the instant between CONNECT's claim and
    /// its acceptance).
    pub connection: Option<ConnectionInfo>,
    /// The session's shared parts; `None` only in that same instant.
    pub session: Option<Arc<SessionShared>>,
    /// Seconds the session outlives its connection (parked sessions only:
    /// the connection task owns the number while connected).
    pub expiry_interval: Option<u32>,
    /// Messages sent and not yet acknowledged (parked sessions only: the
    /// connection task owns the window while connected).
    pub inflight: Option<usize>,
}

/// What a connection found when it claimed a client identifier.
#[derive(Debug)]
pub enum Claim {
    /// A parked session to resume (or discard, with Clean Start).
    Resumed(Box<SessionState>),
    /// No session existed.
    Fresh,
    /// Another connection holds it: kick it (see [`Presence::kick`]),
    /// wait until it is finished, retry.
    Busy { presence: Arc<Presence> },
}

fn view(client_id: &Arc<str>, slot: &Slot) -> SessionView {
    match slot {
        Slot::Connected { presence, .. } => SessionView {
            client_id: client_id.clone(),
            session: presence.info().map(|i| i.session.clone()),
            connection: presence.info().cloned(),
            expiry_interval: None,
            inflight: None,
        },
        Slot::Parked { state, .. } => SessionView {
            client_id: client_id.clone(),
            session: Some(state.shared.clone()),
            connection: None,
            expiry_interval: Some(state.expiry_interval),
            inflight: Some(state.inflight_len()),
        },
    }
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<Arc<str>, Slot>,
    deadlines: BTreeMap<(Instant, u64), Arc<str>>,
}

#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

impl Registry {
    /// Claims `client_id` for `connection`, unless another connection holds it.
    pub fn claim(&self, client_id: &Arc<str>, connection: u64, presence: &Arc<Presence>) -> Claim {
        let mut inner = self.inner.lock();
        if let Some(Slot::Connected { presence, .. }) = inner.slots.get(client_id) {
            return Claim::Busy {
                presence: presence.clone(),
            };
        }
        let previous = inner.slots.insert(
            client_id.clone(),
            Slot::Connected {
                connection,
                presence: presence.clone(),
            },
        );
        match previous {
            Some(Slot::Parked { state, deadline }) => {
                if let Some(key) = deadline {
                    inner.deadlines.remove(&key);
                }
                Claim::Resumed(state)
            }
            _ => Claim::Fresh,
        }
    }

    /// Gives the slot back when `connection` ends: parks `state` if given
    /// (expiring `state.expiry_interval` seconds after `now`), else removes
    /// the entry. Does nothing if the slot is no longer ours.
    pub fn release(
        &self,
        client_id: &Arc<str>,
        connection: u64,
        state: Option<SessionState>,
        now: Instant,
    ) {
        let mut inner = self.inner.lock();
        match inner.slots.get(client_id) {
            Some(Slot::Connected { connection: c, .. }) if *c == connection => {}
            _ => return,
        }
        match state {
            Some(state) => {
                let deadline = (state.expiry_interval != u32::MAX).then(|| {
                    let at = now + Duration::from_secs(u64::from(state.expiry_interval));
                    (at, connection)
                });
                if let Some(key) = deadline {
                    inner.deadlines.insert(key, client_id.clone());
                }
                inner.slots.insert(
                    client_id.clone(),
                    Slot::Parked {
                        state: Box::new(state),
                        deadline,
                    },
                );
            }
            None => {
                inner.slots.remove(client_id);
            }
        }
    }

    /// Parks a session read back from the store.
    pub fn restore(&self, client_id: Arc<str>, state: SessionState, deadline: Option<Instant>) {
        let mut inner = self.inner.lock();
        let key = deadline.map(|at| (at, state.shared.id));
        if let Some(key) = key {
            inner.deadlines.insert(key, client_id.clone());
        }
        inner.slots.insert(
            client_id,
            Slot::Parked {
                state: Box::new(state),
                deadline: key,
            },
        );
    }

    /// Runs `f` on `client_id`'s session if it is parked, with the
    /// instant it expires (`None`: never), under the registry's lock.
    pub fn with_parked(&self, client_id: &str, f: impl FnOnce(&mut SessionState, Option<Instant>)) {
        let mut inner = self.inner.lock();
        if let Some(Slot::Parked { state, deadline }) = inner.slots.get_mut(client_id) {
            f(state, deadline.map(|(at, _)| at));
        }
    }

    /// Removes and returns the parked sessions whose expiry is due,
    /// running `ending` on each under the registry's lock: a client that
    /// reconnects a moment later gets a fresh session, whose store record
    /// must come after the old one's deletion.
    pub fn expire(&self, now: Instant, mut ending: impl FnMut(&SessionState)) -> Vec<SessionState> {
        let mut inner = self.inner.lock();
        let mut expired = Vec::new();
        while let Some(entry) = inner.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (key, client_id) = entry.remove_entry();
            if let Some(Slot::Parked { deadline, .. }) = inner.slots.get(&client_id) {
                if *deadline == Some(key) {
                    if let Some(Slot::Parked { state, .. }) = inner.slots.remove(&client_id) {
                        ending(&state);
                        expired.push(*state);
                    }
                }
            }
        }
        expired
    }

    /// Records what the admin API shows of `connection`, once its CONNECT
    /// is accepted. Does nothing if the slot is no longer its own.
    pub fn describe(&self, client_id: &str, connection: u64, described: ConnectionInfo) {
        let inner = self.inner.lock();
        if let Some(Slot::Connected {
            connection: c,
            presence,
        }) = inner.slots.get(client_id)
        {
            if *c == connection {
                let _ = presence.info.set(described);
            }
        }
    }

    /// Asks the connection holding `client_id` to close with "administrative
    /// action". False if the client is not connected.
    pub fn kick_admin(&self, client_id: &str) -> bool {
        let inner = self.inner.lock();
        match inner.slots.get(client_id) {
            Some(Slot::Connected { presence, .. }) => {
                presence.kick(Kick::Administrative);
                true
            }
            _ => false,
        }
    }

    /// Every session, for the admin API. Copies under the lock what only
    /// the registry knows and leaves the rest (queue depths) to the caller,
    /// so connects wait on it as little as possible.
    pub fn snapshot(&self) -> Vec<SessionView> {
        let inner = self.inner.lock();
        inner
            .slots
            .iter()
            .map(|(client_id, slot)| view(client_id, slot))
            .collect()
    }

    /// One session, for the admin API.
    pub fn view(&self, client_id: &str) -> Option<SessionView> {
        let inner = self.inner.lock();
        inner
            .slots
            .get_key_value(client_id)
            .map(|(client_id, slot)| view(client_id, slot))
    }

    /// The shared parts of every session (for queue totals).
    pub fn sessions(&self) -> Vec<Arc<SessionShared>> {
        let inner = self.inner.lock();
        inner
            .slots
            .values()
            .filter_map(|slot| match slot {
                Slot::Connected { presence, .. } => presence.info().map(|i| i.session.clone()),
                Slot::Parked { state, .. } => Some(state.shared.clone()),
            })
            .collect()
    }

    /// Number of sessions, connected and parked.
    pub fn len(&self) -> usize {
        self.inner.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn parked(&self) -> usize {
        self.inner
            .lock()
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Parked { .. }))
            .count()
    }

    /// Whether a session exists for `client_id`.
    pub fn contains(&self, client_id: &str) -> bool {
        self.inner.lock().slots.contains_key(client_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;
    use crate::session::SessionShared;

    /// Issue 20, item 13: what `expire` runs on an expired session (its
    /// store record's deletion) runs under the registry's lock, before a
    /// client reconnecting with that id can claim it and write a fresh
    /// record that the late deletion would remove.
    #[test]
    fn expiry_runs_its_deletion_before_the_id_can_be_claimed() {
        let registry = Registry::default();
        let shared = Arc::new(SessionShared {
            id: 1,
            client_id: "c".into(),
            mailbox: Mailbox::new(10),
            durable: Default::default(),
        });
        let now = Instant::now();
        registry.restore("c".into(), SessionState::new(shared, 1), Some(now));
        let mut ran = 0;
        let expired = registry.expire(now, |state| {
            assert_eq!(&*state.shared.client_id, "c");
            assert!(registry.inner.is_locked(), "runs under the registry's lock");
            ran += 1;
        });
        assert_eq!((expired.len(), ran), (1, 1));
        assert!(!registry.contains("c"));
    }
}
