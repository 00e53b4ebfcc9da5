//! `ferrymq pub`, `sub` and `rr` as processes against an in-process
//! broker: output formats, exit codes, messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ferrymq_client::{connect, ConnectOptions, Outgoing, Property, Protocol, QoS};
use ferrymq_testkit::TestBroker;

const WAIT: Duration = Duration::from_secs(10);

fn ferrymq(broker: &TestBroker, tool: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrymq"));
    cmd.args([
        tool,
        "-h",
        "127.0.0.1",
        "-p",
        &broker.addr.port().to_string(),
    ]);
    cmd
}

/// Runs to completion on a blocking thread (the broker runs on the runtime).
async fn output(mut cmd: Command) -> Output {
    tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap()),
    )
    .await
    .expect("command finishes in time")
    .unwrap()
}

/// A `ferrymq sub -d` running in the background, returned once subscribed.
struct Sub(Child);

impl Sub {
    async fn start(mut cmd: Command) -> Sub {
        let mut child = cmd
            .arg("-d")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        tokio::task::spawn_blocking(move || loop {
            let line = rx.recv_timeout(WAIT).expect("sub reports its SUBACK");
            if line.contains("received SUBACK") {
                return;
            }
        })
        .await
        .unwrap();
        Sub(child)
    }

    async fn finish(mut self) -> (Option<i32>, String) {
        let mut child = std::mem::replace(&mut self.0, Command::new("true").spawn().unwrap());
        tokio::time::timeout(
            WAIT,
            tokio::task::spawn_blocking(move || {
                let status = child.wait().unwrap();
                let mut out = String::new();
                child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                (status.code(), out)
            }),
        )
        .await
        .expect("sub exits in time")
        .unwrap()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_to_sub_verbose_in_both_versions() {
    let broker = TestBroker::start().await;
    for version in ["mqttv311", "mqttv5"] {
        let mut cmd = ferrymq(&broker, "sub");
        cmd.args(["-V", version, "-t", "cli/#", "-q", "2", "-v", "-C", "4"]);
        let sub = Sub::start(cmd).await;
        for (qos, message) in [("0", "zero"), ("1", "one"), ("2", "two")] {
            let mut p = ferrymq(&broker, "pub");
            p.args(["-V", version, "-q", qos, "-t", "cli/x", "-m", message]);
            assert!(output(p).await.status.success());
        }
        let mut p = ferrymq(&broker, "pub");
        p.args(["-V", version, "-t", "cli/empty", "-n"]);
        assert!(output(p).await.status.success());
        let (code, out) = sub.finish().await;
        assert_eq!(code, Some(0));
        assert_eq!(out, "cli/x zero\ncli/x one\ncli/x two\ncli/empty (null)\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_string_and_json_output() {
    let broker = TestBroker::start().await;
    let mut cmd = ferrymq(&broker, "sub");
    cmd.args([
        "-V",
        "mqttv5",
        "-t",
        "f",
        "-q",
        "1",
        "-C",
        "1",
        "-F",
        "%t|%p|%q|%r|%l|%x|%C|%P",
    ]);
    let formatted = Sub::start(cmd).await;
    let mut cmd = ferrymq(&broker, "sub");
    cmd.args(["-V", "mqttv5", "-t", "f", "-q", "1", "-C", "1", "--json"]);
    let json = Sub::start(cmd).await;
    let mut p = ferrymq(&broker, "pub");
    p.args([
        "-V",
        "mqttv5",
        "-q",
        "1",
        "-t",
        "f",
        "-m",
        "hi",
        "-D",
        "publish",
        "content-type",
        "text/plain",
    ]);
    p.args(["-D", "publish", "user-property", "k", "v"]);
    let out = output(p).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        formatted.finish().await.1,
        "f|hi|1|0|2|6869|text/plain|k:v\n"
    );
    let (_, line) = json.finish().await;
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["topic"], "f");
    assert_eq!(v["payload"], "hi");
    assert_eq!(v["qos"], 1);
    assert_eq!(v["retain"], false);
    assert_eq!(v["properties"]["content_type"], "text/plain");
    assert_eq!(v["properties"]["user_properties"][0][0], "k");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_repeat_and_retained_only() {
    let broker = TestBroker::start().await;
    let mut p = ferrymq(&broker, "pub");
    p.args(["-t", "rep", "-m", "again", "-q", "1", "--repeat", "3", "-r"]);
    assert!(output(p).await.status.success());
    let mut cmd = ferrymq(&broker, "sub");
    cmd.args(["-t", "rep", "--retained-only", "-W", "5", "-C", "1"]);
    let out = output(cmd).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "again\n");
    let mut cmd = ferrymq(&broker, "sub");
    cmd.args(["-t", "rep", "--remove-retained", "-C", "1", "-W", "5"]);
    assert!(output(cmd).await.status.success());
    let mut cmd = ferrymq(&broker, "sub");
    cmd.args(["-t", "rep", "-W", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(27), "retained message was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_exits_27_with_a_message() {
    let broker = TestBroker::start().await;
    let mut cmd = ferrymq(&broker, "sub");
    cmd.args(["-t", "quiet", "-W", "1"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(27));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_and_unreachable_server_have_their_exit_codes() {
    let broker = TestBroker::start().await;
    // MQTT 3.1.1 refuses an empty client id without a clean session.
    let mut cmd = ferrymq(&broker, "pub");
    cmd.args(["-t", "x", "-m", "y", "-i", "", "-c"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("connection refused: Client Identifier not valid"),
        "{err}"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    drop(listener);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrymq"));
    cmd.args(["pub", "-h", "127.0.0.1", "-p", &port, "-t", "x", "-m", "y"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connection refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_are_explained() {
    let broker = TestBroker::start().await;
    let mut cmd = ferrymq(&broker, "pub");
    cmd.args(["-t", "x"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one of -m"));
    let mut cmd = ferrymq(&broker, "pub");
    cmd.args(["-t", "x", "-m", "y", "-D", "publish", "content-type", "z"]);
    let out = output(cmd).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("need MQTT 5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rr_gets_the_response_to_its_request() {
    let broker = TestBroker::start().await;
    let options = ConnectOptions::new("127.0.0.1", broker.addr.port())
        .protocol(Protocol::V5)
        .client_id("responder");
    let (responder, mut incoming) = connect(options).await.unwrap();
    responder
        .subscribe("service/req", QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok(Some(m)) = incoming.next_message().await {
            let topic = m.properties.response_topic().unwrap();
            let mut props = ferrymq_client::Properties::new();
            if let Some(c) = m.properties.correlation_data() {
                props.push(Property::CorrelationData(c));
            }
            let mut reply = b"re: ".to_vec();
            reply.extend_from_slice(&m.payload);
            let out = Outgoing::new(topic.as_str(), reply, QoS::AtLeastOnce).properties(props);
            responder.publish_message(out).await.unwrap();
        }
    });
    let mut cmd = ferrymq(&broker, "rr");
    cmd.args([
        "-t",
        "service/req",
        "-e",
        "service/resp",
        "-m",
        "ping",
        "-W",
        "5",
    ]);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "re: ping\n");
}
