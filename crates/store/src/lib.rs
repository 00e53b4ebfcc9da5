//! ferrymq-store: the broker's durable state behind one small trait.
//!
//! The store knows bytes, not MQTT: the broker encodes its records (see
//! `ferrymq_broker::persist`) and hands the store batches of [`Op`]s. Each
//! batch is applied atomically, and durable (fsync) after the next `sync`.
//! [`Writer`] puts two threads in front of a store and group-commits: every
//! batch submitted while the previous fsync ran shares the next one, and
//! is written while that fsync runs.
//!
//! Layout:
//! - [`Store`], [`Op`], [`Loaded`]: the contract.
//! - [`FjallStore`]: the embedded LSM engine (fjall), the default.
//! - [`MemoryStore`]: for tests and `persistence false`.
//! - [`Writer`]: the group-commit thread.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod fjall_store;
mod memory;
mod writer;

use std::sync::Arc;

use bytes::Bytes;

pub use fjall_store::FjallStore;
pub use memory::MemoryStore;
pub use writer::{Stats, Writer, WriterHandle, COMMIT_BUCKETS_MICROS};

/// One change to durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    PutSession {
        client_id: Arc<str>,
        record: Bytes,
    },
    /// Removes the session with everything queued for it and its inbound
    /// QoS 2 packet ids.
    DeleteSession {
        client_id: Arc<str>,
    },
    /// A message enters a session's queue: the first write of `seq`. If
    /// `seq` was already updated or deleted by an earlier batch (the
    /// subscriber's connection can get to a delivery before the
    /// publisher's batch is submitted), this write is stale and ignored.
    PutQueued {
        client_id: Arc<str>,
        seq: u64,
        record: Bytes,
    },
    /// A queued message's new record (its delivery moved on a stage).
    UpdateQueued {
        client_id: Arc<str>,
        seq: u64,
        record: Bytes,
    },
    DeleteQueued {
        client_id: Arc<str>,
        seq: u64,
    },
    PutInbound {
        client_id: Arc<str>,
        packet_id: u16,
    },
    DeleteInbound {
        client_id: Arc<str>,
        packet_id: u16,
    },
    PutRetained {
        topic: Bytes,
        record: Bytes,
    },
    DeleteRetained {
        topic: Bytes,
    },
}

/// Everything read back at start-up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub sessions: Vec<(String, Bytes)>,
    /// (client id, seq, record), in seq order per client.
    pub queued: Vec<(String, u64, Bytes)>,
    pub inbound: Vec<(String, u16)>,
    pub retained: Vec<(Bytes, Bytes)>,
    /// The highest sequence number of a queued message the store holds
    /// anything under, delivered or not: numbers handed out after a
    /// restart start above it, so that no leftover of a delivered message
    /// is taken for a new one's.
    pub max_seq: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store at {path}: {source}")]
    Engine {
        path: String,
        #[source]
        source: fjall::Error,
    },
    #[error("store at {path}: corrupt key in {partition}: {key:02x?}")]
    CorruptKey {
        path: String,
        partition: &'static str,
        key: Vec<u8>,
    },
    #[error("store at {path}: {message}")]
    Io { path: String, message: String },
}

/// Durable broker state.
pub trait Store: Send + Sync + 'static {
    /// Applies `ops` atomically; they are durable once a later [`sync`]
    /// returns `Ok` (a process crash does not lose them, a power cut may).
    ///
    /// [`sync`]: Store::sync
    fn write(&self, ops: &[Op]) -> Result<(), StoreError>;
    /// Makes every write that returned before it durable (fsync).
    fn sync(&self) -> Result<(), StoreError>;
    /// Applies `ops` atomically; they are durable when this returns `Ok`.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.write(ops)?;
        self.sync()
    }
    /// Reads everything back.
    fn load(&self) -> Result<Loaded, StoreError>;
    /// Bytes on disk (0 for memory).
    fn disk_space(&self) -> u64;
}

/// Key of a queued message or inbound id: the client id, a 0 byte (client
/// ids are MQTT strings, which cannot contain U+0000), then the big-endian
/// number, so one client's entries are contiguous and in order.
pub(crate) fn client_key(client_id: &str, n: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(client_id.len() + 1 + n.len());
    key.extend_from_slice(client_id.as_bytes());
    key.push(0);
    key.extend_from_slice(n);
    key
}

/// The prefix of every key of one client.
pub(crate) fn client_prefix(client_id: &str) -> Vec<u8> {
    client_key(client_id, &[])
}

/// Splits a key made by [`client_key`].
pub(crate) fn split_client_key(key: &[u8]) -> Option<(String, &[u8])> {
    let zero = key.iter().position(|&b| b == 0)?;
    let (id, rest) = key.split_at(zero);
    Some((String::from_utf8(id.to_vec()).ok()?, rest.get(1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract every implementation keeps.
    pub(crate) fn contract(store: &dyn Store) {
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        store
            .apply(&[
                Op::PutSession {
                    client_id: a.clone(),
                    record: Bytes::from_static(b"sa"),
                },
                Op::PutSession {
                    client_id: b.clone(),
                    record: Bytes::from_static(b"sb"),
                },
                Op::PutQueued {
                    client_id: a.clone(),
                    seq: 2,
                    record: Bytes::from_static(b"a2"),
                },
                Op::PutQueued {
                    client_id: a.clone(),
                    seq: 1,
                    record: Bytes::from_static(b"a1"),
                },
                Op::PutQueued {
                    client_id: b.clone(),
                    seq: 3,
                    record: Bytes::from_static(b"b3"),
                },
                Op::PutInbound {
                    client_id: a.clone(),
                    packet_id: 7,
                },
                Op::PutInbound {
                    client_id: b.clone(),
                    packet_id: 9,
                },
                Op::PutRetained {
                    topic: Bytes::from_static(b"t"),
                    record: Bytes::from_static(b"r"),
                },
            ])
            .unwrap();
        store
            .apply(&[
                Op::DeleteQueued {
                    client_id: a.clone(),
                    seq: 2,
                },
                Op::DeleteSession {
                    client_id: b.clone(),
                },
                Op::PutSession {
                    client_id: a.clone(),
                    record: Bytes::from_static(b"sa2"),
                },
            ])
            .unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(
            loaded.sessions,
            vec![("a".to_string(), Bytes::from_static(b"sa2"))]
        );
        assert_eq!(
            loaded.queued,
            vec![("a".to_string(), 1, Bytes::from_static(b"a1"))]
        );
        assert_eq!(loaded.inbound, vec![("a".to_string(), 7)]);
        assert_eq!(
            loaded.retained,
            vec![(Bytes::from_static(b"t"), Bytes::from_static(b"r"))]
        );
        store
            .apply(&[
                Op::DeleteInbound {
                    client_id: a.clone(),
                    packet_id: 7,
                },
                Op::DeleteRetained {
                    topic: Bytes::from_static(b"t"),
                },
            ])
            .unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.inbound.is_empty() && loaded.retained.is_empty());
    }

    fn put(client: &str, seq: u64, record: &'static [u8]) -> Op {
        Op::PutQueued {
            client_id: client.into(),
            seq,
            record: Bytes::from_static(record),
        }
    }

    fn update(client: &str, seq: u64, record: &'static [u8]) -> Op {
        Op::UpdateQueued {
            client_id: client.into(),
            seq,
            record: Bytes::from_static(record),
        }
    }

    fn delete(client: &str, seq: u64) -> Op {
        Op::DeleteQueued {
            client_id: client.into(),
            seq,
        }
    }

    fn queued(store: &dyn Store) -> Vec<(String, u64, Bytes)> {
        store.load().unwrap().queued
    }

    /// A subscriber's connection can update or delete a delivery before
    /// the publisher's batch with its first write reaches the store: that
    /// write is then stale and must not bring the message back.
    pub(crate) fn late_puts_are_stale(store: &dyn Store) {
        store.apply(&[update("a", 1, b"sent")]).unwrap();
        store.apply(&[delete("a", 2)]).unwrap();
        store
            .apply(&[update("a", 3, b"sent"), delete("a", 3)])
            .unwrap();
        store
            .apply(&[
                put("a", 1, b"queued"),
                put("a", 2, b"queued"),
                put("a", 3, b"queued"),
                put("a", 4, b"queued"),
            ])
            .unwrap();
        let got = queued(store);
        assert_eq!(
            got,
            vec![
                ("a".to_string(), 1, Bytes::from_static(b"sent")),
                ("a".to_string(), 4, Bytes::from_static(b"queued")),
            ]
        );
        store.apply(&[delete("a", 1), delete("a", 4)]).unwrap();
        assert!(queued(store).is_empty());
        // An update whose session ends before the queueing write arrives.
        store.apply(&[update("b", 5, b"sent")]).unwrap();
        store
            .apply(&[Op::DeleteSession {
                client_id: "b".into(),
            }])
            .unwrap();
        store.apply(&[put("b", 5, b"queued")]).unwrap();
        assert!(queued(store).is_empty());
    }

    /// One client's id, the same `Arc`, many times in one write, between
    /// updates and deletions of its messages and other clients' messages:
    /// what a connection's batch looks like when a stream fans into one
    /// session (the fjall store takes a short cut for it). Returns what
    /// the store should hold afterwards.
    pub(crate) fn one_client_many_times_in_a_write(store: &dyn Store) -> Vec<(String, u64, Bytes)> {
        let [a, b, c, d]: [Arc<str>; 4] = ["a".into(), "b".into(), "c".into(), "d".into()];
        let put = |client: &Arc<str>, seq, record: &'static [u8]| Op::PutQueued {
            client_id: client.clone(),
            seq,
            record: Bytes::from_static(record),
        };
        let update = |client: &Arc<str>, seq, record: &'static [u8]| Op::UpdateQueued {
            client_id: client.clone(),
            seq,
            record: Bytes::from_static(record),
        };
        let delete = |client: &Arc<str>, seq| Op::DeleteQueued {
            client_id: client.clone(),
            seq,
        };
        store
            .apply(&[update(&a, 3, b"sent"), update(&a, 7, b"sent")])
            .unwrap();
        store
            .apply(&[
                put(&c, 20, b"q"),
                put(&c, 21, b"q"),
                put(&a, 1, b"q"),
                put(&b, 10, b"q"),
                put(&a, 3, b"q"),
                put(&a, 4, b"q"),
                put(&a, 7, b"q"),
                put(&c, 22, b"q"),
                update(&c, 20, b"sent"),
                put(&c, 23, b"q"),
                delete(&c, 21),
                put(&c, 24, b"q"),
                update(&a, 5, b"sent"),
                put(&a, 5, b"q"),
                put(&d, 30, b"q"),
                put(&d, 31, b"q"),
                delete(&d, 30),
                delete(&d, 31),
                put(&d, 32, b"q"),
                put(&d, 33, b"q"),
                Op::DeleteSession {
                    client_id: b.clone(),
                },
                put(&b, 11, b"q"),
                put(&b, 12, b"q"),
            ])
            .unwrap();
        let mut expected: Vec<(String, u64, Bytes)> = [
            ("a", 1, &b"q"[..]),
            ("a", 3, b"sent"),
            ("a", 4, b"q"),
            ("a", 5, b"sent"),
            ("a", 7, b"sent"),
            ("b", 11, b"q"),
            ("b", 12, b"q"),
            ("c", 20, b"sent"),
            ("c", 22, b"q"),
            ("c", 23, b"q"),
            ("c", 24, b"q"),
            ("d", 32, b"q"),
            ("d", 33, b"q"),
        ]
        .into_iter()
        .map(|(client, seq, record)| (client.to_string(), seq, Bytes::from_static(record)))
        .collect();
        expected.sort();
        let mut got = queued(store);
        got.sort();
        assert_eq!(got, expected);
        expected
    }

    /// New numbers after a restart must start above everything the store
    /// still holds, delivered messages' leftovers included.
    pub(crate) fn max_seq_covers_delivered_messages(store: &dyn Store) {
        store
            .apply(&[put("a", 1, b"q"), put("a", 2, b"q"), put("a", 3, b"q")])
            .unwrap();
        store.apply(&[delete("a", 3)]).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.queued.len(), 2);
        assert!(loaded.max_seq >= 3, "{}", loaded.max_seq);
    }

    /// Updates replace, deletes remove, in seq order per client, with
    /// writes of one batch and of later ones mixed.
    pub(crate) fn queues_follow_their_writes(store: &dyn Store) {
        let mut ops = Vec::new();
        for seq in 1..=20 {
            ops.push(put(if seq % 2 == 0 { "even" } else { "odd" }, seq, b"q"));
        }
        ops.push(update("odd", 5, b"sent"));
        ops.push(delete("even", 2));
        store.apply(&ops).unwrap();
        store
            .apply(&[
                delete("odd", 1),
                update("odd", 3, b"sent"),
                update("odd", 3, b"released"),
                delete("even", 20),
                put("odd", 21, b"q"),
            ])
            .unwrap();
        let got = queued(store);
        let odd: Vec<(u64, &[u8])> = got
            .iter()
            .filter(|(c, _, _)| c == "odd")
            .map(|(_, s, r)| (*s, &r[..]))
            .collect();
        assert_eq!(
            odd,
            vec![
                (3, &b"released"[..]),
                (5, b"sent"),
                (7, b"q"),
                (9, b"q"),
                (11, b"q"),
                (13, b"q"),
                (15, b"q"),
                (17, b"q"),
                (19, b"q"),
                (21, b"q"),
            ]
        );
        let even: Vec<u64> = got
            .iter()
            .filter(|(c, _, _)| c == "even")
            .map(|(_, s, _)| *s)
            .collect();
        assert_eq!(even, vec![4, 6, 8, 10, 12, 14, 16, 18]);
        // Deleting the session takes its queue; a new session of the same
        // client in the same batch starts empty and keeps what it gets.
        store
            .apply(&[
                Op::DeleteSession {
                    client_id: "odd".into(),
                },
                put("odd", 30, b"new"),
            ])
            .unwrap();
        let got = queued(store);
        assert!(got.contains(&("odd".to_string(), 30, Bytes::from_static(b"new"))));
        assert_eq!(got.iter().filter(|(c, _, _)| c == "odd").count(), 1);
        assert_eq!(got.iter().filter(|(c, _, _)| c == "even").count(), 8);
    }

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::default());
        late_puts_are_stale(&MemoryStore::default());
        one_client_many_times_in_a_write(&MemoryStore::default());
        queues_follow_their_writes(&MemoryStore::default());
        max_seq_covers_delivered_messages(&MemoryStore::default());
    }

    #[test]
    fn fjall_store_keeps_the_contract_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path()).unwrap();
            contract(&store);
            store
                .apply(&[Op::PutQueued {
                    client_id: "a".into(),
                    seq: 5,
                    record: Bytes::from_static(b"a5"),
                }])
                .unwrap();
        }
        let store = FjallStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.queued.len(), 2);
        assert_eq!(loaded.queued[1].1, 5);
    }
}
