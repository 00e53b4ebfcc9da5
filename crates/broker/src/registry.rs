//! Client identifier → session. Touched on connect and disconnect only,
//! never on the publish path, so one mutex is enough.
//!
//! A slot is either held by a connection or parked. Session takeover
//! ([MQTT-3.1.4-3]): the new connection cancels the old one's `kick` token,
//! waits for its `done` token (the old task parks or removes the session
//! first), then claims the slot.

use std::collections::HashMap;
use std::sync::Arc;

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
    Parked(Box<SessionState>),
}

/// What a connection found when it claimed a client identifier.
#[derive(Debug)]
pub enum Claim {
    /// A parked session to resume.
    Resumed(Box<SessionState>),
    /// No session existed (or it was discarded).
    Fresh,
    /// Another connection holds it: cancel `kick`, wait for `done`, retry.
    Busy {
        kick: CancellationToken,
        done: CancellationToken,
    },
}

#[derive(Debug, Default)]
pub struct Registry {
    slots: Mutex<HashMap<Arc<str>, Slot>>,
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
        let mut slots = self.slots.lock();
        if let Some(Slot::Connected { kick, done, .. }) = slots.get(client_id) {
            return Claim::Busy {
                kick: kick.clone(),
                done: done.clone(),
            };
        }
        let previous = slots.insert(
            client_id.clone(),
            Slot::Connected {
                connection,
                kick: kick.clone(),
                done: done.clone(),
            },
        );
        match previous {
            Some(Slot::Parked(state)) => Claim::Resumed(state),
            _ => Claim::Fresh,
        }
    }

    /// Gives the slot back when `connection` ends: parks `state` if given,
    /// else removes the entry. Does nothing if the slot is no longer ours.
    pub fn release(&self, client_id: &Arc<str>, connection: u64, state: Option<SessionState>) {
        let mut slots = self.slots.lock();
        match slots.get(client_id) {
            Some(Slot::Connected { connection: c, .. }) if *c == connection => {}
            _ => return,
        }
        match state {
            Some(state) => {
                slots.insert(client_id.clone(), Slot::Parked(Box::new(state)));
            }
            None => {
                slots.remove(client_id);
            }
        }
    }

    /// Number of sessions, connected and parked.
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn parked(&self) -> usize {
        self.slots
            .lock()
            .values()
            .filter(|s| matches!(s, Slot::Parked(_)))
            .count()
    }
}
