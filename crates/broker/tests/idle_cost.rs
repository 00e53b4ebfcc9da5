//! What an idle plain TCP connection costs the broker (issue 16: about a
//! kilobyte; Mosquitto: ~740 bytes of RSS, ~620 of heap). Counted with the
//! allocator the `ferrymq` binary uses, in heap bytes, so the figure does
//! not move with the machine. The clients are blocking std sockets, which
//! allocate nothing on the heap.
//!
//! One test in this file: the heap is the whole test process's.

use std::io::{Read, Write};

use ferrymq_broker::config::{ListenerConfig, ListenerProtocol};
use ferrymq_testkit::{raw, test_config, wait_until};

#[global_allocator]
static HEAP: ferrymq_broker::heap::Counting = ferrymq_broker::heap::Counting;

/// Connections measured: enough for the per-connection figure to dwarf
/// the allocator's per-thread drift (64 KB a thread).
const N: usize = 2_000;

/// The bounds this guards: the cost of an idle connection, and of its
/// three subscriptions, must not grow back past them (measured: about
/// 1,000 and 800 bytes).
const MAX_BYTES_PER_CONNECTION: usize = 1_280;
const MAX_BYTES_PER_THREE_SUBSCRIPTIONS: usize = 1_024;

/// WebSocket connections measured, and their bound: a task, tungstenite's
/// buffers and ours (measured: about 10 KB; tungstenite's default read
/// buffer alone was 128 KiB).
const WS: usize = 300;
const MAX_BYTES_PER_WEBSOCKET: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_costs_little() {
    let mut config = test_config();
    config.listeners.push(ListenerConfig {
        protocol: ListenerProtocol::WebSockets,
        ..ListenerConfig::new("127.0.0.1:0".parse().unwrap())
    });
    let server = ferrymq_broker::Server::start(config).await.unwrap();
    let addr = server.local_addrs()[0];
    let ws_addr = server.local_addrs()[1];
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

    let ws_warm = tokio::task::spawn_blocking(move || connect_ws(ws_addr, 0))
        .await
        .unwrap();
    let before = ferrymq_broker::heap::current();
    let ws_clients = tokio::task::spawn_blocking(move || {
        (1..=WS).map(|i| connect_ws(ws_addr, i)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let per_websocket = ferrymq_broker::heap::current().saturating_sub(before) / WS;
    println!("{per_websocket} bytes of heap per idle WebSocket connection");
    assert!(
        per_websocket <= MAX_BYTES_PER_WEBSOCKET,
        "an idle WebSocket connection costs {per_websocket} bytes of heap"
    );
    drop((warm, clients, ws_warm, ws_clients));
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

/// A connected MQTT 3.1.1 client over WebSocket (upgrade with the `mqtt`
/// subprotocol, CONNECT in a masked binary frame, its CONNACK), as a
/// blocking socket.
fn connect_ws(addr: std::net::SocketAddr, i: usize) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(ferrymq_testkit::WAIT)).unwrap();
    write!(
        s,
        "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let connect = raw::connect_v311(&format!("ws-idle-{i}"), 0x02, 300);
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | connect.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(connect.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    s.write_all(&frame).unwrap();
    let mut ack = [0u8; 6];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x82, 4, 0x20, 2, 0, 0]);
    s
}
