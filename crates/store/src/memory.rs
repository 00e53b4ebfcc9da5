//! The in-memory store: for tests and `persistence false`.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::{client_key, client_prefix, Loaded, Op, Store, StoreError};

#[derive(Debug, Default)]
struct Tables {
    sessions: BTreeMap<String, Bytes>,
    queued: BTreeMap<Vec<u8>, (String, u64, Bytes)>,
    inbound: BTreeMap<Vec<u8>, (String, u16)>,
    retained: BTreeMap<Bytes, Bytes>,
    /// Queued messages updated or deleted before their `PutQueued`.
    updated: HashSet<u64>,
    early: HashSet<u64>,
    max_seq: u64,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl Store for MemoryStore {
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut t = self.tables.lock();
        for op in ops {
            match op {
                Op::PutSession { client_id, record } => {
                    t.sessions.insert(client_id.to_string(), record.clone());
                }
                Op::DeleteSession { client_id } => {
                    t.sessions.remove(&**client_id);
                    let prefix = client_prefix(client_id);
                    t.queued.retain(|k, _| !k.starts_with(&prefix));
                    t.inbound.retain(|k, _| !k.starts_with(&prefix));
                }
                Op::PutQueued {
                    client_id,
                    seq,
                    record,
                } => {
                    t.max_seq = t.max_seq.max(*seq);
                    if !t.early.remove(seq) && !t.updated.remove(seq) {
                        t.queued.insert(
                            client_key(client_id, &seq.to_be_bytes()),
                            (client_id.to_string(), *seq, record.clone()),
                        );
                    }
                }
                Op::UpdateQueued {
                    client_id,
                    seq,
                    record,
                } => {
                    t.max_seq = t.max_seq.max(*seq);
                    let old = t.queued.insert(
                        client_key(client_id, &seq.to_be_bytes()),
                        (client_id.to_string(), *seq, record.clone()),
                    );
                    if old.is_none() {
                        t.updated.insert(*seq);
                    }
                }
                Op::DeleteQueued { client_id, seq } => {
                    t.max_seq = t.max_seq.max(*seq);
                    let gone = t.queued.remove(&client_key(client_id, &seq.to_be_bytes()));
                    if gone.is_none() || t.updated.remove(seq) {
                        t.early.insert(*seq);
                    }
                }
                Op::PutInbound {
                    client_id,
                    packet_id,
                } => {
                    t.inbound.insert(
                        client_key(client_id, &packet_id.to_be_bytes()),
                        (client_id.to_string(), *packet_id),
                    );
                }
                Op::DeleteInbound {
                    client_id,
                    packet_id,
                } => {
                    t.inbound
                        .remove(&client_key(client_id, &packet_id.to_be_bytes()));
                }
                Op::PutRetained { topic, record } => {
                    t.retained.insert(topic.clone(), record.clone());
                }
                Op::DeleteRetained { topic } => {
                    t.retained.remove(topic);
                }
            }
        }
        Ok(())
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let t = self.tables.lock();
        Ok(Loaded {
            sessions: t
                .sessions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            queued: t.queued.values().cloned().collect(),
            inbound: t.inbound.values().cloned().collect(),
            retained: t
                .retained
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_seq: t.max_seq,
        })
    }

    fn disk_space(&self) -> u64 {
        0
    }
}
