//! What an idle plain TCP connection costs the broker (issue 16: about a
//! kilobyte; Mosquitto: ~740 bytes of RSS, ~620 of heap). Counted with the
//! allocator the `ferrymq` binary uses, in heap bytes, so the figure does
//! not move with the machine. The clients are blocking std sockets, which
//! allocate nothing on the heap.
//!
//! One test in this file: the heap is the whole test process's.

use std::io::{Read, Write};

use ferrymq_testkit::{raw, test_config, wait_until};

#[global_allocator]
static HEAP: ferrymq_broker::heap::Counting = ferrymq_broker::heap::Counting;

/// Connections measured: enough for the per-connection figure to dwarf
/// the allocator's per-thread drift (64 KB a thread).
const N: usize = 2_000;

/// The bounds this guards: the cost of an idle connection, and of its
/// three subscriptions, must not grow back past them (measured: about
/// 1,320 and 700 bytes).
const MAX_BYTES_PER_CONNECTION: usize = 1_536;
const MAX_BYTES_PER_THREE_SUBSCRIPTIONS: usize = 1_024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_little() {
    let server = ferrymq_broker::Server::start(test_config()).await.unwrap();
    let addr = server.local_addrs()[0];
    // One connection first: what the broker allocates once (shard buffers,
    // tables' first growth) is not the connections' cost.
    let warm = tokio::task::spawn_blocking(move || {
        let mut s = connect(addr, 0);
        subscribe(&mut s, 0);
        s
    })
    .await
    .unwrap();
    wait_until("the first connection is in a shard", || {
        server.shard_connections() == 1
    })
    .await;
    let before = ferrymq_broker::heap::current();
    let clients =
        tokio::task::spawn_blocking(move || (1..=N).map(|i| connect(addr, i)).collect::<Vec<_>>())
            .await
            .unwrap();
    wait_until("every connection is in a shard", || {
        server.shard_connections() == N + 1
    })
    .await;
    // What the allocator's per-thread drift (64 KB a thread) and the last
    // handshake tasks still being freed leave uncounted is a few percent
    // of N connections' cost.
    let connected = ferrymq_broker::heap::current();
    let clients = tokio::task::spawn_blocking(move || {
        let mut clients = clients;
        for (i, s) in (1..).zip(clients.iter_mut()) {
            subscribe(s, i);
        }
        clients
    })
    .await
    .unwrap();
    let subscribed = ferrymq_broker::heap::current();
    let per_connection = connected.saturating_sub(before) / N;
    let per_subscriptions = subscribed.saturating_sub(connected) / N;
    println!(
        "{per_connection} bytes of heap per idle connection, \
         {per_subscriptions} more for its three subscriptions"
    );
    assert!(
        per_connection <= MAX_BYTES_PER_CONNECTION,
        "an idle connection costs {per_connection} bytes of heap"
    );
    assert!(
        per_subscriptions <= MAX_BYTES_PER_THREE_SUBSCRIPTIONS,
        "three subscriptions cost {per_subscriptions} bytes of heap"
    );
    drop((warm, clients));
    server.shutdown().await;
}

/// A connected MQTT 3.1.1 client (CONNECT and its CONNACK), as a blocking
/// socket.
fn connect(addr: std::net::SocketAddr, i: usize) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ferrymq_testkit::WAIT)).unwrap();
    s.write_all(&raw::connect_v311(&format!("idle-{i}"), 0x02, 300))
        .unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    s
}

/// Subscribes client `i` to what a device typically is: its own command
/// and configuration topics, and a wildcard for broadcasts.
fn subscribe(s: &mut std::net::TcpStream, i: usize) {
    let filters = [
        format!("devices/{i}/cmd"),
        format!("devices/{i}/config"),
        "broadcast/#".to_string(),
    ];
    for (id, filter) in (1u16..).zip(&filters) {
        s.write_all(&raw::subscribe_v311(id, filter.as_bytes(), 1))
            .unwrap();
        let mut suback = [0u8; 5];
        s.read_exact(&mut suback).unwrap();
        let [hi, lo] = id.to_be_bytes();
        assert_eq!(suback, [0x90, 3, hi, lo, 1]);
    }
}
