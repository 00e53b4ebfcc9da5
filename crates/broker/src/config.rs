//! Broker settings and the `mosquitto.conf`-syntax file that sets them.
//!
//! Every limit that network input can push against has a field here and a
//! safe default. The parser implements the options the broker acts on;
//! every other option Mosquitto documents is classified in [`mosquitto`]
//! (ignored with a warning, or refused); any other word is an error naming
//! the file and line, so a setting that would change security or delivery
//! is never silently ignored.

pub mod listener;
pub mod logging;
pub mod mosquitto;
mod parse;

use std::path::PathBuf;
use std::time::Duration;

pub use listener::{
    default_listeners, ListenerConfig, ListenerProtocol, ListenerSecurity, ProtocolVersions,
    ProxyVersion, TlsVersion,
};

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    /// Connections accepted at once across listeners
    /// (`global_max_connections`; each listener may set its own
    /// `max_connections` too).
    pub max_connections: usize,
    /// `global_max_clients`: sessions (connected and parked) at most; a
    /// CONNECT that would make one more is refused (MQTT 5: 0x89).
    pub global_max_clients: Option<usize>,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet accepted from a client, fixed header included.
    pub max_packet_size: usize,
    /// Outbound QoS 1/2 messages in flight per client (also the Receive
    /// Maximum announced to MQTT 5 clients).
    pub max_inflight_messages: u16,
    /// Messages queued per session beyond those in flight.
    pub max_queued_messages: usize,
    /// Largest keep-alive a client may ask for; 0 means no limit.
    pub max_keepalive: u16,
    /// Period of the `$SYS/broker/...` updates; zero disables them.
    pub sys_interval: Duration,
    /// Prefix of the client identifiers the broker assigns.
    pub auto_id_prefix: String,
    /// `--tls-keylog FILE` (command line only): TLS secrets of every TLS
    /// listener's sessions, appended to FILE for Wireshark.
    pub tls_keylog: Option<PathBuf>,
    /// `pid_file`: where the broker writes its process id.
    pub pid_file: Option<std::path::PathBuf>,
    /// Options accepted but not acted on because ignoring them is harmless
    /// (log cosmetics and the like): each names file, line and option, for
    /// the broker to log at start.
    pub warnings: Vec<String>,
    /// Keep sessions, queued messages and retained messages on disk
    /// (`persistence`; off unless the file says so, as in Mosquitto).
    pub persistence: bool,
    /// `persistence_location`: the directory the store lives in (empty:
    /// the working directory, as in Mosquitto).
    pub persistence_location: std::path::PathBuf,
    /// `persistence_file` (default `mosquitto.db`): the store is the
    /// directory `<persistence_location>/<persistence_file>.ferrymq`, so
    /// that brokers with different values never share one, and none is
    /// mistaken for Mosquitto's own file.
    pub persistence_file: String,
    /// `persistence_commit_window` (microseconds): how long the store
    /// waits after a write before its fsync, to let more writes share it.
    /// Zero (the default): the running fsync is the window.
    pub persistence_commit_window: std::time::Duration,
    /// `allow_anonymous`; when unset, Mosquitto 2's default: allowed only
    /// when the configuration file names no listener (so the broker serves
    /// loopback alone).
    pub allow_anonymous: Option<bool>,
    /// Whether the listeners came from `listener` lines of a file.
    pub listeners_from_file: bool,
    pub password_file: Option<std::path::PathBuf>,
    pub acl_file: Option<std::path::PathBuf>,
    /// `per_listener_settings true`: `allow_anonymous`, `password_file` and
    /// `acl_file` belong to the listener they follow
    /// ([`ListenerConfig::security`]).
    pub per_listener_settings: bool,
    /// `message_size_limit`: largest PUBLISH payload accepted; 0: no limit
    /// beyond `max_packet_size`.
    pub message_size_limit: usize,
    /// `max_queued_bytes`: payload bytes queued per session beyond those
    /// in flight (usize::MAX: no limit).
    pub max_queued_bytes: usize,
    /// `queue_qos0_messages`: QoS 0 messages are queued for persistent
    /// sessions while their client is away.
    pub queue_qos0_messages: bool,
    /// `retain_available false` refuses retained messages.
    pub retain_available: bool,
    /// `allow_zero_length_clientid false`: an empty client id is refused
    /// instead of replaced by an assigned one.
    pub allow_zero_length_clientid: bool,
    /// `persistent_client_expiration`: sessions that would never expire
    /// (3.x without Clean Session, 5.0 with expiry 0xFFFFFFFF) end after
    /// this long away.
    pub persistent_client_expiration: Option<Duration>,
    /// `clientid_prefixes`: only client ids with this prefix may connect.
    pub clientid_prefixes: Option<String>,
    /// `check_retain_source` (default true, as in Mosquitto): a retained
    /// message goes to a new subscriber only while its publisher may still
    /// write its topic (checked when an ACL is in use).
    pub check_retain_source: bool,
    /// `retain_expiry_interval` (minutes in the file): how often retained
    /// messages whose Message Expiry Interval has passed are removed; unset,
    /// they are skipped when read and removed when replaced.
    pub retain_expiry_interval: Option<Duration>,
    /// `memory_limit` (bytes; 0 in the file: none): while the heap (counted
    /// by [`crate::heap::Counting`], which the `ferrymq` binary installs)
    /// is at the limit, new clients are refused and a PUBLISH disconnects
    /// its publisher unacknowledged.
    pub memory_limit: Option<usize>,
    /// `upgrade_outgoing_qos`: deliver at the subscription's QoS even when
    /// the message was published at a lower one (non-standard).
    pub upgrade_outgoing_qos: bool,
    /// `max_queue_stall_ms` (ferrymq): how long a full queue of an online
    /// subscriber may go without progress before its publishers stop
    /// waiting for it and Mosquitto's drop rule applies (0: never wait,
    /// Mosquitto's behaviour).
    pub max_queue_stall: Duration,
    /// `max_store_backlog` (ferrymq): store operations waiting for the
    /// disk beyond which a connection whose own writes wait stops being
    /// read until they are durable.
    pub max_store_backlog: usize,
    /// `max_topic_levels` (ferrymq): the most levels a topic name or
    /// filter may have. A 65,535-byte filter can hold 32,768, and each
    /// level is a node of the topic index; past the limit a SUBSCRIBE
    /// filter is refused (MQTT 5: 0x8F) and a PUBLISH is not routed
    /// (MQTT 5: 0x90). `usize::MAX`: no limit.
    pub max_topic_levels: usize,
    /// `max_subscriptions_per_session` (ferrymq): subscriptions one
    /// session may hold; past it, a SUBSCRIBE's new filters are refused
    /// (MQTT 5: 0x97). `usize::MAX`: no limit.
    pub max_subscriptions_per_session: usize,
    /// `max_filters_per_subscribe` (ferrymq): filters one SUBSCRIBE may
    /// carry; the ones past it are refused (MQTT 5: 0x97), so one packet's
    /// work stays bounded. `usize::MAX`: no limit.
    pub max_filters_per_subscribe: usize,
    /// `log_dest` and `log_type`, for the binary's log subscriber.
    pub logging: logging::Logging,
    /// `http_listener`, `http_admin_token`, `http_admin_user`,
    /// `http_metrics_auth`: the metrics and admin HTTP listener.
    pub http: crate::http::HttpConfig,
}

impl Config {
    /// The store's directory: `<persistence_location>/<persistence_file>.ferrymq`.
    pub fn store_path(&self) -> PathBuf {
        self.persistence_location
            .join(format!("{}.ferrymq", self.persistence_file))
    }

    /// Whether clients without a user name may connect.
    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous.unwrap_or(!self.listeners_from_file)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: Vec::new(),
            max_connections: 100_000,
            global_max_clients: None,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 2_000_000,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            // Mosquitto 2.1's default: no limit.
            max_keepalive: 0,
            sys_interval: Duration::from_secs(10),
            auto_id_prefix: "auto-".into(),
            tls_keylog: None,
            pid_file: None,
            warnings: Vec::new(),
            persistence: false,
            persistence_location: std::path::PathBuf::new(),
            persistence_file: "mosquitto.db".into(),
            persistence_commit_window: std::time::Duration::ZERO,
            allow_anonymous: None,
            listeners_from_file: false,
            password_file: None,
            acl_file: None,
            per_listener_settings: false,
            message_size_limit: 0,
            max_queued_bytes: usize::MAX,
            queue_qos0_messages: false,
            retain_available: true,
            allow_zero_length_clientid: true,
            persistent_client_expiration: None,
            clientid_prefixes: None,
            check_retain_source: true,
            memory_limit: None,
            retain_expiry_interval: None,
            upgrade_outgoing_qos: false,
            max_queue_stall: Duration::from_secs(5),
            max_store_backlog: 128 * 1024,
            max_topic_levels: 128,
            max_subscriptions_per_session: 10_000,
            max_filters_per_subscribe: 1_000,
            logging: logging::Logging::default(),
            http: crate::http::HttpConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
}
