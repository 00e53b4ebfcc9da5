//! The embedded-engine store: fjall, an LSM tree with a write-ahead
//! journal. One partition for every kind of record (see [`Kind`]); every
//! `write` is one atomic batch handed to the OS, `sync` makes the journal
//! durable (fdatasync). Compaction is fjall's own, in the background;
//! deleted records are dropped by it.
//!
//! Queued messages are written in chunks. Every message one write queues
//! for one client goes into a single value of the `chunks` partition, so a
//! write costs the engine one insert per client, not one per message:
//! journaling and inserting each message into the memtable (a skiplist) on
//! its own took about 1 µs of CPU per message, more than the broker's
//! whole in-memory path for it; in chunks, about a tenth of that. (The
//! `ingest` example measures the store alone on a given disk.)
//! Afterwards:
//! - the chunk's record in `progress` holds a bitmap of its delivered
//!   messages and the latest record of each whose delivery moved on a
//!   stage (QoS 2), overriding the chunk's copy; it is rewritten once per
//!   write that changes either, and when the chunk's last message is
//!   delivered the chunk and its progress record go in one batch. A
//!   rewritten record leaves nothing behind once compacted, where a key
//!   per delivered message left a tombstone each, which fjall drops only
//!   in its last level (a steady stream grew them by 6 bytes a message);
//! - an update that arrives before the message's chunk exists (see `Op`)
//!   gets a record of its own in `queued`, as messages of the layout
//!   before chunks have.
//!
//! Where each sequence number lives is kept in memory ([`Index`]), built
//! by the first `load` (or `apply`) from what is on disk.

use ahash::{AHashMap as HashMap, AHashSet as HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use fjall::{Batch, Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode, Slice};
use parking_lot::Mutex;

use crate::{client_key, client_prefix, split_client_key, Loaded, Op, Store, StoreError};

/// fjall counts a journal at its preallocated 32 MiB at least, stalls
/// writes for 500 ms past 90% of this limit and flushes to free journals
/// past 50%: room for two sealed journals whose memtable is being flushed
/// before a write waits.
const JOURNAL_BYTES: u64 = 96 * 1024 * 1024;
const MEMTABLE_BYTES: u32 = 16 * 1024 * 1024;
/// First byte of a chunk's value.
const CHUNK_FORMAT: u8 = 1;

pub struct FjallStore {
    path: PathBuf,
    keyspace: Keyspace,
    /// The one partition everything lives in, and its kinds of record.
    state: PartitionHandle,
    sessions: Kind,
    queued: Kind,
    chunks: Kind,
    progress: Kind,
    inbound: Kind,
    retained: Kind,
    /// `None` until the store has been read once.
    index: Mutex<Option<Index>>,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("path", &self.path)
            .finish()
    }
}

/// One kind of record: a key prefix in the store's single partition.
///
/// One partition, not one per kind: fjall seals its journal whenever a
/// partition's memtable fills, and may delete a sealed journal only once
/// every partition with writes in it has flushed them. A partition of
/// rare small writes (sessions, say) never fills its memtable, so it kept
/// every sealed journal of the busy one until fjall's monitor forced it
/// out; by then the journals had reached the limit that stalls every
/// write for 500 ms. A single partition flushes as one: a sealed journal
/// goes as soon as its memtable is on disk.
#[derive(Clone)]
struct Kind {
    tree: PartitionHandle,
    prefix: u8,
}

/// A key as stored, read without its kind's prefix.
struct Key(Slice);

impl std::ops::Deref for Key {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.get(1..).unwrap_or_default()
    }
}

impl Kind {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(1 + key.len());
        full.push(self.prefix);
        full.extend_from_slice(key);
        full
    }

    fn insert(&self, batch: &mut Batch, key: impl AsRef<[u8]>, value: impl Into<fjall::UserValue>) {
        batch.insert(&self.tree, self.key(key.as_ref()), value);
    }

    fn remove(&self, batch: &mut Batch, key: impl AsRef<[u8]>) {
        batch.remove(&self.tree, self.key(key.as_ref()));
    }

    /// Records whose key (without the kind's prefix) starts with `start`.
    fn prefix(&self, start: &[u8]) -> impl Iterator<Item = fjall::Result<(Key, Slice)>> {
        self.tree
            .prefix(self.key(start))
            .map(|item| item.map(|(k, v)| (Key(k), v)))
    }

    fn iter(&self) -> impl Iterator<Item = fjall::Result<(Key, Slice)>> {
        self.prefix(&[])
    }
}

/// The partition, and the prefix of each kind; the names are also those
/// of the partitions each kind had before (see `migrate`).
const STATE: &str = "state";
const KINDS: [(&str, u8); 6] = [
    ("sessions", b's'),
    ("queued", b'q'),
    ("chunks", b'c'),
    ("progress", b'p'),
    ("inbound", b'i'),
    ("retained", b'r'),
];

/// Key of the record in `state` saying the old partitions were copied.
/// No kind's prefix is 0.
const MIGRATED: &[u8] = b"\0migrated";

/// Copies the records of a store written with a partition per kind into
/// the single one, in one batch, and marks it done. Safe to repeat until
/// the mark is written: a crash midway copies again at the next open, and
/// nothing else writes before. The old partitions stay on disk, unread:
/// fjall's flush worker panics on a partition deleted while one of its
/// flushes is in flight, and nothing tells from outside when none is.
///
/// Only up to `limit` bytes of records: one batch
/// keeps the journal rotations to one, where copying in parts rotated a
/// journal per part while the old partitions, whose recovered memtables
/// fjall may leave unflushed, held every sealed one, until fjall halted
/// all writes for good. A larger store is refused with a clear error.
fn migrate(
    keyspace: &Keyspace,
    state: &PartitionHandle,
    path: &Path,
    limit: u64,
) -> Result<(), StoreError> {
    let err = |source| StoreError::Engine {
        path: path.display().to_string(),
        source,
    };
    if state.contains_key(MIGRATED).map_err(err)? {
        return Ok(());
    }
    let mut old = Vec::new();
    for (name, prefix) in KINDS {
        if keyspace.partition_exists(name) {
            let partition = keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(err)?;
            old.push((name, prefix, partition));
        }
    }
    if old.is_empty() {
        return Ok(());
    }
    let refuse = || StoreError::Io {
        path: path.display().to_string(),
        message: format!(
            "written by an earlier ferrymq (a partition per kind of record) and \
             holding more than {} MB; this version moves such a store into its \
             layout at start-up only up to that: drain it with the earlier \
             version, or move the directory aside to start fresh",
            limit / 1_000_000
        ),
    };
    let (mut batch, mut moved, mut bytes) = (keyspace.batch(), Vec::new(), 0u64);
    for (name, prefix, partition) in &old {
        let mut records = 0u64;
        for item in partition.iter() {
            let (key, value) = item.map_err(err)?;
            bytes += (key.len() + value.len()) as u64;
            if bytes > limit {
                return Err(refuse());
            }
            let kind = Kind {
                tree: state.clone(),
                prefix: *prefix,
            };
            kind.insert(&mut batch, &*key, value);
            records += 1;
        }
        moved.push(format!("{records} {name}"));
    }
    batch.insert(state, MIGRATED, []);
    batch.commit().map_err(err)?;
    keyspace.persist(PersistMode::SyncAll).map_err(err)?;
    tracing::info!(
        "store: moved the records of the earlier layout into the {STATE} partition ({}); \
         the old partitions stay on disk, unused",
        moved.join(", ")
    );
    Ok(())
}

#[derive(Debug)]
struct Chunk {
    client: Arc<str>,
    /// Every message written in the chunk, ascending.
    seqs: Vec<u64>,
    /// Bit `i` set: `seqs[i]` is delivered (or discarded).
    gone: Vec<u64>,
    /// How many are not.
    live: usize,
    /// It has a record in `progress`.
    progress: bool,
    /// The latest record of each message of it whose delivery moved on a
    /// stage (QoS 2), kept with its progress.
    updates: Vec<(u64, Bytes)>,
}

impl Chunk {
    fn new(client: Arc<str>) -> Chunk {
        Chunk {
            client,
            seqs: Vec::new(),
            gone: Vec::new(),
            live: 0,
            progress: false,
            updates: Vec::new(),
        }
    }

    fn add(&mut self, seq: u64) {
        // Ascending but for a batch submitted late, which is rare: then the
        // gone bits above the new entry move up with their messages.
        let at = match self.seqs.last() {
            Some(&last) if last > seq => self.seqs.partition_point(|&s| s < seq),
            _ => self.seqs.len(),
        };
        self.open_gap(at);
        self.seqs.insert(at, seq);
        self.live += 1;
    }

    /// Moves gone bits `at..` up by one and clears bit `at`, a word at a
    /// time: late batches are common under many publishers (a connection
    /// routes, then submits after another did both), and a bit at a time
    /// cost more than the rest of the write.
    fn open_gap(&mut self, at: usize) {
        let (first, bit) = (at / 64, at % 64);
        let Some(words) = self.gone.get_mut(first..) else {
            return;
        };
        let mut carry = 0;
        for (n, word) in words.iter_mut().enumerate() {
            let old = *word;
            *word = if n == 0 {
                let below = (1u64 << bit) - 1;
                (old & below) | ((old & !below) << 1)
            } else {
                (old << 1) | carry
            };
            carry = old >> 63;
        }
        if carry != 0 {
            self.gone.push(1);
        }
    }

    fn is_gone(&self, i: usize) -> bool {
        self.gone
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set_gone(&mut self, i: usize, gone: bool) {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.gone.len() <= word {
            if !gone {
                return;
            }
            self.gone.resize(word + 1, 0);
        }
        if let Some(w) = self.gone.get_mut(word) {
            if gone {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    fn position(&self, seq: u64) -> Option<usize> {
        match (self.seqs.first(), self.seqs.last()) {
            (Some(&lo), Some(&hi)) if lo <= seq && seq <= hi => self.seqs.binary_search(&seq).ok(),
            _ => None,
        }
    }

    /// Marks `seqs[i]` gone; false if it already was.
    fn take(&mut self, i: usize) -> bool {
        if self.is_gone(i) {
            return false;
        }
        self.set_gone(i, true);
        self.live = self.live.saturating_sub(1);
        true
    }
}

#[derive(Debug, Default)]
struct ClientEntries {
    /// Its chunks, oldest first: messages are delivered in about the order
    /// they were queued, so a lookup mostly ends at the first one.
    chunks: std::collections::VecDeque<u64>,
    /// Messages with their own record in `queued`, and whether their
    /// `PutQueued` has been applied (false: an update came first).
    records: HashMap<u64, bool>,
}

/// Where every queued message is: per client, its chunks and records.
/// About 8 bytes per queued message (its number in its chunk's list).
#[derive(Debug)]
struct Index {
    next_chunk: u64,
    chunks: HashMap<u64, Chunk>,
    clients: HashMap<Arc<str>, ClientEntries>,
    /// Sequence numbers deleted before their `PutQueued` was applied: that
    /// write, when it comes, is stale.
    early: HashSet<u64>,
}

impl Index {
    fn new() -> Index {
        Index {
            next_chunk: 1,
            chunks: HashMap::new(),
            clients: HashMap::new(),
            early: HashSet::new(),
        }
    }

    /// The chunk of `client` holding `seq`, and where in it.
    fn find(&self, client: &str, seq: u64) -> Option<(u64, usize)> {
        let entries = self.clients.get(client)?;
        entries.chunks.iter().find_map(|&id| {
            let chunk = self.chunks.get(&id)?;
            let i = chunk.position(seq)?;
            (!chunk.is_gone(i)).then_some((id, i))
        })
    }
}

/// What one `apply` writes besides single records.
#[derive(Default)]
struct Pending<'a> {
    /// Chunks begun by this write.
    chunks: Vec<NewChunk<'a>>,
    /// Each client's chunk in `chunks`.
    of_client: HashMap<Arc<str>, usize>,
    /// The client of the op before, if it was a `PutQueued` that went into
    /// a chunk of this write and the client has no record of its own:
    /// the next `PutQueued` of the same client goes straight to the same
    /// chunk (a stream fanning into one session is one client many times
    /// over, and three hash lookups of its id per message showed).
    last: Option<(Arc<str>, usize)>,
    /// Chunks with messages delivered by this write.
    touched: Vec<u64>,
}

/// A chunk begun by one `apply`: its messages, borrowed from the ops.
struct NewChunk<'a> {
    id: u64,
    client: Arc<str>,
    entries: Vec<(u64, &'a [u8])>,
}

impl NewChunk<'_> {
    /// The chunk's value: the format byte, the client id (u16 length),
    /// then per message its number (u64), the length of its record (u32)
    /// and the record. Built in place, in the allocation fjall keeps (its
    /// memtable holds the value): a vector grown message by message and
    /// copied into fjall's cost a copy and a page fault per 4 KiB.
    fn value(&self) -> std::io::Result<fjall::UserValue> {
        let len = 3
            + self.client.len()
            + self
                .entries
                .iter()
                .map(|(_, r)| ENTRY_HEADER + r.len())
                .sum::<usize>();
        let mut fill = Some(|out: &mut [u8]| {
            let mut out = &mut out[..];
            out.put_u8(CHUNK_FORMAT);
            out.put_u16(self.client.len() as u16);
            out.put_slice(self.client.as_bytes());
            for (seq, record) in &self.entries {
                put_entry(&mut out, *seq, record);
            }
        });
        let mut reader = FillOnce(&mut fill, len);
        Ok(byteview::ByteView::from_reader(&mut reader, len)?.into())
    }
}

/// A reader that fills the buffer of a known length with one call.
struct FillOnce<'f, F: FnOnce(&mut [u8])>(&'f mut Option<F>, usize);

impl<F: FnOnce(&mut [u8])> std::io::Read for FillOnce<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.0.take() {
            Some(fill) if buf.len() == self.1 => {
                fill(buf);
                Ok(buf.len())
            }
            _ => Ok(0),
        }
    }
}

impl FjallStore {
    /// Opens (or creates) the store in directory `path`.
    pub fn open(path: &Path) -> Result<FjallStore, StoreError> {
        FjallStore::open_sized(path, JOURNAL_BYTES, MEMTABLE_BYTES)
    }

    fn open_sized(path: &Path, journal: u64, memtable: u32) -> Result<FjallStore, StoreError> {
        let err = |source| StoreError::Engine {
            path: path.display().to_string(),
            source,
        };
        // Small journals and memtables: queued messages live briefly, and a
        // flushed memtable is what lets compaction drop a message together
        // with its deletion. With fjall's defaults (512 MiB of journal) a
        // steady stream would keep every delivered message on disk that long.
        let keyspace = Config::new(path)
            .max_journaling_size(journal)
            .open()
            .map_err(err)?;
        let state = keyspace
            .open_partition(
                STATE,
                PartitionCreateOptions::default().max_memtable_size(memtable),
            )
            .map_err(err)?;
        migrate(&keyspace, &state, path, u64::from(memtable) * 4)?;
        let [sessions, queued, chunks, progress, inbound, retained] =
            KINDS.map(|(_, prefix)| Kind {
                tree: state.clone(),
                prefix,
            });
        let store = FjallStore {
            path: path.to_path_buf(),
            sessions,
            queued,
            chunks,
            progress,
            inbound,
            retained,
            state,
            keyspace,
            index: Mutex::new(None),
        };
        // The GC watermark starts at 0 on every open and moves at the 50th
        // snapshot close (see `write`): get there now.
        for _ in 0..50 {
            drop(store.state.snapshot());
        }
        Ok(store)
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

    /// Reads everything, and where each queued message lives.
    fn scan(&self) -> Result<(Loaded, Index, Vec<u64>), StoreError> {
        let mut loaded = Loaded::default();
        let mut index = Index::new();
        for item in self.sessions.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = String::from_utf8(k.to_vec()).map_err(|_| self.corrupt("sessions", &k))?;
            loaded.sessions.push((id, Bytes::copy_from_slice(&v)));
        }
        // Records of their own come first: they override a chunk's copy.
        for item in self.queued.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (id, seq) = split_client_key(&k)
                .and_then(|(id, n)| Some((id, u64::from_be_bytes(n.try_into().ok()?))))
                .ok_or_else(|| self.corrupt("queued", &k))?;
            loaded.max_seq = loaded.max_seq.max(seq);
            // Legacy records (written before chunks) have no chunk: their
            // `PutQueued` is as good as applied.
            let client: Arc<str> = id.as_str().into();
            index
                .clients
                .entry(client)
                .or_default()
                .records
                .insert(seq, true);
            loaded.queued.push((id, seq, Bytes::copy_from_slice(&v)));
        }
        let mut progress = HashMap::new();
        for item in self.progress.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = <[u8; 8]>::try_from(&k[..])
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt("progress", &k))?;
            let value = Bytes::copy_from_slice(&v);
            let parsed = parse_progress(&value).ok_or_else(|| self.corrupt("progress", &k))?;
            progress.insert(id, parsed);
        }
        let mut dead = Vec::new();
        for item in self.chunks.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = <[u8; 8]>::try_from(&k[..])
                .map(u64::from_be_bytes)
                .map_err(|_| self.corrupt("chunks", &k))?;
            let value = Bytes::copy_from_slice(&v);
            let (client, entries) =
                parse_chunk(&value).ok_or_else(|| self.corrupt("chunks", &k))?;
            let client_id: Arc<str> = client.as_str().into();
            let mut chunk = Chunk::new(client_id.clone());
            let mut entries = entries;
            entries.sort_unstable_by_key(|e| e.0);
            chunk.seqs = entries.iter().map(|e| e.0).collect();
            if let Some(&last) = chunk.seqs.last() {
                loaded.max_seq = loaded.max_seq.max(last);
            }
            chunk.live = entries.len();
            if let Some((words, updates)) = progress.remove(&id) {
                chunk.progress = true;
                for i in 0..entries.len() {
                    if words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0) {
                        chunk.take(i);
                    }
                }
                chunk.updates = updates;
            }
            let own = index.clients.entry(client_id).or_default();
            for (i, (seq, record)) in entries.into_iter().enumerate() {
                if !chunk.is_gone(i) && !own.records.contains_key(&seq) {
                    let latest = chunk
                        .updates
                        .iter()
                        .find(|(s, _)| *s == seq)
                        .map_or(record, |(_, r)| r.clone());
                    loaded.queued.push((client.clone(), seq, latest));
                }
            }
            own.chunks.push_back(id);
            index.next_chunk = index.next_chunk.max(id.saturating_add(1));
            if chunk.live == 0 {
                dead.push(id);
            }
            index.chunks.insert(id, chunk);
        }
        // Progress of a chunk that is gone: left by nothing this code
        // writes, but harmless to drop.
        dead.extend(progress.into_keys().map(|id| id | ORPHAN));
        loaded
            .queued
            .sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
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
        Ok((loaded, index, dead))
    }

    /// Reads the store, keeps its index and removes chunks found with
    /// nothing left to deliver.
    fn load_index(&self, slot: &mut Option<Index>) -> Result<Loaded, StoreError> {
        let (loaded, mut index, dead) = self.scan()?;
        // What only memory knows: deletions and updates whose `PutQueued`
        // is still to come.
        if let Some(old) = slot.take() {
            index.early = old.early;
            for (client, entries) in old.clients {
                for (seq, put) in entries.records {
                    if !put {
                        if let Some(own) = index.clients.get_mut(&client) {
                            own.records.insert(seq, false);
                        }
                    }
                }
            }
        }
        if !dead.is_empty() {
            let mut batch = self.batch();
            for id in dead {
                if id & ORPHAN != 0 {
                    self.progress
                        .remove(&mut batch, (id & !ORPHAN).to_be_bytes());
                } else {
                    self.remove_chunk(&mut index, &mut batch, id);
                }
            }
            batch.commit().map_err(|e| self.err(e))?;
        }
        *slot = Some(index);
        Ok(loaded)
    }

    /// A batch whose commit hands the journal to the OS (a crash of the
    /// process loses nothing) but does not wait for the disk: `sync` does.
    fn batch(&self) -> Batch {
        self.keyspace.batch().durability(Some(PersistMode::Buffer))
    }

    /// Removes chunk `id` (every message in it delivered or discarded)
    /// with its progress record.
    fn remove_chunk(&self, index: &mut Index, batch: &mut Batch, id: u64) {
        let Some(chunk) = index.chunks.remove(&id) else {
            return;
        };
        self.chunks.remove(batch, id.to_be_bytes());
        if chunk.progress {
            self.progress.remove(batch, id.to_be_bytes());
        }
        if let Some(entries) = index.clients.get_mut(&chunk.client) {
            if let Some(at) = entries.chunks.iter().position(|&c| c == id) {
                entries.chunks.remove(at);
            }
        }
    }

    fn put_queued<'a>(
        index: &mut Index,
        pending: &mut Pending<'a>,
        client_id: &Arc<str>,
        seq: u64,
        record: &'a [u8],
    ) {
        if !index.early.is_empty() && index.early.remove(&seq) {
            return;
        }
        let cached = match &pending.last {
            Some((client, slot)) if Arc::ptr_eq(client, client_id) => Some(*slot),
            _ => None,
        };
        let slot = match cached {
            Some(slot) => slot,
            None => match Self::open_chunk(index, pending, client_id, seq) {
                Some(slot) => slot,
                None => return,
            },
        };
        let Some(chunk) = pending.chunks.get_mut(slot) else {
            return;
        };
        chunk.entries.push((seq, record));
        if let Some(indexed) = index.chunks.get_mut(&chunk.id) {
            indexed.add(seq);
        }
    }

    /// The slot in `pending` of `client_id`'s chunk in this write, begun
    /// if need be; `None` if the message is stale (updated already).
    fn open_chunk(
        index: &mut Index,
        pending: &mut Pending,
        client_id: &Arc<str>,
        seq: u64,
    ) -> Option<usize> {
        let own = index.clients.entry(client_id.clone()).or_default();
        if let Some(put) = own.records.get_mut(&seq) {
            // Updated already: this first record is stale.
            *put = true;
            return None;
        }
        // The client's chunk of this write, unless the write also removed
        // it (all delivered, or the session deleted): then a new one.
        let open = pending.of_client.get(client_id).copied().filter(|&slot| {
            pending
                .chunks
                .get(slot)
                .is_some_and(|chunk| index.chunks.contains_key(&chunk.id))
        });
        let slot = match open {
            Some(slot) => slot,
            None => {
                let id = index.next_chunk;
                index.next_chunk += 1;
                pending.chunks.push(NewChunk {
                    id,
                    client: client_id.clone(),
                    entries: Vec::new(),
                });
                index.chunks.insert(id, Chunk::new(client_id.clone()));
                own.chunks.push_back(id);
                let slot = pending.chunks.len() - 1;
                pending.of_client.insert(client_id.clone(), slot);
                slot
            }
        };
        pending.last = own.records.is_empty().then(|| (client_id.clone(), slot));
        Some(slot)
    }

    fn delete_queued(
        &self,
        index: &mut Index,
        batch: &mut Batch,
        pending: &mut Pending,
        client_id: &Arc<str>,
        seq: u64,
    ) {
        let record = index
            .clients
            .get_mut(client_id)
            .and_then(|own| own.records.remove(&seq));
        if record.is_some() {
            self.queued
                .remove(batch, client_key(client_id, &seq.to_be_bytes()));
        }
        let Some((id, i)) = index.find(client_id, seq) else {
            // Not written yet (unless a record of its own was all it had):
            // its `PutQueued` is still to come, and stale.
            if record != Some(true) {
                index.early.insert(seq);
            }
            return;
        };
        let Some(chunk) = index.chunks.get_mut(&id) else {
            return;
        };
        if !chunk.take(i) {
            return;
        }
        chunk.updates.retain(|(s, _)| *s != seq);
        if chunk.live == 0 {
            self.remove_chunk(index, batch, id);
        } else {
            pending.touched.push(id);
        }
    }

    fn delete_session(
        &self,
        index: &mut Index,
        batch: &mut Batch,
        client_id: &Arc<str>,
    ) -> Result<(), StoreError> {
        self.sessions.remove(batch, client_id.as_bytes());
        let prefix = client_prefix(client_id);
        // Also reaches records the index does not know of.
        for partition in [&self.queued, &self.inbound] {
            for item in partition.prefix(&prefix) {
                let (key, _) = item.map_err(|e| self.err(e))?;
                partition.remove(batch, &*key);
            }
        }
        let Some(entries) = index.clients.remove(client_id) else {
            return Ok(());
        };
        for (seq, put) in entries.records {
            self.queued
                .remove(batch, client_key(client_id, &seq.to_be_bytes()));
            if !put {
                index.early.insert(seq);
            }
        }
        for id in entries.chunks {
            self.remove_chunk(index, batch, id);
        }
        Ok(())
    }
}

/// Marks a progress record without a chunk in `scan`'s list of leftovers.
const ORPHAN: u64 = 1 << 63;

/// First byte of a progress record.
const PROGRESS_FORMAT: u8 = 1;

/// A chunk's progress record: the format byte, the number of bitmap words,
/// the words (little-endian), then its updated records as in a chunk.
fn encode_progress(chunk: &Chunk) -> Vec<u8> {
    let updates: usize = chunk
        .updates
        .iter()
        .map(|(_, r)| ENTRY_HEADER + r.len())
        .sum();
    let mut out = Vec::with_capacity(5 + 8 * chunk.gone.len() + updates);
    out.push(PROGRESS_FORMAT);
    out.extend_from_slice(&(chunk.gone.len() as u32).to_be_bytes());
    for word in &chunk.gone {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for (seq, record) in &chunk.updates {
        put_entry(&mut out, *seq, record);
    }
    out
}

/// Bytes before a record in a chunk or progress entry: its number (u64)
/// and its length (u32).
const ENTRY_HEADER: usize = 12;

/// One (seq, record) entry as chunks and progress records hold them.
fn put_entry(out: &mut impl BufMut, seq: u64, record: &[u8]) {
    out.put_u64(seq);
    out.put_u32(record.len() as u32);
    out.put_slice(record);
}

type Progress = (Vec<u64>, Vec<(u64, Bytes)>);

fn parse_progress(value: &Bytes) -> Option<Progress> {
    let mut b = &value[..];
    if b.remaining() < 5 || b.get_u8() != PROGRESS_FORMAT {
        return None;
    }
    let words = b.get_u32() as usize;
    if b.remaining() < words.checked_mul(8)? {
        return None;
    }
    let gone = (0..words).map(|_| b.get_u64_le()).collect();
    let entries = parse_entries(value, value.len() - b.remaining())?;
    Some((gone, entries))
}

/// (seq, record) entries from `at` to the end of `value`.
fn parse_entries(value: &Bytes, at: usize) -> Option<Vec<(u64, Bytes)>> {
    let mut b = value.get(at..)?;
    let mut entries = Vec::new();
    while b.has_remaining() {
        if b.remaining() < ENTRY_HEADER {
            return None;
        }
        let seq = b.get_u64();
        let len = b.get_u32() as usize;
        if b.remaining() < len {
            return None;
        }
        let start = value.len() - b.remaining();
        entries.push((seq, value.slice(start..start + len)));
        b.advance(len);
    }
    Some(entries)
}

/// A chunk's client id and its (seq, record) entries.
fn parse_chunk(value: &Bytes) -> Option<(String, Vec<(u64, Bytes)>)> {
    let mut b = &value[..];
    if b.remaining() < 3 || b.get_u8() != CHUNK_FORMAT {
        return None;
    }
    let len = usize::from(b.get_u16());
    let client = String::from_utf8(b.get(..len)?.to_vec()).ok()?;
    let entries = parse_entries(value, 3 + len)?;
    Some((client, entries))
}

impl Store for FjallStore {
    fn sync(&self) -> Result<(), StoreError> {
        // fjall holds its journal lock through the fsync, which would stop
        // a concurrent writer; the writer is the thread that syncs.
        self.keyspace
            .persist(PersistMode::SyncData)
            .map_err(|e| self.err(e))
    }

    fn write(&self, ops: &[Op]) -> Result<(), StoreError> {
        let mut slot = self.index.lock();
        if slot.is_none() {
            self.load_index(&mut slot)?;
        }
        let Some(index) = slot.as_mut() else {
            return Ok(());
        };
        let written = self.write_indexed(index, ops);
        if written.is_err() {
            // The index took in a batch that did not land: read it again
            // from disk should anyone write after this.
            *slot = None;
        }
        written
    }

    fn load(&self) -> Result<Loaded, StoreError> {
        let mut slot = self.index.lock();
        self.load_index(&mut slot)
    }

    fn disk_space(&self) -> u64 {
        self.keyspace.disk_space()
    }
}

impl FjallStore {
    fn write_indexed(&self, index: &mut Index, ops: &[Op]) -> Result<(), StoreError> {
        let mut batch = self.batch();
        let mut pending = Pending::default();
        for op in ops {
            if !matches!(op, Op::PutQueued { .. }) {
                pending.last = None;
            }
            match op {
                Op::PutSession { client_id, record } => {
                    self.sessions
                        .insert(&mut batch, client_id.as_bytes(), &record[..]);
                }
                Op::DeleteSession { client_id } => {
                    self.delete_session(index, &mut batch, client_id)?;
                }
                Op::PutQueued {
                    client_id,
                    seq,
                    record,
                } => Self::put_queued(index, &mut pending, client_id, *seq, record),
                Op::UpdateQueued {
                    client_id,
                    seq,
                    record,
                } => {
                    // Kept with the chunk's progress when the message is in
                    // a chunk: no key per message, so no tombstone per
                    // message when it is delivered.
                    let in_chunk = index
                        .find(client_id, *seq)
                        .and_then(|(id, _)| Some((id, index.chunks.get_mut(&id)?)));
                    if let Some((id, chunk)) = in_chunk {
                        // A copy: the record shares its allocation with
                        // others, which it would keep alive.
                        let record = Bytes::copy_from_slice(record);
                        match chunk.updates.iter_mut().find(|(s, _)| s == seq) {
                            Some(latest) => latest.1 = record,
                            None => chunk.updates.push((*seq, record)),
                        }
                        pending.touched.push(id);
                    } else {
                        self.queued.insert(
                            &mut batch,
                            client_key(client_id, &seq.to_be_bytes()),
                            &record[..],
                        );
                        let own = index.clients.entry(client_id.clone()).or_default();
                        own.records.entry(*seq).or_insert(false);
                    }
                }
                Op::DeleteQueued { client_id, seq } => {
                    self.delete_queued(index, &mut batch, &mut pending, client_id, *seq);
                }
                Op::PutInbound {
                    client_id,
                    packet_id,
                } => {
                    self.inbound.insert(
                        &mut batch,
                        client_key(client_id, &packet_id.to_be_bytes()),
                        [],
                    );
                }
                Op::DeleteInbound {
                    client_id,
                    packet_id,
                } => {
                    self.inbound
                        .remove(&mut batch, client_key(client_id, &packet_id.to_be_bytes()));
                }
                Op::PutRetained { topic, record } => {
                    self.retained.insert(&mut batch, &topic[..], &record[..]);
                }
                Op::DeleteRetained { topic } => {
                    self.retained.remove(&mut batch, &topic[..]);
                }
            }
        }
        pending.touched.sort_unstable();
        pending.touched.dedup();
        for id in &pending.touched {
            if let Some(chunk) = index.chunks.get_mut(id) {
                self.progress
                    .insert(&mut batch, id.to_be_bytes(), encode_progress(chunk));
                chunk.progress = true;
            }
        }
        // A chunk whose messages were all delivered within this batch is
        // not written at all.
        for chunk in &pending.chunks {
            if index.chunks.contains_key(&chunk.id) {
                let value = chunk.value().map_err(|e| StoreError::Io {
                    path: self.path.display().to_string(),
                    message: format!("cannot build chunk {}: {e}", chunk.id),
                })?;
                self.chunks
                    .insert(&mut batch, chunk.id.to_be_bytes(), value);
            }
        }
        batch.commit().map_err(|e| self.err(e))?;
        // fjall's compaction drops the versions under a newer one (a
        // delivered chunk under its deletion) only below a watermark that
        // it advances when snapshots close (every 50th close). We read no
        // snapshots: the watermark would stay at 0, compaction would keep
        // every version, and on reaching the last level drop the deletion
        // but keep the chunk under it. A snapshot opened and closed per
        // write keeps the watermark about 50 writes behind.
        drop(self.state.snapshot());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{
        late_puts_are_stale, max_seq_covers_delivered_messages, one_client_many_times_in_a_write,
        queues_follow_their_writes,
    };

    fn put(seq: u64) -> Op {
        Op::PutQueued {
            client_id: "c".into(),
            seq,
            record: Bytes::from(format!("m{seq}")),
        }
    }

    fn delete(seq: u64) -> Op {
        Op::DeleteQueued {
            client_id: "c".into(),
            seq,
        }
    }

    fn apply(store: &FjallStore, ops: impl Iterator<Item = Op>) {
        store.apply(&ops.collect::<Vec<_>>()).unwrap();
    }

    fn count(kind: &Kind) -> usize {
        kind.iter().count()
    }

    proptest::proptest! {
        /// A chunk built from numbers in any order, some marked gone on
        /// the way, keeps each number's gone bit with it.
        #[test]
        fn late_numbers_keep_the_gone_bits_with_their_messages(
            steps in proptest::collection::vec((0u64..400, proptest::bool::ANY), 1..300)
        ) {
            let mut chunk = Chunk::new("c".into());
            let mut model: std::collections::BTreeMap<u64, bool> = Default::default();
            for (seq, take) in steps {
                if model.contains_key(&seq) {
                    continue;
                }
                chunk.add(seq);
                model.insert(seq, false);
                if take {
                    let i = chunk.position(seq).unwrap();
                    proptest::prop_assert!(chunk.take(i));
                    model.insert(seq, true);
                }
            }
            let seqs: Vec<u64> = model.keys().copied().collect();
            proptest::prop_assert_eq!(&chunk.seqs, &seqs);
            for (i, gone) in model.values().enumerate() {
                proptest::prop_assert_eq!(chunk.is_gone(i), *gone, "at {}", i);
            }
            proptest::prop_assert!(chunk.gone.len() <= seqs.len() / 64 + 1);
            proptest::prop_assert_eq!(chunk.live, model.values().filter(|g| !**g).count());
        }
    }

    #[test]
    fn keeps_the_ordering_contract() {
        let dir = tempfile::tempdir().unwrap();
        late_puts_are_stale(&FjallStore::open(&dir.path().join("a")).unwrap());
        let expected =
            one_client_many_times_in_a_write(&FjallStore::open(&dir.path().join("d")).unwrap());
        let mut reread = FjallStore::open(&dir.path().join("d"))
            .unwrap()
            .load()
            .unwrap()
            .queued;
        reread.sort();
        assert_eq!(reread, expected);
        queues_follow_their_writes(&FjallStore::open(&dir.path().join("b")).unwrap());
        max_seq_covers_delivered_messages(&FjallStore::open(&dir.path().join("c")).unwrap());
        // Also when read back after a restart, and with a second load in
        // between that must not forget a deletion still waiting for its
        // queueing write.
        let store = FjallStore::open(&dir.path().join("c")).unwrap();
        assert!(store.load().unwrap().max_seq >= 3);
        store.apply(&[delete(9)]).unwrap();
        store.load().unwrap();
        store.apply(&[put(9)]).unwrap();
        assert!(store.load().unwrap().queued.iter().all(|q| q.1 != 9));
    }

    #[test]
    fn one_batch_writes_one_chunk_per_client_and_delivery_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        apply(&store, (1..=100).map(put));
        apply(&store, (101..=200).map(put));
        assert_eq!(count(&store.chunks), 2);
        assert_eq!(count(&store.queued), 0);
        // Half of the first chunk delivered: one progress record, whatever
        // the number of writes.
        apply(&store, (1..=50).map(delete));
        assert_eq!(count(&store.progress), 1);
        apply(&store, (51..=60).map(delete));
        assert_eq!(count(&store.progress), 1);
        assert_eq!(count(&store.chunks), 2);
        // The rest: the chunk and its progress go.
        apply(&store, (61..=100).map(delete));
        assert_eq!(count(&store.chunks), 1);
        assert_eq!(count(&store.progress), 0);
        // Queued and delivered in the same batch: nothing is written.
        let mut ops: Vec<Op> = (201..=210).map(put).collect();
        ops.extend((201..=210).map(delete));
        ops.push(put(211));
        store.apply(&ops).unwrap();
        assert_eq!(count(&store.chunks), 2);
        let seqs: Vec<u64> = store.load().unwrap().queued.iter().map(|q| q.1).collect();
        assert_eq!(seqs, (101..=200).chain([211]).collect::<Vec<_>>());
    }

    #[test]
    fn stage_records_of_chunked_messages_live_with_the_chunk() {
        let update = |seq, record: &'static [u8]| Op::UpdateQueued {
            client_id: "c".into(),
            seq,
            record: Bytes::from_static(record),
        };
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path()).unwrap();
            apply(&store, (1..=3).map(put));
            store
                .apply(&[update(1, b"sent"), update(2, b"sent")])
                .unwrap();
            store.apply(&[update(1, b"released"), delete(2)]).unwrap();
            // No key per message: nothing to leave a tombstone behind.
            assert_eq!(count(&store.queued), 0);
            assert_eq!(count(&store.progress), 1);
        }
        let store = FjallStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let got: Vec<(u64, &[u8])> = loaded.queued.iter().map(|q| (q.1, &q.2[..])).collect();
        assert_eq!(got, [(1, &b"released"[..]), (3, b"m3")]);
        store.apply(&[update(3, b"sent")]).unwrap();
        store.apply(&[delete(1), delete(3)]).unwrap();
        for partition in [&store.chunks, &store.progress, &store.queued] {
            assert_eq!(count(partition), 0);
        }
        assert!(store.load().unwrap().queued.is_empty());
    }

    #[test]
    fn a_late_message_keeps_the_delivered_marks_in_place() {
        let mut chunk = Chunk::new("c".into());
        for seq in [10, 20, 30] {
            chunk.add(seq);
        }
        assert!(chunk.take(1));
        // 15 arrives late: 20 moves up and stays delivered.
        chunk.add(15);
        assert_eq!(chunk.seqs, [10, 15, 20, 30]);
        let gone: Vec<bool> = (0..4).map(|i| chunk.is_gone(i)).collect();
        assert_eq!(gone, [false, false, true, false]);
        assert_eq!(chunk.live, 3);
        assert!(!chunk.take(2));
        // Through the store: queued, delivered and a late one in one write.
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        store
            .apply(&[put(5), put(7), delete(7), put(6), delete(5)])
            .unwrap();
        let seqs: Vec<u64> = store.load().unwrap().queued.iter().map(|q| q.1).collect();
        assert_eq!(seqs, [6]);
        store.apply(&[delete(6)]).unwrap();
        assert_eq!(count(&store.chunks), 0);
        assert_eq!(count(&store.progress), 0);
    }

    #[test]
    fn a_reopened_store_knows_where_its_messages_are() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path()).unwrap();
            apply(&store, (1..=10).map(put));
            store
                .apply(&[
                    delete(1),
                    delete(2),
                    Op::UpdateQueued {
                        client_id: "c".into(),
                        seq: 3,
                        record: Bytes::from_static(b"sent"),
                    },
                ])
                .unwrap();
        }
        let store = FjallStore::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        let got: Vec<(u64, &[u8])> = loaded.queued.iter().map(|q| (q.1, &q.2[..])).collect();
        assert_eq!(got.len(), 8);
        assert_eq!(got[0], (3, &b"sent"[..]));
        assert_eq!(got[1], (4, &b"m4"[..]));
        // New chunks do not collide with the old one, and delivering the
        // rest after the restart removes everything.
        apply(&store, (11..=12).map(put));
        assert_eq!(count(&store.chunks), 2);
        apply(&store, (3..=12).map(delete));
        for partition in [&store.chunks, &store.progress, &store.queued] {
            assert_eq!(count(partition), 0);
        }
        assert!(store.load().unwrap().queued.is_empty());
    }

    /// Blocks allocated under `dir`, as `du` counts them (journals are
    /// created sparse at their full size).
    fn allocated(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| {
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    allocated(&entry.path())
                } else {
                    meta.blocks() * 512
                }
            })
            .sum()
    }

    #[test]
    fn disk_use_stays_bounded_under_a_steady_stream() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        // A small memtable, so that the stream fills many.
        let store = FjallStore::open_sized(dir.path(), JOURNAL_BYTES, MIB as u32).unwrap();
        // Incompressible, as fjall compresses what it flushes: each record
        // a different stretch of random bytes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let pool = Bytes::from(
            (0..1 << 20)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<u8>>(),
        );
        let record = |seq: u64| {
            let at = (seq as usize * 199) % (pool.len() - 200);
            pool.slice(at..at + 200)
        };
        let batch = 500;
        let (mut peak, mut journals) = (0, 0);
        // 600 rounds of 500 messages of 200 bytes: 63 MB through the
        // store (written, not synced: durability is not the point here),
        // each round delivering the one before. Without the deliveries the
        // store ends above 63 MB; with them it went between 2 and 25 MB.
        for round in 0..600u64 {
            let mut ops: Vec<Op> = (0..batch)
                .map(|i| Op::PutQueued {
                    client_id: "c".into(),
                    seq: round * batch + i,
                    record: record(round * batch + i),
                })
                .collect();
            if round > 0 {
                ops.extend((0..batch).map(|i| delete((round - 1) * batch + i)));
            }
            // And a small record of another kind (as progress records
            // are): with a partition per kind, its partition never filled
            // its memtable and kept each sealed journal on disk until
            // fjall's monitor forced it out.
            ops.push(Op::PutSession {
                client_id: "c".into(),
                record: Bytes::from(round.to_string()),
            });
            store.write(&ops).unwrap();
            if round % 20 == 19 {
                peak = peak.max(allocated(dir.path()));
                journals = journals.max(store.keyspace.journal_count());
            }
        }
        eprintln!("peak {peak} journals {journals}");
        // The active journal and those whose memtable is being flushed
        // (fjall halts writes past four sealed ones of 32 MiB).
        assert!(journals <= 5, "{journals} journals");
        // Journals up to their limit, sealed memtables being flushed, and
        // segments compaction has yet to merge: a bound well below what
        // went through.
        assert!(peak < 32 * MIB, "peak {peak} bytes on disk");
        assert_eq!(store.load().unwrap().queued.len(), batch as usize);
    }

    #[test]
    fn a_store_with_a_partition_per_kind_moves_into_one() {
        let dir = tempfile::tempdir().unwrap();
        let (now, before) = (dir.path().join("now"), dir.path().join("before"));
        let mut ops = vec![Op::PutSession {
            client_id: "c".into(),
            record: Bytes::from_static(b"session"),
        }];
        ops.extend((1..=10).map(put));
        let expected = {
            let store = FjallStore::open(&now).unwrap();
            store.apply(&ops).unwrap();
            store
                .apply(&[
                    delete(1),
                    Op::UpdateQueued {
                        client_id: "c".into(),
                        seq: 3,
                        record: Bytes::from_static(b"sent"),
                    },
                    Op::UpdateQueued {
                        client_id: "c".into(),
                        seq: 20,
                        record: Bytes::from_static(b"early"),
                    },
                    Op::PutInbound {
                        client_id: "c".into(),
                        packet_id: 7,
                    },
                    Op::PutRetained {
                        topic: Bytes::from_static(b"a/b"),
                        record: Bytes::from_static(b"retained"),
                    },
                ])
                .unwrap();
            store.load().unwrap()
        };
        assert_eq!(expected.queued.len(), 10);
        // The same records laid out as before: a partition per kind.
        {
            let keyspace = Config::new(&now).open().unwrap();
            let state = keyspace
                .open_partition(STATE, PartitionCreateOptions::default())
                .unwrap();
            let old = Config::new(&before).open().unwrap();
            for item in state.iter() {
                let (key, value) = item.unwrap();
                let (name, _) = KINDS.iter().find(|(_, p)| *p == key[0]).unwrap();
                let partition = old
                    .open_partition(name, PartitionCreateOptions::default())
                    .unwrap();
                partition.insert(&key[1..], value).unwrap();
            }
            old.persist(PersistMode::SyncAll).unwrap();
            assert_eq!(old.partition_count(), 6);
        }
        {
            let store = FjallStore::open(&before).unwrap();
            assert_eq!(store.load().unwrap(), expected);
            // Written after the move: the next open must not copy again.
            store.apply(&[delete(2)]).unwrap();
        }
        let store = FjallStore::open(&before).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.queued.len(), expected.queued.len() - 1);
        assert!(loaded.queued.iter().all(|q| q.1 != 2));
        assert_eq!(loaded.sessions, expected.sessions);
    }

    /// A store in the earlier layout: `chunks` chunks of 128 messages of
    /// 1,000 bytes (the last ones only in the journal) and a session.
    fn old_layout(path: &Path, chunks: u64) {
        let keyspace = Config::new(path).open().unwrap();
        let options = || PartitionCreateOptions::default().max_memtable_size(1 << 20);
        let partition = keyspace.open_partition("chunks", options()).unwrap();
        let sessions = keyspace.open_partition("sessions", options()).unwrap();
        sessions.insert("c", "session").unwrap();
        let record = vec![b'm'; 1000];
        for id in 0..chunks {
            let mut value = vec![CHUNK_FORMAT, 0, 1, b'c'];
            for i in 0..128u64 {
                value.extend_from_slice(&(id * 128 + i).to_be_bytes());
                value.extend_from_slice(&(record.len() as u32).to_be_bytes());
                value.extend_from_slice(&record);
            }
            partition.insert(id.to_be_bytes(), value).unwrap();
        }
        keyspace.persist(PersistMode::SyncAll).unwrap();
    }

    /// Opens the store at `path` with 1 MiB memtables (so moves up to 4
    /// MiB), on a thread: an open that hangs fails the test.
    fn open_bounded(path: &Path) -> Result<Loaded, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path = path.to_path_buf();
        std::thread::spawn(move || {
            let loaded = FjallStore::open_sized(&path, JOURNAL_BYTES, 1 << 20)
                .and_then(|store| store.load())
                .map_err(|e| e.to_string());
            let _ = tx.send(loaded);
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("the open finishes")
    }

    #[test]
    fn a_store_in_the_earlier_layout_moves_or_is_refused_by_size() {
        let dir = tempfile::tempdir().unwrap();
        // 3 MB: moved, in bounded time.
        old_layout(&dir.path().join("small"), 24);
        let loaded = open_bounded(&dir.path().join("small")).unwrap();
        assert_eq!(loaded.sessions.len(), 1);
        assert_eq!(loaded.queued.len(), 24 * 128);
        assert_eq!(loaded.max_seq, 24 * 128 - 1);
        // 12 MB: refused, naming the store and what to do; left intact.
        let large = dir.path().join("large");
        old_layout(&large, 96);
        let err = open_bounded(&large).unwrap_err();
        assert!(err.contains(&large.display().to_string()), "{err}");
        assert!(err.contains("move the directory aside"), "{err}");
        let keyspace = Config::new(&large).open().unwrap();
        let chunks = keyspace
            .open_partition("chunks", PartitionCreateOptions::default())
            .unwrap();
        assert_eq!(chunks.iter().count(), 96);
    }

    #[test]
    fn a_corrupt_chunk_is_an_error_naming_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FjallStore::open(dir.path()).unwrap();
            store.apply(&[put(1)]).unwrap();
            let mut batch = store.batch();
            let chunk = [CHUNK_FORMAT, 0, 9, b'x'];
            store.chunks.insert(&mut batch, 9u64.to_be_bytes(), chunk);
            batch.commit().unwrap();
        }
        let store = FjallStore::open(dir.path()).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("chunks"), "{err}");
    }
}
