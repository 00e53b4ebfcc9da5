//! Connections that connect, subscribe and disconnect in a loop (issue 16's
//! bad input, scaled to a test): the broker gives back what each took, so
//! memory stays flat however long the churn goes on. Counted with the
//! allocator the `ferrymq` binary uses.
//!
//! One test in this file: the heap is the whole test process's.

use std::io::{Read, Write};

use ferrymq_testkit::{raw, wait_until, TestBroker};

#[global_allocator]
static HEAP: ferrymq_broker::heap::Counting = ferrymq_broker::heap::Counting;

const CYCLES: usize = 5_000;

/// What the heap may grow by over all the cycles: the allocator's
/// per-thread drift (64 KB a thread) and tables that reached their size
/// in the warm-up; a leak of 30 bytes a cycle would be 150 KB (the
/// deadlines of closed connections, 53 bytes a cycle, were 265 KB).
const SLACK: usize = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_subscribe_disconnect_churn_keeps_memory_flat() {
    let b = TestBroker::start().await;
    let addr = b.addr;
    let churn = move |from: usize, to: usize| {
        tokio::task::spawn_blocking(move || (from..to).for_each(|i| cycle(addr, i)))
    };
    churn(0, 500).await.unwrap();
    let gone = || b.broker().registry.is_empty() && b.server.shard_connections() == 0;
    wait_until("the warm-up's sessions are gone", gone).await;
    let before = ferrymq_broker::heap::current();
    churn(500, 500 + CYCLES).await.unwrap();
    wait_until("the churn's sessions are gone", gone).await;
    let after = ferrymq_broker::heap::current();
    let grown = after.saturating_sub(before);
    println!("heap grew {grown} bytes over {CYCLES} cycles");
    assert!(
        grown <= SLACK,
        "heap grew {grown} bytes over {CYCLES} cycles"
    );
}

/// One client's life: CONNECT (clean session), two subscriptions,
/// DISCONNECT, and the broker's close.
fn cycle(addr: std::net::SocketAddr, i: usize) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ferrymq_testkit::WAIT)).unwrap();
    s.write_all(&raw::connect_v311(&format!("churn-{i}"), 0x02, 60))
        .unwrap();
    let filters = [format!("devices/{i}/cmd"), "broadcast/#".to_string()];
    for (id, filter) in (1u16..).zip(&filters) {
        s.write_all(&raw::subscribe_v311(id, filter.as_bytes(), 1))
            .unwrap();
    }
    let mut acks = [0u8; 4 + 5 + 5];
    s.read_exact(&mut acks).unwrap();
    assert_eq!(acks[..4], [0x20, 2, 0, 0]);
    s.write_all(&[0xe0, 0]).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}
