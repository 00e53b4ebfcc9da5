//! The HTTP listener against a live broker over real sockets: every family
//! of `/metrics`, every admin API call, authentication, and bad HTTP input.
//! The HTTP client is a few lines over a TcpStream, so what is tested is
//! the bytes on the wire.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use ferrymq_codec::{Packet, Protocol, QoS, ReasonCode};
use ferrymq_testkit::{test_config, with_http, TestBroker, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-admin-token";

#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends `raw` as it is and reads the reply to the end (the broker closes
/// after a `Connection: close` request, or on bad input).
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Option<Reply> {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    // The broker may close before taking all of a bad request.
    let _ = stream.write_all(raw).await;
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("the HTTP reply ends in time");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

async fn request(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: ferrymq\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    exchange(addr, raw.as_bytes())
        .await
        .unwrap_or_else(|| panic!("no HTTP reply to {method} {path}"))
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn api(addr: SocketAddr, method: &str, path: &str) -> Reply {
    request(addr, method, path, Some(&bearer())).await
}

/// `/metrics` as sample → value, checking that every sample's family has
/// its HELP and TYPE lines.
async fn metrics(addr: SocketAddr) -> HashMap<String, f64> {
    let reply = request(addr, "GET", "/metrics", None).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.head.contains("text/plain; version=0.0.4"));
    let mut families = HashMap::new();
    let mut samples = HashMap::new();
    for line in reply.body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.split(' ');
            let (kind, name) = (words.next().unwrap(), words.next().unwrap());
            assert!(name.starts_with("ferrymq_"), "{line}");
            families
                .entry(name.to_string())
                .or_insert_with(Vec::new)
                .push(kind.to_string());
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').unwrap();
        assert!(sample.starts_with("ferrymq_"), "{line}");
        samples.insert(sample.to_string(), value.parse::<f64>().unwrap());
    }
    for sample in samples.keys() {
        let name = sample.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| families.contains_key(*f)))
            .unwrap_or(name);
        assert_eq!(
            families.get(family).map(Vec::as_slice),
            Some(&["HELP".to_string(), "TYPE".to_string()][..]),
            "{sample}"
        );
    }
    samples
}

/// Polls `/metrics` until `ready` holds (counters are flushed by each
/// connection once per turn of its loop); bounded by [`WAIT`].
async fn metrics_when(
    addr: SocketAddr,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics(addr).await;
        if ready(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "metrics never got there: {m:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn get(m: &HashMap<String, f64>, sample: &str) -> f64 {
    *m.get(sample)
        .unwrap_or_else(|| panic!("{sample} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_every_family() {
    let mut config = with_http(test_config(), TOKEN);
    config.max_queued_messages = 2;
    let b = TestBroker::with_config(config).await;
    let http = b.http_addr();

    // A persistent subscriber that goes away: its queue fills up.
    let mut sleeper = b.client("sleeper", false).await;
    sleeper.subscribe(&[("q/#", QoS::AtLeastOnce)]).await;
    sleeper.disconnect().await;

    let mut sub = b.client_v5("sub", true).await;
    sub.subscribe(&[("t/#", QoS::ExactlyOnce), ("$share/g/s/#", QoS::AtMostOnce)])
        .await;
    let mut publisher = b.client("pub", true).await;
    publisher
        .publish("t/0", b"hello", QoS::AtMostOnce, false)
        .await;
    publisher
        .publish("t/1", b"1234567", QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("t/2", b"12345678901", QoS::ExactlyOnce, false)
        .await;
    for _ in 0..3 {
        sub.recv_publish().await;
    }
    publisher
        .publish("r/1", b"kept", QoS::AtMostOnce, true)
        .await;
    for _ in 0..3 {
        publisher
            .publish("q/x", b"abc", QoS::AtLeastOnce, false)
            .await;
    }
    publisher
        .publish("q/x", b"zero", QoS::AtMostOnce, false)
        .await;
    publisher.sync().await;
    publisher.disconnect().await;

    // Refused: 3.1.1 without a client id or a clean session.
    let (mut refused, ack) = b
        .connect_with(Protocol::V3_1_1, "", |c| c.clean_start = false)
        .await;
    assert_eq!(ack.reason, ReasonCode::ClientIdentifierNotValid);
    refused.expect_closed().await;
    // A protocol violation: AUTH is not an MQTT 3.1.1 packet.
    let mut bad = b.client("bad", true).await;
    bad.send_raw(&[0xF0, 0x00]).await;
    bad.expect_closed().await;

    let m = metrics_when(http, |m| {
        m.get("ferrymq_disconnects_total{reason=\"protocol_error\"}") == Some(&1.0)
            && m.get("ferrymq_disconnects_total{reason=\"client_disconnect\"}") == Some(&2.0)
    })
    .await;
    assert_eq!(get(&m, "ferrymq_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(get(&m, "ferrymq_uptime_seconds") >= 0.0);
    assert_eq!(get(&m, "ferrymq_connections"), 1.0, "only sub is left");
    assert!(get(&m, "ferrymq_connections_maximum") >= 2.0);
    assert_eq!(
        get(&m, "ferrymq_sessions"),
        2.0,
        "sub and the parked sleeper"
    );
    assert!(get(&m, "ferrymq_sockets_accepted_total") >= 5.0);
    assert_eq!(get(&m, "ferrymq_connects_total"), 4.0);
    assert_eq!(
        get(
            &m,
            "ferrymq_connects_refused_total{reason=\"client_id_not_valid\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "ferrymq_connects_refused_total{reason=\"not_authorized\"}"
        ),
        0.0
    );
    assert_eq!(
        get(
            &m,
            "ferrymq_disconnects_total{reason=\"administrative_action\"}"
        ),
        0.0
    );
    assert_eq!(get(&m, "ferrymq_sessions_expired_total"), 0.0);
    assert!(get(&m, "ferrymq_packets_received_total") >= 18.0);
    assert!(get(&m, "ferrymq_packets_sent_total") >= 15.0);
    assert!(get(&m, "ferrymq_bytes_received_total") > 100.0);
    assert!(get(&m, "ferrymq_bytes_sent_total") > 50.0);
    // By QoS: t/0, r/1 and q/x at 0; t/1 and three q/x at 1; t/2 at 2.
    assert_eq!(get(&m, "ferrymq_messages_received_total{qos=\"0\"}"), 3.0);
    assert_eq!(get(&m, "ferrymq_messages_received_total{qos=\"1\"}"), 4.0);
    assert_eq!(get(&m, "ferrymq_messages_received_total{qos=\"2\"}"), 1.0);
    assert_eq!(
        get(&m, "ferrymq_message_bytes_received_total{qos=\"0\"}"),
        13.0
    );
    assert_eq!(
        get(&m, "ferrymq_message_bytes_received_total{qos=\"1\"}"),
        16.0
    );
    assert_eq!(
        get(&m, "ferrymq_message_bytes_received_total{qos=\"2\"}"),
        11.0
    );
    for (qos, bytes) in [("0", 5.0), ("1", 7.0), ("2", 11.0)] {
        let sent = format!("ferrymq_messages_sent_total{{qos=\"{qos}\"}}");
        assert_eq!(get(&m, &sent), 1.0, "{sent}");
        let sent = format!("ferrymq_message_bytes_sent_total{{qos=\"{qos}\"}}");
        assert_eq!(get(&m, &sent), bytes, "{sent}");
    }
    // Two q/x fit the sleeper's queue, the third does not; QoS 0 is not
    // queued for it at all.
    assert_eq!(
        get(&m, "ferrymq_messages_dropped_total{reason=\"queue_full\"}"),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "ferrymq_messages_dropped_total{reason=\"qos0_offline\"}"
        ),
        1.0
    );
    for reason in [
        "stalled",
        "qos0_queue_full",
        "expired",
        "too_large",
        "acl_denied",
    ] {
        let sample = format!("ferrymq_messages_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(get(&m, &sample), 0.0, "{sample}");
    }
    assert_eq!(get(&m, "ferrymq_publish_denied_total"), 0.0);
    assert_eq!(get(&m, "ferrymq_queued_messages"), 2.0);
    assert_eq!(get(&m, "ferrymq_queued_messages_max"), 2.0);
    assert_eq!(get(&m, "ferrymq_queued_messages_high_water"), 2.0);
    assert_eq!(get(&m, "ferrymq_publishers_paused"), 0.0);
    assert_eq!(get(&m, "ferrymq_publisher_pauses_total"), 0.0);
    assert_eq!(get(&m, "ferrymq_publisher_paused_seconds_total"), 0.0);
    // Topic, payload and properties: two of "q/x" + "abc".
    assert_eq!(get(&m, "ferrymq_queued_bytes"), 12.0);
    assert_eq!(get(&m, "ferrymq_subscriptions"), 3.0);
    assert_eq!(get(&m, "ferrymq_shared_subscriptions"), 1.0);
    assert_eq!(get(&m, "ferrymq_retained_messages"), 1.0);
    assert_eq!(get(&m, "ferrymq_retained_bytes"), 4.0);
    assert!(
        !m.keys().any(|k| k.starts_with("ferrymq_store_")),
        "no store, no store metrics"
    );
    drop(sub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_time_the_store_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_http(test_config(), TOKEN);
    config.persistence = true;
    config.persistence_location = dir.path().join("store");
    let b = TestBroker::with_config(config).await;
    let mut sleeper = b.client("sleeper", false).await;
    sleeper.subscribe(&[("q/#", QoS::AtLeastOnce)]).await;
    sleeper.disconnect().await;
    let mut publisher = b.client("pub", true).await;
    publisher
        .publish("q/x", b"abc", QoS::AtLeastOnce, false)
        .await;

    let m = metrics_when(b.http_addr(), |m| {
        m.get("ferrymq_store_commit_seconds_count")
            .is_some_and(|n| *n >= 1.0)
    })
    .await;
    // A histogram, consistent with itself.
    let commits = get(&m, "ferrymq_store_commit_seconds_count");
    assert!(commits >= 1.0);
    assert_eq!(
        get(&m, "ferrymq_store_commit_seconds_bucket{le=\"+Inf\"}"),
        commits
    );
    assert!(get(&m, "ferrymq_store_commit_seconds_bucket{le=\"0.0001\"}") <= commits);
    assert!(get(&m, "ferrymq_store_commit_seconds_sum") > 0.0);
    assert!(get(&m, "ferrymq_store_ops_total") >= commits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwd");
    let hash = |pw: &[u8]| {
        ferrymq_auth::PasswordHash::create(pw, ferrymq_auth::Algorithm::default()).unwrap()
    };
    std::fs::write(
        &passwords,
        format!(
            "admin:{}\ndevice:{}\n",
            hash(b"root-pw"),
            hash(b"device-pw")
        ),
    )
    .unwrap();
    let mut config = with_http(test_config(), TOKEN);
    config.password_file = Some(passwords);
    config.http.admin_users = vec!["admin".into()];
    let b = TestBroker::with_config(config).await;
    let http = b.http_addr();
    let basic = |user: &str, pw: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };

    let none = request(http, "GET", "/api/v1/clients", None).await;
    assert_eq!(none.status, 401);
    assert!(none.head.contains("www-authenticate: Bearer"), "{none:?}");
    assert!(none.json()["error"].is_string());
    for wrong in [
        "Bearer not-the-token".to_string(),
        format!("Bearer {TOKEN}x"),
        "Bearer".to_string(),
        basic("admin", "wrong"),
        basic("device", "device-pw"),
        basic("nobody", "root-pw"),
        "Basic !!!not-base64".to_string(),
        "Digest whatever".to_string(),
    ] {
        let reply = request(http, "DELETE", "/api/v1/clients/x", Some(&wrong)).await;
        assert_eq!(reply.status, 401, "{wrong}: {reply:?}");
    }
    assert_eq!(api(http, "GET", "/api/v1/clients").await.status, 200);
    let reply = request(
        http,
        "GET",
        "/api/v1/clients",
        Some(&basic("admin", "root-pw")),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // /metrics is open unless http_metrics_auth is set.
    assert_eq!(request(http, "GET", "/metrics", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_credentials() {
    let mut config = with_http(test_config(), TOKEN);
    config.http.metrics_auth = true;
    let b = TestBroker::with_config(config).await;
    let http = b.http_addr();
    assert_eq!(request(http, "GET", "/metrics", None).await.status, 401);
    let reply = request(http, "GET", "/metrics", Some(&bearer())).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("# TYPE ferrymq_connections gauge"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_clients_subscriptions_and_retained_messages() {
    let b = TestBroker::with_config(with_http(test_config(), TOKEN)).await;
    let http = b.http_addr();

    let (mut alpha, ack) = b
        .connect_with(Protocol::V5, "alpha/1", |c| c.keep_alive = 30)
        .await;
    assert_eq!(ack.reason, ReasonCode::Success);
    alpha
        .subscribe(&[("a/+", QoS::AtLeastOnce), ("$share/g/b", QoS::AtMostOnce)])
        .await;
    let alpha_addr = alpha.stream.local_addr().unwrap();
    // A persistent 3.1.1 session that goes away with a message owed.
    let mut beta = b.client("beta", false).await;
    beta.subscribe(&[("x/#", QoS::AtLeastOnce)]).await;
    beta.disconnect().await;
    alpha.publish("x/1", b"owed", QoS::AtLeastOnce, false).await;
    alpha
        .publish("r/1", b"retained!", QoS::AtLeastOnce, true)
        .await;

    let all = api(http, "GET", "/api/v1/clients").await;
    assert_eq!(all.status, 200, "{all:?}");
    assert!(all.head.contains("application/json"));
    let all = all.json();
    assert_eq!(all["total"], 2);
    let clients = all["clients"].as_array().unwrap();
    let a = &clients[0];
    assert_eq!(a["client_id"], "alpha/1");
    assert_eq!(a["connected"], true);
    assert_eq!(a["address"], alpha_addr.to_string());
    assert_eq!(a["protocol"], "5.0");
    assert_eq!(a["keep_alive"], 30);
    assert_eq!(a["queued"], 0);
    assert!(a["connected_at"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        a["subscriptions"],
        serde_json::json!([
            {"filter": "$share/g/b", "qos": 0},
            {"filter": "a/+", "qos": 1},
        ])
    );
    let beta = &clients[1];
    assert_eq!(beta["client_id"], "beta");
    assert_eq!(beta["connected"], false);
    assert!(beta.get("address").is_none());
    assert_eq!(beta["queued"], 1);
    // "x/1" and "owed": topic and payload.
    assert_eq!(beta["queued_bytes"], 7);
    assert_eq!(beta["inflight"], 0);
    assert_eq!(beta["session_expiry_interval"], serde_json::Value::Null);
    assert_eq!(
        beta["subscriptions"],
        serde_json::json!([{"filter": "x/#", "qos": 1}])
    );

    // One client, its id percent-encoded ('/' in it).
    let one = api(http, "GET", "/api/v1/clients/alpha%2F1").await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json(), clients[0]);
    assert_eq!(api(http, "GET", "/api/v1/clients/nobody").await.status, 404);
    assert_eq!(
        api(http, "GET", "/api/v1/clients?limit=1").await.json()["clients"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let subs = api(http, "GET", "/api/v1/subscriptions").await;
    assert_eq!(subs.status, 200);
    assert_eq!(
        subs.json(),
        serde_json::json!({
            "total": 3,
            "subscriptions": [
                {"client_id": "alpha/1", "filter": "a/+", "qos": 1, "share_group": null},
                {"client_id": "alpha/1", "filter": "b", "qos": 0, "share_group": "g"},
                {"client_id": "beta", "filter": "x/#", "qos": 1, "share_group": null},
            ]
        })
    );

    let retained = api(http, "GET", "/api/v1/retained").await;
    assert_eq!(retained.status, 200);
    assert_eq!(
        retained.json(),
        serde_json::json!({
            "total": 1,
            "retained": [{"topic": "r/1", "qos": 1, "payload_bytes": 9}]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_disconnect_ends_the_connection() {
    let b = TestBroker::with_config(with_http(test_config(), TOKEN)).await;
    let http = b.http_addr();

    // MQTT 5: told why (0x98), then closed; the will is published.
    let mut watcher = b.client("watcher", true).await;
    watcher.subscribe(&[("wills/#", QoS::AtMostOnce)]).await;
    let (mut v5, _) = b
        .connect_with(Protocol::V5, "v5", |c| {
            c.will = Some(ferrymq_testkit::will(
                "wills/v5",
                "gone",
                QoS::AtMostOnce,
                false,
            ))
        })
        .await;
    let reply = api(http, "DELETE", "/api/v1/clients/v5").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.json(),
        serde_json::json!({"client_id": "v5", "disconnected": true})
    );
    let last = v5.expect_closed().await;
    match last.as_slice() {
        [Packet::Disconnect(d)] => assert_eq!(d.reason, ReasonCode::AdministrativeAction),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert_eq!(&watcher.recv_publish().await.payload[..], b"gone");

    // 3.1.1: closed (it has no DISCONNECT from the server); POST form.
    let mut v3 = b.client("v3", false).await;
    let reply = api(http, "POST", "/api/v1/clients/v3/disconnect").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(v3.expect_closed().await.is_empty());

    // Its session is parked now: nothing to disconnect.
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = api(http, "POST", "/api/v1/clients/v3/disconnect").await;
        if reply.status == 409 {
            break;
        }
        assert!(Instant::now() < deadline, "{reply:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        api(http, "DELETE", "/api/v1/clients/ghost").await.status,
        404
    );
    assert_eq!(
        api(http, "GET", "/api/v1/clients/v3/disconnect")
            .await
            .status,
        405
    );

    // The client may come back at once, and its session is there.
    let (mut again, ack) = b
        .connect_with(Protocol::V3_1_1, "v3", |c| c.clean_start = false)
        .await;
    assert!(ack.session_present);
    again.sync().await;

    let m = metrics_when(http, |m| {
        m.get("ferrymq_disconnects_total{reason=\"administrative_action\"}") == Some(&2.0)
    })
    .await;
    assert_eq!(
        get(
            &m,
            "ferrymq_disconnects_total{reason=\"session_taken_over\"}"
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_never_harms_mqtt_clients() {
    let b = TestBroker::with_config(with_http(test_config(), TOKEN)).await;
    let http = b.http_addr();
    let mut mqtt = b.client_v5("bystander", true).await;
    mqtt.subscribe(&[("t", QoS::AtLeastOnce)]).await;

    // Not HTTP at all.
    if let Some(reply) = exchange(http, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00").await {
        assert_eq!(reply.status, 400);
    }
    if let Some(reply) = exchange(http, b"GARBAGE\r\n\r\n").await {
        assert!(reply.status >= 400, "{reply:?}");
    }
    // Headers beyond the limit: refused, never buffered without bound.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    if let Some(reply) = exchange(http, huge.as_bytes()).await {
        assert!(reply.status == 431 || reply.status == 400, "{reply:?}");
    }
    // A body announced and never sent is not waited for.
    let reply = exchange(
        http,
        format!(
            "DELETE /api/v1/clients/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Authorization: Bearer {TOKEN}\r\nContent-Length: 1000000000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 404);
    // Paths and methods that do not exist, bad escapes and limits.
    assert_eq!(api(http, "GET", "/").await.status, 404);
    assert_eq!(api(http, "GET", "/api/v1/nothing").await.status, 404);
    assert_eq!(api(http, "GET", "/api/v1/clients/%zz").await.status, 400);
    assert_eq!(
        api(http, "GET", "/api/v1/clients?limit=0").await.status,
        400
    );
    assert_eq!(api(http, "POST", "/api/v1/clients").await.status, 405);
    assert_eq!(api(http, "POST", "/metrics").await.status, 405);

    // The MQTT side did not notice.
    mqtt.sync().await;
    let mut publisher = b.client("p", true).await;
    publisher
        .publish("t", b"still here", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(&mqtt.recv_publish().await.payload[..], b"still here");
    assert_eq!(request(http, "GET", "/metrics", None).await.status, 200);
}

/// Issue 20, item 4: 70 sockets that each send one request line and stop
/// used to hold all 64 HTTP connections for the 10 s header timeout, and
/// 9 of 12 scrapes failed under a sustained trickle. Idle connections now
/// give way to newcomers (a peer's own first, past its limit): with the
/// trickle going on all along, from the scraper's own address and from
/// others, every scrape is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_gets_through_a_slowloris_flood() {
    let b = TestBroker::with_config(with_http(test_config(), TOKEN)).await;
    let http = b.http_addr();
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let opened = std::sync::Arc::new(AtomicU32::new(0));
    // The flood: from 127.0.0.1 (the scraper's address) and 127.0.0.2..9,
    // each socket half a request, then silence, kept open to the end.
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        tokio::spawn(async move {
            let mut held = Vec::new();
            for n in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let source: std::net::IpAddr = [127, 0, 0, 1 + (n % 9) as u8].into();
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(source, 0)).unwrap();
                if let Ok(Ok(mut stream)) = tokio::time::timeout(WAIT, socket.connect(http)).await {
                    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\n").await;
                    held.push(stream);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                // 70 at once, then a trickle; every socket stays open.
                if n >= 70 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    // 70 first, as the attack described.
    ferrymq_testkit::wait_until("70 sockets are open", || {
        opened.load(Ordering::Relaxed) >= 70
    })
    .await;
    for _ in 0..12 {
        let started = Instant::now();
        let reply = request(http, "GET", "/metrics", None).await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.contains("ferrymq_uptime_seconds"));
        assert!(started.elapsed() < WAIT);
    }
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
}
