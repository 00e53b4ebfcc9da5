//! Opens N idle MQTT connections (CONNECT, CONNACK, then nothing) and
//! reports the connect rate and, given the broker's pid, its resident
//! memory before and after, per connection.
//!
//!     cargo run --release -p ferrymq-testkit --example conns -- \
//!         --port 1883 --clients 5000 --pid $(pidof ferrymq)

use std::time::{Duration, Instant};

use bytes::BytesMut;
use ferrymq_codec::{decode, encode, Packet, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (mut port, mut clients, mut pid, mut host) =
        (1883u16, 5000usize, 0u32, "127.0.0.1".to_string());
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--port" => port = v.parse().unwrap(),
            "--clients" => clients = v.parse().unwrap(),
            "--pid" => pid = v.parse().unwrap(),
            "--host" => host = v,
            other => panic!("unknown flag {other}"),
        }
    }
    let before = rss_kib(pid);
    let started = Instant::now();
    let mut open = Vec::with_capacity(clients);
    // 64 handshakes in flight at a time.
    let mut pending = Vec::new();
    for n in 0..clients {
        let host = host.clone();
        pending.push(tokio::spawn(async move {
            let mut s = TcpStream::connect((host.as_str(), port))
                .await
                .expect("connect");
            let mut out = BytesMut::new();
            let mut c = ferrymq_testkit::connect(Protocol::V3_1_1, &format!("idle-{n}"), true);
            c.keep_alive = 600;
            encode(&Packet::Connect(Box::new(c)), Protocol::V3_1_1, &mut out).unwrap();
            s.write_all(&out).await.unwrap();
            let mut buf = BytesMut::with_capacity(16);
            loop {
                if let Some(Packet::ConnAck(a)) = decode(&mut buf, Protocol::V3_1_1, 64).unwrap() {
                    assert!(!a.reason.is_error());
                    break;
                }
                assert!(s.read_buf(&mut buf).await.unwrap() > 0, "closed");
            }
            s
        }));
        if pending.len() == 64 {
            for p in pending.drain(..) {
                open.push(p.await.unwrap());
            }
        }
    }
    for p in pending.drain(..) {
        open.push(p.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    println!(
        "{} connections in {:.2}s: {:.0} conn/s; broker RSS {} KiB -> {} KiB: {:.0} bytes per connection",
        open.len(),
        elapsed,
        open.len() as f64 / elapsed,
        before,
        after,
        (after.saturating_sub(before) * 1024) as f64 / open.len() as f64
    );
    drop(open);
}
