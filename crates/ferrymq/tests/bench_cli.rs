//! `ferrymq bench` as a process: flags, exit codes, one JSON object.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferrymq_testkit::TestBroker;

const WAIT: Duration = Duration::from_secs(60);

async fn bench(broker: &TestBroker, args: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrymq"));
    cmd.args(["bench"])
        .args(args.split_whitespace())
        .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
        .stdin(Stdio::null());
    tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || cmd.output().unwrap()),
    )
    .await
    .expect("bench finishes in time")
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_with_subscribers_prints_one_json_summary() {
    let broker = TestBroker::start().await;
    let out = bench(
        &broker,
        "pub -c 2 -t cli/%i -q 1 -s 32 -L 300 --subscribers 1 --sub-topic cli/+ --json",
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["command"], "pub");
    assert_eq!(v["sent"], 600);
    assert_eq!(v["acked"], 600);
    assert_eq!(v["lost_acked"], 0);
    assert_eq!(v["publishers"], 2);
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_us"][key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    assert!(v["connect"]["per_second"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_prints_a_human_summary_and_bad_flags_fail() {
    let broker = TestBroker::start().await;
    let out = bench(&broker, "conn -c 10 --duration 0").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("10 of 10"), "{stdout}");
    let out = bench(&broker, "pub -t x -q 3").await;
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let out = bench(&broker, "pub -t x -V 7").await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown MQTT version"));
}
