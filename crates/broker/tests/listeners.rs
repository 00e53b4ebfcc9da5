//! Options Mosquitto sets per listener act on that listener alone (issue
//! 15): two listeners of one file, each with its own values, driven over
//! real sockets.

use ferrymq_broker::{Config, Server};
use ferrymq_codec::{Protocol, QoS, ReasonCode};
use ferrymq_testkit::{connect, raw, TestClient, WAIT};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(text: &str) -> (Server, Vec<SocketAddr>) {
    let mut config = Config::parse(text, "listeners.conf").unwrap();
    config.sys_interval = std::time::Duration::ZERO;
    let server = Server::start(config).await.unwrap();
    let addrs = server.local_addrs().to_vec();
    (server, addrs)
}

async fn connack(
    addr: SocketAddr,
    protocol: Protocol,
    id: &str,
    user: Option<&str>,
) -> ferrymq_codec::ConnAck {
    let mut c = TestClient::connect(addr, protocol).await;
    let mut conn = connect(protocol, id, true);
    conn.username = user.map(|u| u.try_into().unwrap());
    c.handshake(conn).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_keeps_its_own_settings() {
    let (server, addrs) = start(
        "allow_anonymous true\n\
         listener 0 127.0.0.1\n\
         accept_protocol_versions 5\n\
         max_qos 1\n\
         listener_auto_id_prefix first-\n\
         max_topic_alias 0\n\
         listener 0 127.0.0.1\n\
         listener_allow_anonymous false\n\
         listener 0 127.0.0.1\n",
    )
    .await;
    let (first, second, third) = (addrs[0], addrs[1], addrs[2]);

    // accept_protocol_versions: 3.1.1 is refused with return code 1,
    // 5.0 is taken; the other listener takes both.
    let ack = connack(first, Protocol::V3_1_1, "a", None).await;
    assert_eq!(ack.reason, ReasonCode::UnsupportedProtocolVersion);
    let ack = connack(first, Protocol::V5, "", None).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    // max_qos, max_topic_alias and the id prefix are the first listener's.
    assert_eq!(ack.properties.maximum_qos(), Some(1));
    assert_eq!(ack.properties.topic_alias_maximum(), None);
    let id = ack.properties.assigned_client_identifier().unwrap();
    assert!(id.as_str().starts_with("first-"), "{id:?}");

    // listener_allow_anonymous false overrides allow_anonymous true on
    // the second listener only (without a password file a user name does
    // not help, as in Mosquitto).
    let ack = connack(second, Protocol::V3_1_1, "b", None).await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    let ack = connack(second, Protocol::V5, "b", Some("someone")).await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    // The third listener has the defaults.
    let ack = connack(third, Protocol::V5, "", None).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    assert_eq!(ack.properties.maximum_qos(), None);
    assert_eq!(ack.properties.topic_alias_maximum(), Some(10));
    let id = ack.properties.assigned_client_identifier().unwrap();
    assert!(id.as_str().starts_with("auto-"), "{id:?}");
    let ack = connack(first, Protocol::V5, "c", None).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    server.shutdown().await;
}

/// `listener_allow_anonymous true` opens one listener although the global
/// default (a file with listeners: anonymous refused) stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_allow_anonymous_opens_one_listener() {
    let (server, addrs) = start(
        "listener 0 127.0.0.1\n\
         listener_allow_anonymous true\n\
         listener 0 127.0.0.1\n",
    )
    .await;
    let ack = connack(addrs[0], Protocol::V3_1_1, "a", None).await;
    assert_eq!(ack.reason, ReasonCode::Success);
    let ack = connack(addrs[1], Protocol::V3_1_1, "b", None).await;
    assert_eq!(ack.reason, ReasonCode::NotAuthorized);
    server.shutdown().await;
}

/// Sends `bytes` and reads the reply to a CONNECT: the CONNACK's bytes, or
/// nothing when the broker closes the connection instead.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Option<Vec<u8>> {
    s.write_all(bytes).await.unwrap();
    let mut head = [0u8; 2];
    match tokio::time::timeout(WAIT, s.read_exact(&mut head)).await {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return None,
        Err(_) => panic!("no CONNACK and no close within {WAIT:?}"),
    }
    let mut body = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut body).await.unwrap();
    Some([head.to_vec(), body].concat())
}

const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

/// `listener 0 PATH`: MQTT over a Unix-domain socket, sharing the broker
/// with TCP clients; a stale socket file is replaced, another file never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_listener() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mqtt.sock");
    // A socket left behind by a broker that is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let text = format!(
        "allow_anonymous true\nlistener 0 {}\nlistener 0 127.0.0.1\n",
        path.display()
    );
    let (server, addrs) = start(&text).await;
    assert_eq!(addrs.len(), 1, "the Unix socket has no TCP address");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o770);

    let mut tcp = TestClient::connect(addrs[0], Protocol::V3_1_1).await;
    tcp.handshake(connect(Protocol::V3_1_1, "tcp", true)).await;
    tcp.subscribe(&[("from/unix", QoS::AtLeastOnce)]).await;
    let mut unix = tokio::net::UnixStream::connect(&path).await.unwrap();
    assert_eq!(
        exchange(&mut unix, &raw::connect_v311("unix", 0x02, 60)).await,
        Some(CONNACK_OK.to_vec())
    );
    unix.write_all(&raw::publish_v311(0x02, b"from/unix", Some(1), b"hi"))
        .await
        .unwrap();
    let p = tcp.recv_publish().await;
    assert_eq!(&p.payload[..], b"hi");
    let view = server.broker.registry.view("unix").unwrap();
    assert_eq!(view.connection.unwrap().peer, None);
    server.shutdown().await;
    assert!(!path.exists(), "the socket file is removed at shutdown");

    // Anything but a socket at the path stops the start, and stays.
    std::fs::write(&path, "not a socket").unwrap();
    let config = Config::parse(&text, "m.conf").unwrap();
    let e = Server::start(config).await.unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

/// `max_connections` on a listener: one more connection is accepted and
/// closed at once, and other listeners are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_listener() {
    let (server, addrs) = start(
        "allow_anonymous true\nlistener 0 127.0.0.1\nmax_connections 2\nlistener 0 127.0.0.1\n",
    )
    .await;
    let mut held = Vec::new();
    for id in ["a", "b"] {
        let mut s = TcpStream::connect(addrs[0]).await.unwrap();
        let ack = exchange(&mut s, &raw::connect_v311(id, 0x02, 60)).await;
        assert_eq!(ack, Some(CONNACK_OK.to_vec()));
        held.push(s);
    }
    let mut third = TcpStream::connect(addrs[0]).await.unwrap();
    assert_eq!(
        exchange(&mut third, &raw::connect_v311("c", 0x02, 60)).await,
        None
    );
    let mut other = TcpStream::connect(addrs[1]).await.unwrap();
    let ack = exchange(&mut other, &raw::connect_v311("d", 0x02, 60)).await;
    assert_eq!(ack, Some(CONNACK_OK.to_vec()));
    // A place freed is a place taken.
    drop(held.pop());
    ferrymq_testkit::wait_until("b's connection ends", || {
        server
            .broker
            .registry
            .view("b")
            .is_none_or(|v| v.connection.is_none())
    })
    .await;
    let mut again = TcpStream::connect(addrs[0]).await.unwrap();
    let ack = exchange(&mut again, &raw::connect_v311("e", 0x02, 60)).await;
    assert_eq!(ack, Some(CONNACK_OK.to_vec()));
    server.shutdown().await;
}

/// `bind_interface lo`: the listener binds the loopback interface's
/// addresses; an interface that does not exist stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_interface_binds_the_interfaces_addresses() {
    let (server, addrs) = start("allow_anonymous true\nlistener 0\nbind_interface lo\n").await;
    assert!(!addrs.is_empty());
    for addr in &addrs {
        assert!(addr.ip().is_loopback(), "{addr}");
    }
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    let ack = exchange(&mut s, &raw::connect_v311("lo", 0x02, 60)).await;
    assert_eq!(ack, Some(CONNACK_OK.to_vec()));
    server.shutdown().await;

    let config =
        Config::parse("listener 0\nbind_interface ferrymq-no-such-if0\n", "m.conf").unwrap();
    let e = Server::start(config).await.unwrap_err();
    assert!(e.to_string().contains("ferrymq-no-such-if0"), "{e}");
    // An address on the listener line must be the interface's.
    let config = Config::parse("listener 0 192.0.2.1\nbind_interface lo\n", "m.conf").unwrap();
    assert!(Server::start(config).await.is_err());
}

/// The peer a PROXY header names, as the registry keeps it.
fn peer_of(server: &Server, id: &str) -> Option<SocketAddr> {
    server.broker.registry.view(id)?.connection?.peer
}

/// `enable_proxy_protocol 1`: the text header names the client; the bytes
/// behind it (sent in the same segment) are the client's CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_version_1() {
    let (server, addrs) =
        start("allow_anonymous true\nlistener 0 127.0.0.1\nenable_proxy_protocol 1\n").await;
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    let mut bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883\r\n".to_vec();
    bytes.extend(raw::connect_v311("behind", 0x02, 60));
    assert_eq!(exchange(&mut s, &bytes).await, Some(CONNACK_OK.to_vec()));
    assert_eq!(
        peer_of(&server, "behind"),
        Some("192.0.2.7:56324".parse().unwrap())
    );
    // No header, or a broken one: closed without an answer.
    for bad in [
        raw::connect_v311("x", 0x02, 60),
        b"PROXY TCP4 192.0.2.7\r\n".to_vec(),
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 1883 and more and more and more and more \
          and more and more and more and more\r\n"
            .to_vec(),
    ] {
        let mut s = TcpStream::connect(addrs[0]).await.unwrap();
        assert_eq!(exchange(&mut s, &bad).await, None);
    }
    // UNKNOWN keeps the socket's own peer.
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    let mut bytes = b"PROXY UNKNOWN\r\n".to_vec();
    bytes.extend(raw::connect_v311("unknown", 0x02, 60));
    assert_eq!(exchange(&mut s, &bytes).await, Some(CONNACK_OK.to_vec()));
    assert_eq!(peer_of(&server, "unknown"), Some(s.local_addr().unwrap()));
    server.shutdown().await;
}

/// The PP2_TYPE_SSL TLV: client connected over TLS with a certificate the
/// proxy verified, Common Name `cn`.
fn ssl_tlv(verified: bool, cn: Option<&str>) -> Vec<u8> {
    let mut ssl = vec![if verified { 0x07 } else { 0x01 }, 0, 0, 0, 0];
    if let Some(cn) = cn {
        ssl.push(0x22);
        ssl.extend((cn.len() as u16).to_be_bytes());
        ssl.extend(cn.as_bytes());
    }
    let mut tlv = vec![0x20];
    tlv.extend((ssl.len() as u16).to_be_bytes());
    tlv.extend(ssl);
    tlv
}

/// `enable_proxy_protocol 2` with `proxy_protocol_v2_require_tls`,
/// `require_certificate` and `use_identity_as_username`: the proxy's TLS
/// is the client's, its certificate's CN the user name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_version_2_with_the_proxys_tls() {
    use ferrymq_broker::net::proxy::v2_header;
    let (server, addrs) = start(
        "allow_anonymous false\n\
         listener 0 127.0.0.1\nenable_proxy_protocol 2\nproxy_protocol_v2_require_tls true\n\
         require_certificate true\nuse_identity_as_username true\n\
         listener 0 127.0.0.1\nenable_proxy_protocol 2\nlistener_allow_anonymous true\n",
    )
    .await;
    let source: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
    let dest: SocketAddr = "[2001:db8::1]:8883".parse().unwrap();
    let with = |tlv: &[u8], id: &str| {
        let mut bytes = v2_header(source, dest, tlv);
        bytes.extend(raw::connect_v311(id, 0x02, 60));
        bytes
    };
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    let ack = exchange(&mut s, &with(&ssl_tlv(true, Some("sensor-7")), "dev")).await;
    assert_eq!(ack, Some(CONNACK_OK.to_vec()));
    let view = server.broker.registry.view("dev").unwrap();
    let connection = view.connection.unwrap();
    assert_eq!(connection.peer, Some(source));
    assert_eq!(connection.username.as_deref(), Some("sensor-7"));
    // Without TLS, or without a verified certificate: closed.
    for tlv in [vec![], ssl_tlv(false, Some("sensor-7"))] {
        let mut s = TcpStream::connect(addrs[0]).await.unwrap();
        assert_eq!(exchange(&mut s, &with(&tlv, "no")).await, None);
    }
    // The LOCAL command is refused, as Mosquitto refuses it.
    let mut local = with(&[], "local");
    local[12] = 0x20;
    let mut s = TcpStream::connect(addrs[0]).await.unwrap();
    assert_eq!(exchange(&mut s, &local).await, None);
    // The second listener takes a header without TLS.
    let mut s = TcpStream::connect(addrs[1]).await.unwrap();
    let ack = exchange(&mut s, &with(&[], "plain")).await;
    assert_eq!(ack, Some(CONNACK_OK.to_vec()));
    assert_eq!(peer_of(&server, "plain"), Some(source));
    server.shutdown().await;
}

/// A PROXY header in front of a WebSocket upgrade, and `websockets_origin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_and_websocket_origins() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let (server, addrs) = start(
        "allow_anonymous true\nlistener 0 127.0.0.1\nprotocol websockets\n\
         enable_proxy_protocol 1\nwebsockets_origin https://good.example\n\
         websockets_origin https://also.example\n",
    )
    .await;
    let addr = addrs[0];
    let upgrade = |origin: Option<&'static str>| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PROXY TCP4 192.0.2.9 198.51.100.1 1234 80\r\n")
            .await
            .unwrap();
        let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        if let Some(origin) = origin {
            headers.insert("Origin", HeaderValue::from_static(origin));
        }
        tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, tcp))
            .await
            .unwrap()
    };
    for origin in [
        None,
        Some("https://good.example"),
        Some("https://also.example"),
    ] {
        assert!(upgrade(origin).await.is_ok(), "{origin:?}");
    }
    for origin in ["https://evil.example", "https://good.example.evil", "null"] {
        match upgrade(Some(origin)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{origin}")
            }
            other => panic!("{origin}: {other:?}"),
        }
    }
    server.shutdown().await;
}

/// `mount_point`: a listener's clients live under a prefix: what they
/// publish (and their wills) gets it, their filters (inside a share group
/// too) get it, and what they receive loses it; topics outside it never
/// reach them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_point_confines_a_listener_to_a_prefix() {
    let (server, addrs) = start(
        "allow_anonymous true\nlistener 0 127.0.0.1\nmount_point site-a/\n\
         listener 0 127.0.0.1\n",
    )
    .await;
    let (mounted, plain) = (addrs[0], addrs[1]);
    let client = |addr, id: &'static str| async move {
        let mut c = TestClient::connect(addr, Protocol::V5).await;
        let ack = c.handshake(connect(Protocol::V5, id, true)).await;
        assert_eq!(ack.reason, ReasonCode::Success);
        c
    };
    let mut inside = client(mounted, "inside").await;
    inside
        .subscribe(&[
            ("#", QoS::AtLeastOnce),
            ("$share/g/temp/+", QoS::AtMostOnce),
        ])
        .await;
    let mut outside = client(plain, "outside").await;
    outside.subscribe(&[("#", QoS::AtLeastOnce)]).await;

    // In: a topic under the mount point arrives without it, once for "#"
    // and once through the share group; others never arrive.
    outside
        .publish("temp/1", b"not for site a", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(outside.recv_publish().await.topic.as_str(), "temp/1");
    outside
        .publish("site-a/temp/2", b"for site a", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(outside.recv_publish().await.topic.as_str(), "site-a/temp/2");
    let mut got = vec![
        inside.recv_publish().await.topic.to_string(),
        inside.recv_publish().await.topic.to_string(),
    ];
    got.sort();
    assert_eq!(got, ["temp/2", "temp/2"]);

    // Out: what the mounted client publishes, retained too, carries it.
    inside.publish("r/x", b"kept", QoS::AtLeastOnce, true).await;
    let p = outside.recv_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("site-a/r/x", &b"kept"[..])
    );
    let p = inside.recv_publish().await;
    assert_eq!(p.topic.as_str(), "r/x");
    let mut late = client(mounted, "late").await;
    late.subscribe(&[("r/+", QoS::AtLeastOnce)]).await;
    let p = late.recv_publish().await;
    assert_eq!((p.topic.as_str(), p.retain), ("r/x", true));

    // UNSUBSCRIBE names the filter as the client wrote it.
    let reasons = inside.unsubscribe(&["#", "$share/g/temp/+"]).await;
    assert_eq!(reasons, [ReasonCode::Success, ReasonCode::Success]);

    // A will of a mounted client is published under the mount point.
    let mut dying = TestClient::connect(mounted, Protocol::V3_1_1).await;
    let mut conn = connect(Protocol::V3_1_1, "dying", true);
    conn.will = Some(ferrymq_testkit::will("gone", "bye", QoS::AtMostOnce, false));
    dying.handshake(conn).await;
    drop(dying);
    let p = outside.recv_publish().await;
    assert_eq!(p.topic.as_str(), "site-a/gone");
    server.shutdown().await;
}

/// A PROXY header where none is expected is no CONNECT: closed without an
/// answer. One that never completes is closed at `connect_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_out_of_place_or_unfinished() {
    let mut config = Config::parse(
        "allow_anonymous true\nlistener 0 127.0.0.1\nlistener 0 127.0.0.1\nenable_proxy_protocol 2\n",
        "m.conf",
    )
    .unwrap();
    config.sys_interval = std::time::Duration::ZERO;
    config.connect_timeout = std::time::Duration::from_millis(300);
    let server = Server::start(config).await.unwrap();
    let (plain, proxied) = (server.local_addrs()[0], server.local_addrs()[1]);
    let src: SocketAddr = "192.0.2.1:1000".parse().unwrap();
    for header in [
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1000 1883\r\n".to_vec(),
        ferrymq_broker::net::proxy::v2_header(src, plain, &[]),
    ] {
        let mut s = TcpStream::connect(plain).await.unwrap();
        let mut bytes = header;
        bytes.extend(raw::connect_v311("x", 0x02, 60));
        assert_eq!(exchange(&mut s, &bytes).await, None);
    }
    // Half a header, then silence: closed at the deadline, not held.
    let whole = ferrymq_broker::net::proxy::v2_header(src, proxied, &[]);
    let mut s = TcpStream::connect(proxied).await.unwrap();
    s.write_all(&whole[..20]).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    server.shutdown().await;
}
