//! The embedded-engine store: fjall, an LSM tree with a write-ahead
//! journal. One partition per kind of record; every `apply` is one atomic
//! batch synced to disk (`SyncData`, fdatasync) before it returns. Compaction is
//! fjall's own, in the background; deleted records are dropped by it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use crate::{client_key, client_prefix, split_client_key, Loaded, Op, Store, StoreError};

const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
const MEMTABLE_BYTES: u32 = 16 * 1024 * 1024;

pub struct FjallStore {
    path: PathBuf,
    keyspace: Keyspace,
    sessions: PartitionHandle,
    queued: PartitionHandle,
    inbound: PartitionHandle,
    retained: PartitionHandle,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("path", &self.path)
            .finish()
    }
}

impl FjallStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path) -> Result<FjallStore, StoreError> {
        let err = |source| StoreError::Engine {
            path: path.display().to_string(),
            source,
        };
        // Small journals and memtables: queued messages live briefly, and a
        // flushed memtable is what lets compaction drop a message together
        // with its deletion. With fjall's defaults (512 MiB of journal) a
        // steady stream would keep every delivered message on disk that long.
        let keyspace = Config::new(path)
            .max_journaling_size(JOURNAL_BYTES)
            .open()
            .map_err(err)?;
        let open = |name: &str| {
            keyspace
                .open_partition(
                    name,
                    PartitionCreateOptions::default().max_memtable_size(MEMTABLE_BYTES),
                )
                .map_err(err)
        };
        Ok(FjallStore {
            path: path.to_path_buf(),
            sessions: open("sessions")?,
            queued: open("queued")?,
            inbound: open("inbound")?,
            retained: open("retained")?,
            keyspace,
        })
    }

    fn err(&self, source: fjall::Error) -> StoreError {
        StoreError::Engine {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn corrupt(&self, partition: &'static str, key: &[u8]) -> StoreError {
        StoreError::CorruptKey {
            path: self.path.display().to_string(),
            partition,
            key: key.to_vec(),
        }
    }
}

impl Store for FjallStore {
    fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        // fdatasync: the journal's data and size, which is all recovery
        // reads; no need to also sync its timestamps.
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(PersistMode::SyncData));
        for op in ops {
            match op {
                Op::PutSession { client_id, record } => {
                    batch.insert(&self.sessions, client_id.as_bytes(), &record[..]);
                }
                Op::DeleteSession { client_id } => {
                    batch.remove(&self.sessions, client_id.as_bytes());
                    let prefix = client_prefix(client_id);
                    for partition in [&self.queued, &self.inbound] {
                        for item in partition.prefix(&prefix) {
                            let (key, _) = item.map_err(|e| self.err(e))?;
                            batch.remove(partition, key);
                        }
                    }
                }
                Op::PutQueued {
                    client_id,
                    seq,
                    record,
                } => {
                    batch.insert(
                        &self.queued,
                        client_key(client_id, &seq.to_be_bytes()),
                        &record[..],
                    );
                }
                Op::DeleteQueued { client_id, seq } => {
                    batch.remove(&self.queued, client_key(client_id, &seq.to_be_bytes()));
                }
                Op::PutInbound {
                    client_id,
                    packet_id,
                } => {
                    batch.insert(
                        &self.inbound,
                        client_key(client_id, &packet_id.to_be_bytes()),
                        [],
                    );
                }
                Op::DeleteInbound {
                    client_id,
                    packet_id,
                } => {
                    batch.remove(
                        &self.inbound,
                        client_key(client_id, &packet_id.to_be_bytes()),
                    );
                }
                Op::PutRetained { topic, record } => {
                    batch.insert(&self.retained, &topic[..], &record[..]);
                }
                Op::DeleteRetained { topic } => {
                    batch.remove(&self.retained, &topic[..]);
                }
            }
        }
        // The batch's durability setting syncs the journal before commit
        // returns.
        batch.commit().map_err(|e| self.err(e))
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        for item in self.sessions.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = String::from_utf8(k.to_vec()).map_err(|_| self.corrupt("sessions", &k))?;
            loaded.sessions.push((id, Bytes::copy_from_slice(&v)));
        }
        for item in self.queued.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (id, seq) = split_client_key(&k)
                .and_then(|(id, n)| Some((id, u64::from_be_bytes(n.try_into().ok()?))))
                .ok_or_else(|| self.corrupt("queued", &k))?;
            loaded.queued.push((id, seq, Bytes::copy_from_slice(&v)));
        }
        for item in self.inbound.iter() {
            let (k, _) = item.map_err(|e| self.err(e))?;
            let (id, pid) = split_client_key(&k)
                .and_then(|(id, n)| Some((id, u16::from_be_bytes(n.try_into().ok()?))))
                .ok_or_else(|| self.corrupt("inbound", &k))?;
            loaded.inbound.push((id, pid));
        }
        for item in self.retained.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            loaded
                .retained
                .push((Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)));
        }
        Ok(loaded)
    }

    fn disk_space(&self) -> u64 {
        self.keyspace.disk_space()
    }
}
