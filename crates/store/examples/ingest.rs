//! How fast the store makes queued messages durable on this disk: the
//! broker's pattern (batches of new messages for one offline session, one
//! fsync per batch), without the broker.
//!
//!   cargo run --release -p ferrymq-store --example ingest -- [MESSAGES] [BATCH] [RECORD_BYTES] [DIR]
//!
//! Defaults: 1,000,000 messages in batches of 500, records of 60 bytes
//! (a 16-byte payload as the broker stores it), in a temporary directory.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ferrymq_store::{FjallStore, Op, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, std::num::ParseIntError> {
        args.get(i).map_or(Ok(default), |s| s.parse())
    };
    let (messages, batch, size) = (arg(0, 1_000_000)?, arg(1, 500)?.max(1), arg(2, 60)?);
    let temp = tempfile::tempdir()?;
    let dir = args
        .get(3)
        .map_or_else(|| temp.path().to_path_buf(), Into::into);
    let store = FjallStore::open(&dir)?;
    let client: Arc<str> = "away".into();
    let record = Bytes::from(vec![7u8; size as usize]);

    let started = Instant::now();
    let (mut seq, mut syncs) = (0, 0u64);
    while seq < messages {
        let ops: Vec<Op> = (seq..(seq + batch).min(messages))
            .map(|seq| Op::PutQueued {
                client_id: client.clone(),
                seq,
                record: record.clone(),
            })
            .collect();
        seq += ops.len() as u64;
        store.write(&ops)?;
        store.sync()?;
        syncs += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{messages} messages of {size} B in batches of {batch}: {:.0} msg/s, {:.0} µs per batch, {} MB on disk",
        messages as f64 / seconds,
        seconds * 1e6 / syncs as f64,
        store.disk_space() / 1_000_000
    );
    Ok(())
}
