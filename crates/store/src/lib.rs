//! ferrymq-store: the broker's durable state behind one small trait.
//!
//! The store knows bytes, not MQTT: the broker encodes its records (see
//! `ferrymq_broker::persist`) and hands the store batches of [`Op`]s. Each
//! batch is applied atomically and is durable (fsync) when `apply` returns.
//! [`Writer`] puts one thread in front of a store and group-commits: every
//! batch submitted while the previous fsync ran shares the next one.
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
    PutQueued {
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
    /// Applies `ops` atomically; they are durable when this returns `Ok`.
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError>;
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

    #[test]
    fn memory_store_keeps_the_contract() {
        contract(&MemoryStore::default());
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
