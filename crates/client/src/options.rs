//! What to connect to and how: the server address and transport, the
//! CONNECT fields, the in-flight window and the reconnect policy.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ferrymq_codec::{Properties, Protocol, QoS};

/// How the bytes travel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (`mqtt://`, port 1883).
    Tcp,
    /// TLS over TCP (`mqtts://`, port 8883).
    Tls(TlsOptions),
    /// WebSocket (`ws://`, subprotocol `mqtt`) at `path`.
    WebSocket { path: String },
    /// WebSocket over TLS (`wss://`).
    SecureWebSocket { path: String, tls: TlsOptions },
}

/// TLS settings: trust anchors from a CA file (PEM), an optional client
/// certificate, or no verification at all (`insecure`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate and name (testing only).
    pub insecure: bool,
    /// The name to verify instead of the host (SNI too).
    pub server_name: Option<String>,
}

/// The Will message, published by the server if this client vanishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 Will properties (delay, expiry, content type, ...).
    pub properties: Properties,
}

/// Automatic reconnection after a lost connection: exponential backoff
/// from `initial_delay`, doubling up to `max_delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Reconnect {
    fn default() -> Reconnect {
        Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Everything [`crate::connect`] needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub protocol: Protocol,
    /// Empty: let the server assign one (MQTT 5, or 3.1.1 with a clean
    /// session).
    pub client_id: String,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<LastWill>,
    /// MQTT 5 CONNECT properties (Session Expiry Interval, Receive
    /// Maximum, user properties, ...). Ignored for 3.x.
    pub properties: Properties,
    /// Most QoS 1/2 messages of ours unacknowledged at once; the server's
    /// Receive Maximum lowers it.
    pub max_inflight: u16,
    /// Largest packet accepted from the server.
    pub max_packet_size: usize,
    /// Limit for TCP connect, TLS/WebSocket handshakes and CONNACK.
    pub connect_timeout: Duration,
    /// Reconnect automatically after a lost connection (None: don't).
    pub reconnect: Option<Reconnect>,
    /// Capacity of the queue of received messages.
    pub incoming_capacity: usize,
}

impl ConnectOptions {
    /// MQTT 3.1.1 over TCP, clean session, keep-alive 60 s, no reconnect.
    pub fn new(host: impl Into<String>, port: u16) -> ConnectOptions {
        ConnectOptions {
            host: host.into(),
            port,
            transport: Transport::Tcp,
            protocol: Protocol::V3_1_1,
            client_id: String::new(),
            clean_start: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            properties: Properties::new(),
            max_inflight: 20,
            max_packet_size: 268_435_460,
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
            incoming_capacity: 1024,
        }
    }

    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    pub fn clean_start(mut self, clean: bool) -> Self {
        self.clean_start = clean;
        self
    }

    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.keep_alive = seconds;
        self
    }

    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<Bytes>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    pub fn will(mut self, will: LastWill) -> Self {
        self.will = Some(will);
        self
    }

    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    pub fn properties(mut self, properties: Properties) -> Self {
        self.properties = properties;
        self
    }

    pub fn max_inflight(mut self, n: u16) -> Self {
        self.max_inflight = n.max(1);
        self
    }

    pub fn reconnect(mut self, policy: Option<Reconnect>) -> Self {
        self.reconnect = policy;
        self
    }

    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}
