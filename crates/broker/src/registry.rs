//! Client identifier → session. Touched on connect, disconnect and by the
//! expiry sweep, never on the publish path, so one mutex is enough.
//!
//! A slot is either held by a connection or parked. Session takeover
//! ([MQTT-3.1.4-3]): the new connection cancels the old one's `kick` token,
//! waits for its `done` token (the old task parks or removes the session
//! first), then claims the slot. Parked sessions with a finite expiry are
//! also kept in deadline order, so the sweep looks only at those due.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::session::SessionState;

#[derive(Debug)]
pub enum Slot {
    Connected {
        connection: u64,
        kick: CancellationToken,
        done: CancellationToken,
    },
    Parked {
        state: Box<SessionState>,
        /// Key in the deadline index, if the session expires.
        deadline: Option<(Instant, u64)>,
    },
}

/// What a connection found when it claimed a client identifier.
#[derive(Debug)]
pub enum Claim {
    /// A parked session to resume (or discard, with Clean Start).
    Resumed(Box<SessionState>),
    /// No session existed.
    Fresh,
    /// Another connection holds it: cancel `kick`, wait for `done`, retry.
    Busy {
        kick: CancellationToken,
        done: CancellationToken,
    },
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
    pub fn claim(
        &self,
        client_id: &Arc<str>,
        connection: u64,
        kick: &CancellationToken,
        done: &CancellationToken,
    ) -> Claim {
        let mut inner = self.inner.lock();
        if let Some(Slot::Connected { kick, done, .. }) = inner.slots.get(client_id) {
            return Claim::Busy {
                kick: kick.clone(),
                done: done.clone(),
            };
        }
        let previous = inner.slots.insert(
            client_id.clone(),
            Slot::Connected {
                connection,
                kick: kick.clone(),
                done: done.clone(),
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

    /// Removes and returns the parked sessions whose expiry is due.
    pub fn expire(&self, now: Instant) -> Vec<SessionState> {
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
                        expired.push(*state);
                    }
                }
            }
        }
        expired
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
