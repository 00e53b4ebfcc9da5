//! Broker settings and the `mosquitto.conf`-syntax file that sets them.
//!
//! Every limit that network input can push against has a field here and a
//! safe default. The parser implements the options the broker acts on;
//! every other option Mosquitto documents is classified in [`mosquitto`]
//! (ignored with a warning, or refused); any other word is an error naming
//! the file and line, so a setting that would change security or delivery
//! is never silently ignored.

pub mod logging;
pub mod mosquitto;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a listener speaks on top of TCP (or TLS): `protocol mqtt|websockets`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListenerProtocol {
    #[default]
    Mqtt,
    /// MQTT in binary WebSocket frames, subprotocol `mqtt`.
    WebSockets,
}

/// `tls_version`: the one TLS version a listener accepts (unset: 1.2 and 1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// A listener the broker may start without: the default IPv6 loopback
    /// on a machine without IPv6.
    pub optional: bool,
    pub protocol: ListenerProtocol,
    /// PEM certificates that client certificates must chain to.
    pub cafile: Option<PathBuf>,
    /// A directory of PEM CA certificates (`*.pem`, `*.crt` and OpenSSL's
    /// hashed `*.0` links), trusted as `cafile` is.
    pub capath: Option<PathBuf>,
    /// PEM certificate chain of the server: TLS is on when set.
    pub certfile: Option<PathBuf>,
    /// PEM private key of `certfile`.
    pub keyfile: Option<PathBuf>,
    /// Clients must present a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// The client certificate's Common Name is the user name; CONNECT's
    /// user name and password are ignored.
    pub use_identity_as_username: bool,
    /// The client certificate's subject (RFC 2253 form) is the user name.
    pub use_subject_as_username: bool,
    pub tls_version: Option<TlsVersion>,
    /// This listener's own security settings, with `per_listener_settings
    /// true` (otherwise the file's global ones apply to every listener).
    pub security: ListenerSecurity,
}

/// `allow_anonymous`, `password_file` and `acl_file` given after a
/// `listener` line with `per_listener_settings true`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// Unset: refused, as Mosquitto 2 does on a configured listener.
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
}

impl ListenerConfig {
    pub fn new(addr: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            addr,
            optional: false,
            protocol: ListenerProtocol::Mqtt,
            cafile: None,
            capath: None,
            certfile: None,
            keyfile: None,
            require_certificate: false,
            use_identity_as_username: false,
            use_subject_as_username: false,
            tls_version: None,
            security: ListenerSecurity::default(),
        }
    }

    /// Whether connections on this listener start with a TLS handshake.
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    /// Checks the TLS settings fit together; the message says what to fix.
    fn validate(&self) -> Result<(), String> {
        match (&self.certfile, &self.keyfile) {
            (Some(_), None) => return Err("certfile is set but keyfile is not".into()),
            (None, Some(_)) => return Err("keyfile is set but certfile is not".into()),
            _ => {}
        }
        if !self.is_tls() {
            let tls_only = [
                ("cafile", self.cafile.is_some()),
                ("capath", self.capath.is_some()),
                ("require_certificate", self.require_certificate),
                ("use_identity_as_username", self.use_identity_as_username),
                ("use_subject_as_username", self.use_subject_as_username),
                ("tls_version", self.tls_version.is_some()),
            ];
            if let Some((name, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} needs TLS on this listener: set certfile and keyfile"
                ));
            }
        }
        if self.require_certificate && self.cafile.is_none() && self.capath.is_none() {
            return Err(
                "require_certificate true needs a cafile or capath to verify clients with".into(),
            );
        }
        if self.use_identity_as_username && self.use_subject_as_username {
            return Err(
                "use_identity_as_username and use_subject_as_username exclude each other".into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    /// Connections accepted at once across listeners.
    pub max_connections: usize,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet accepted from a client, fixed header included.
    pub max_packet_size: usize,
    /// Outbound QoS 1/2 messages in flight per client (also the Receive
    /// Maximum announced to MQTT 5 clients).
    pub max_inflight_messages: u16,
    /// Messages queued per session beyond those in flight.
    pub max_queued_messages: usize,
    /// Topic aliases an MQTT 5 client may set (Topic Alias Maximum).
    pub max_topic_alias: u16,
    /// Largest keep-alive a client may ask for; 0 means no limit.
    pub max_keepalive: u16,
    /// Period of the `$SYS/broker/...` updates; zero disables them.
    pub sys_interval: Duration,
    /// Prefix of the client identifiers the broker assigns.
    pub auto_id_prefix: String,
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
    /// `max_qos`: the highest QoS clients may use (Mosquitto sets it per
    /// listener; ferrymq takes one value for all of them).
    pub max_qos: ferrymq_codec::QoS,
    /// `allow_zero_length_clientid false`: an empty client id is refused
    /// instead of replaced by an assigned one.
    pub allow_zero_length_clientid: bool,
    /// `persistent_client_expiration`: sessions that would never expire
    /// (3.x without Clean Session, 5.0 with expiry 0xFFFFFFFF) end after
    /// this long away.
    pub persistent_client_expiration: Option<Duration>,
    /// `use_username_as_clientid`: the user name replaces the client id.
    pub use_username_as_clientid: bool,
    /// `clientid_prefixes`: only client ids with this prefix may connect.
    pub clientid_prefixes: Option<String>,
    /// `upgrade_outgoing_qos`: deliver at the subscription's QoS even when
    /// the message was published at a lower one (non-standard).
    pub upgrade_outgoing_qos: bool,
    /// `max_topic_alias_broker`: topic aliases the broker sets towards an
    /// MQTT 5 client, at most (and at most what the client allows).
    pub max_topic_alias_broker: u16,
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
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 2_000_000,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_topic_alias: 10,
            // Mosquitto 2.1's default: no limit.
            max_keepalive: 0,
            sys_interval: Duration::from_secs(10),
            auto_id_prefix: "auto-".into(),
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
            max_qos: ferrymq_codec::QoS::ExactlyOnce,
            allow_zero_length_clientid: true,
            persistent_client_expiration: None,
            use_username_as_clientid: false,
            clientid_prefixes: None,
            upgrade_outgoing_qos: false,
            max_topic_alias_broker: 10,
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

/// Listeners used when none is configured: loopback only, as Mosquitto 2.
pub fn default_listeners(port: u16) -> Vec<ListenerConfig> {
    vec![
        ListenerConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        ListenerConfig {
            optional: true,
            ..ListenerConfig::new(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port))
        },
    ]
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

impl Config {
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses `mosquitto.conf` syntax: one `option value...` a line, `#`
    /// comments, blank lines ignored; `include_dir DIR` reads every `.conf`
    /// file in DIR, in name order, where it stands (as Mosquitto does).
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        let lines = expand_includes(text, file)?;
        // The listeners the last `listener` line opened (two without an
        // address: IPv4 and IPv6), its line number and file: per-listener
        // options apply to them.
        let mut current: Option<(std::ops::Range<usize>, usize, String)> = None;
        // `listener` lines so far, and the values of listener options that
        // ferrymq applies to every listener (see `check_uniform`).
        let mut groups = 0usize;
        let mut uniform: Vec<mosquitto::UniformSeen> = Vec::new();
        // Where the security options go depends on this, wherever in the
        // file it stands.
        config.per_listener_settings = lines.iter().any(|(_, _, text)| {
            let mut words = text.split_whitespace();
            words.next() == Some("per_listener_settings") && words.next() == Some("true")
        });
        let per_listener = config.per_listener_settings;
        let mut location_set = false;
        for (file, index, raw) in lines.iter().map(|(f, n, t)| (f.as_str(), *n, t.as_str())) {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| ConfigError::Invalid {
                file: file.to_string(),
                line: index + 1,
                message,
            };
            let mut words = line.split_whitespace();
            let option = words.next().unwrap_or_default();
            let args: Vec<&str> = words.collect();
            let one = || -> Result<&str, ConfigError> {
                match args.as_slice() {
                    [value] => Ok(*value),
                    _ => Err(err(format!("{option} takes exactly one value"))),
                }
            };
            let number = |max: u64| -> Result<u64, ConfigError> {
                let value = one()?;
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v <= max)
                    .ok_or_else(|| err(format!("{option}: {value:?} is not a number up to {max}")))
            };
            let flag = || -> Result<bool, ConfigError> {
                match one()? {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(err(format!("{option}: {other:?} is not true or false"))),
                }
            };
            // Per-listener options (Mosquitto: they apply to the listener
            // above them) change every socket of the current listener.
            let listener_option = |config: &mut Config,
                                   set: &dyn Fn(&mut ListenerConfig)|
             -> Result<(), ConfigError> {
                let Some((range, _, _)) = &current else {
                    return Err(err(format!(
                        "{option} applies to a listener: put it after a `listener` line"
                    )));
                };
                for l in config.listeners.get_mut(range.clone()).unwrap_or_default() {
                    set(l);
                }
                Ok(())
            };
            match option {
                "protocol" => {
                    let protocol = match one()? {
                        "mqtt" => ListenerProtocol::Mqtt,
                        "websockets" => ListenerProtocol::WebSockets,
                        "http_api" => {
                            return Err(err(
                                "protocol http_api (Mosquitto's HTTP API listener) is not \
                                 supported"
                                    .into(),
                            ))
                        }
                        other => {
                            return Err(err(format!(
                                "protocol: {other:?} is not mqtt or websockets"
                            )))
                        }
                    };
                    listener_option(&mut config, &|l| l.protocol = protocol)?;
                }
                "cafile" => {
                    let path = PathBuf::from(one()?);
                    listener_option(&mut config, &|l| l.cafile = Some(path.clone()))?;
                }
                "capath" => {
                    let path = PathBuf::from(one()?);
                    listener_option(&mut config, &|l| l.capath = Some(path.clone()))?;
                }
                "certfile" => {
                    let path = PathBuf::from(one()?);
                    listener_option(&mut config, &|l| l.certfile = Some(path.clone()))?;
                }
                "keyfile" => {
                    let path = PathBuf::from(one()?);
                    listener_option(&mut config, &|l| l.keyfile = Some(path.clone()))?;
                }
                "require_certificate" => {
                    let on = flag()?;
                    listener_option(&mut config, &|l| l.require_certificate = on)?;
                }
                "use_identity_as_username" => {
                    let on = flag()?;
                    listener_option(&mut config, &|l| l.use_identity_as_username = on)?;
                }
                "use_subject_as_username" => {
                    let on = flag()?;
                    listener_option(&mut config, &|l| l.use_subject_as_username = on)?;
                }
                "tls_version" => {
                    let version = match one()? {
                        "tlsv1.2" => TlsVersion::Tls12,
                        "tlsv1.3" => TlsVersion::Tls13,
                        other => {
                            return Err(err(format!(
                                "tls_version: {other:?} is not supported (tlsv1.2 or tlsv1.3)"
                            )))
                        }
                    };
                    listener_option(&mut config, &|l| l.tls_version = Some(version))?;
                }
                "listener" => {
                    validate_listener(&config, &current)?;
                    let start = config.listeners.len();
                    config.listeners_from_file = true;
                    let (port, host) = match args.as_slice() {
                        [port] => (*port, None),
                        [port, host] => (*port, Some(*host)),
                        _ => return Err(err("listener takes PORT [ADDRESS]".into())),
                    };
                    let port: u16 = port
                        .parse()
                        .map_err(|_| err(format!("listener: {port:?} is not a port")))?;
                    match host {
                        Some(host) => {
                            let ip: IpAddr = host.parse().map_err(|_| {
                                err(format!("listener: {host:?} is not an IP address"))
                            })?;
                            config
                                .listeners
                                .push(ListenerConfig::new(SocketAddr::new(ip, port)));
                        }
                        None => {
                            // Mosquitto binds every interface, IPv4 and IPv6.
                            for ip in [
                                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                            ] {
                                config
                                    .listeners
                                    .push(ListenerConfig::new(SocketAddr::new(ip, port)));
                            }
                        }
                    }
                    current = Some((start..config.listeners.len(), index + 1, file.to_string()));
                    groups += 1;
                }
                "max_connections" => {
                    let value = one()?;
                    config.max_connections = if value == "-1" {
                        usize::MAX
                    } else {
                        number(u32::MAX.into())? as usize
                    };
                }
                "max_inflight_messages" => {
                    // 0 means "no limit" in Mosquitto; the wire limit is 65,535.
                    let n = number(u16::MAX.into())? as u16;
                    config.max_inflight_messages = if n == 0 { u16::MAX } else { n };
                }
                "max_queued_messages" => {
                    let n = number(u32::MAX.into())? as usize;
                    config.max_queued_messages = if n == 0 { usize::MAX } else { n };
                }
                "max_keepalive" => config.max_keepalive = number(u16::MAX.into())? as u16,
                "max_topic_alias" => config.max_topic_alias = number(u16::MAX.into())? as u16,
                "max_packet_size" => {
                    let n = number(ferrymq_codec::varint::MAX as u64 + 5)? as usize;
                    config.max_packet_size = if n == 0 {
                        ferrymq_codec::varint::MAX as usize + 5
                    } else {
                        n
                    };
                }
                "sys_interval" => {
                    config.sys_interval = Duration::from_secs(number(u32::MAX.into())?)
                }
                "connect_timeout" => {
                    config.connect_timeout = Duration::from_secs(number(3600)?.max(1))
                }
                // 2.1 names the per-listener form listener_auto_id_prefix;
                // ferrymq has one prefix for every listener (cosmetic).
                "auto_id_prefix" | "listener_auto_id_prefix" => {
                    config.auto_id_prefix = one()?.to_string()
                }
                "global_max_connections" => {
                    let value = one()?;
                    if value != "-1" {
                        let n = number(u32::MAX.into())? as usize;
                        config.max_connections = config.max_connections.min(n);
                    }
                }
                "max_queue_stall_ms" => {
                    config.max_queue_stall = Duration::from_millis(number(3_600_000)?)
                }
                "max_store_backlog" => {
                    config.max_store_backlog = (number(u32::MAX.into())? as usize).max(1)
                }
                "max_topic_levels"
                | "max_subscriptions_per_session"
                | "max_filters_per_subscribe" => {
                    let n = number(u32::MAX.into())? as usize;
                    let n = if n == 0 { usize::MAX } else { n };
                    match option {
                        "max_topic_levels" => config.max_topic_levels = n,
                        "max_subscriptions_per_session" => config.max_subscriptions_per_session = n,
                        _ => config.max_filters_per_subscribe = n,
                    }
                }
                "max_topic_alias_broker" => {
                    config.max_topic_alias_broker = number(u16::MAX.into())? as u16
                }
                "message_size_limit" => {
                    config.message_size_limit = number(ferrymq_codec::varint::MAX as u64)? as usize
                }
                "max_queued_bytes" => {
                    let n = number(u64::MAX)?;
                    config.max_queued_bytes = if n == 0 {
                        usize::MAX
                    } else {
                        usize::try_from(n).unwrap_or(usize::MAX)
                    };
                }
                "queue_qos0_messages" => config.queue_qos0_messages = flag()?,
                "retain_available" => config.retain_available = flag()?,
                "allow_zero_length_clientid" => config.allow_zero_length_clientid = flag()?,
                "upgrade_outgoing_qos" => config.upgrade_outgoing_qos = flag()?,
                "clientid_prefixes" => config.clientid_prefixes = Some(one()?.to_string()),
                "persistent_client_expiration" => {
                    let value = one()?;
                    config.persistent_client_expiration =
                        Some(mosquitto::parse_expiration(value).ok_or_else(|| {
                            err(format!(
                                "persistent_client_expiration: {value:?} is not a number \
                                 followed by s, h, d, w, m (month) or y"
                            ))
                        })?);
                }
                // Listener options ferrymq applies to every listener: each
                // listener must give the same value (checked at the end).
                "max_qos" | "use_username_as_clientid" => {
                    let value = one()?.to_string();
                    let parsed_ok = match option {
                        "max_qos" => matches!(value.as_str(), "0" | "1" | "2"),
                        _ => matches!(value.as_str(), "true" | "false"),
                    };
                    if !parsed_ok {
                        return Err(err(format!("{option}: {value:?} is not a valid value")));
                    }
                    listener_option(&mut config, &|_| {})?;
                    uniform.push(mosquitto::UniformSeen {
                        option: if option == "max_qos" {
                            "max_qos"
                        } else {
                            "use_username_as_clientid"
                        },
                        group: groups,
                        value,
                        file: file.to_string(),
                        line: index + 1,
                    });
                }
                "socket_domain" => {
                    let v4 = match one()? {
                        "ipv4" => true,
                        "ipv6" => false,
                        other => {
                            return Err(err(format!(
                                "socket_domain: {other:?} is not ipv4 or ipv6"
                            )))
                        }
                    };
                    let Some((range, line, f)) = current.clone() else {
                        return Err(err(
                            "socket_domain applies to a listener: put it after a `listener` line"
                                .into(),
                        ));
                    };
                    // The current listener's sockets are the last ones.
                    let sockets: Vec<ListenerConfig> =
                        config.listeners.drain(range.clone()).collect();
                    let kept: Vec<ListenerConfig> = sockets
                        .into_iter()
                        .filter(|l| l.addr.is_ipv4() == v4)
                        .collect();
                    if kept.is_empty() {
                        return Err(err(
                            "socket_domain excludes the only address of this listener".into(),
                        ));
                    }
                    config.listeners.extend(kept);
                    current = Some((range.start..config.listeners.len(), line, f));
                }
                "log_dest" => {
                    let dest = match args.as_slice() {
                        ["stderr"] => Some(logging::LogDest::Stderr),
                        ["stdout"] => Some(logging::LogDest::Stdout),
                        ["file", path] => Some(logging::LogDest::File(PathBuf::from(path))),
                        ["file"] => return Err(err("log_dest file needs a path".into())),
                        ["none"] => None,
                        [other @ ("syslog" | "topic" | "dlt" | "android")] => {
                            config.warnings.push(format!(
                                "{file}:{}: log_dest {other} is not supported and is ignored{}",
                                index + 1,
                                if *other == "syslog" {
                                    "; logs go to stderr (journald keeps a service's stderr)"
                                } else {
                                    ""
                                }
                            ));
                            (*other == "syslog").then_some(logging::LogDest::Stderr)
                        }
                        _ => {
                            return Err(err(format!(
                                "log_dest: {:?} is not stderr, stdout, file PATH, syslog, \
                                 topic or none",
                                args.join(" ")
                            )))
                        }
                    };
                    // `topic` and the like add nothing but must not clear.
                    if dest.is_some() || args.first() == Some(&"none") {
                        config.logging.add_dest(dest);
                    } else {
                        config.logging.dests.get_or_insert_with(Vec::new);
                    }
                }
                "log_type" => {
                    let word = one()?;
                    let t = logging::LogType::parse(word).ok_or_else(|| {
                        err(format!(
                            "log_type: {word:?} is not error, warning, notice, information, \
                             debug, subscribe, unsubscribe, websockets, all or none"
                        ))
                    })?;
                    config.logging.add_type(t);
                }
                "user" => {
                    let user = one()?;
                    if mosquitto::running_as_root() {
                        return Err(err(format!(
                            "user {user}: ferrymq does not switch users; started as root it \
                             would keep running as root. Start it as {user} instead (systemd: \
                             User={user})"
                        )));
                    }
                    config.warnings.push(format!(
                        "{file}:{}: user {user} is accepted and ignored: ferrymq is not running \
                         as root, where Mosquitto ignores it too",
                        index + 1
                    ));
                }
                "persistence" => {
                    config.persistence = match one()? {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(err(format!("persistence: {other:?} is not true or false")))
                        }
                    }
                }
                "persistence_location" => {
                    location_set = true;
                    config.persistence_location = one()?.into()
                }
                "persistence_file" => {
                    let name = one()?;
                    if name.contains('/') || name == "." || name == ".." {
                        return Err(err(format!(
                            "persistence_file: {name:?} is a file name, not a path (the \
                             directory is persistence_location)"
                        )));
                    }
                    config.persistence_file = name.to_string();
                }
                "persistence_commit_window" => {
                    let micros: u64 =
                        one()?
                            .parse()
                            .ok()
                            .filter(|&n| n <= 1_000_000)
                            .ok_or_else(|| {
                                err("persistence_commit_window: microseconds from 0 to 1000000"
                                    .to_string())
                            })?;
                    config.persistence_commit_window = std::time::Duration::from_micros(micros);
                }
                // With per_listener_settings true these belong to the
                // listener above them (and must follow one).
                "allow_anonymous" if per_listener => {
                    let allow = flag()?;
                    listener_option(&mut config, &|l| l.security.allow_anonymous = Some(allow))?;
                }
                "password_file" if per_listener => {
                    let path = PathBuf::from(one()?);
                    listener_option(&mut config, &|l| {
                        l.security.password_file = Some(path.clone())
                    })?;
                }
                "acl_file" if per_listener => {
                    let path = PathBuf::from(one()?);
                    listener_option(&mut config, &|l| l.security.acl_file = Some(path.clone()))?;
                }
                "allow_anonymous" => {
                    config.allow_anonymous = Some(match one()? {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(err(format!(
                                "allow_anonymous: {other:?} is not true or false"
                            )))
                        }
                    })
                }
                // ferrymq's own metrics and admin listener: crate::http.
                option if crate::http::HttpConfig::OPTIONS.contains(&option) => {
                    config.http.set(option, &args).map_err(err)?
                }
                "password_file" => config.password_file = Some(one()?.into()),
                "acl_file" => config.acl_file = Some(one()?.into()),
                // Read before the loop; checked here.
                "per_listener_settings" => {
                    flag()?;
                }
                "pid_file" => config.pid_file = Some(one()?.into()),
                // Every other option Mosquitto documents: warned about or
                // refused by name (see `mosquitto`); anything else is unknown.
                other => match mosquitto::classify(other, &args.join(" ")) {
                    mosquitto::Outcome::Accept => {}
                    mosquitto::Outcome::Warn(message) => {
                        config
                            .warnings
                            .push(format!("{file}:{}: {message}", index + 1));
                    }
                    mosquitto::Outcome::Refuse(message) => return Err(err(message)),
                    mosquitto::Outcome::Unknown => {
                        return Err(err(format!(
                            "unknown option {other:?}: Mosquitto 2.1 documents no such option"
                        )))
                    }
                },
            }
        }
        validate_listener(&config, &current)?;
        // As Mosquitto 2.1: the environment names the location when the
        // file does not (snap and container packaging set it).
        if !location_set {
            if let Some(dir) = std::env::var_os("MOSQUITTO_PERSISTENCE_LOCATION") {
                config.persistence_location = dir.into();
            }
        }
        for (option, default) in [("max_qos", "2"), ("use_username_as_clientid", "false")] {
            if let Some(value) = mosquitto::check_uniform(&uniform, option, default, groups)? {
                match option {
                    "max_qos" => {
                        config.max_qos = match value.as_str() {
                            "0" => ferrymq_codec::QoS::AtMostOnce,
                            "1" => ferrymq_codec::QoS::AtLeastOnce,
                            _ => ferrymq_codec::QoS::ExactlyOnce,
                        }
                    }
                    _ => config.use_username_as_clientid = value == "true",
                }
            }
        }
        Ok(config)
    }
}

/// Checks the listener opened at the given line, once all its options are read.
fn validate_listener(
    config: &Config,
    current: &Option<(std::ops::Range<usize>, usize, String)>,
) -> Result<(), ConfigError> {
    let Some((range, line, file)) = current else {
        return Ok(());
    };
    if let Some(l) = config.listeners.get(range.start) {
        l.validate().map_err(|message| ConfigError::Invalid {
            file: file.to_string(),
            line: *line,
            message: format!("listener: {message}"),
        })?;
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        file: path.display().to_string(),
        source,
    })
}

/// (file, line number from 0, text) for every line, with `include_dir`
/// lines replaced by the lines of the `.conf` files they name. Included
/// files may not include further.
fn expand_includes(text: &str, file: &str) -> Result<Vec<(String, usize, String)>, ConfigError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let mut words = raw.split_whitespace();
        if words.next() != Some("include_dir") {
            out.push((file.to_string(), index, raw.to_string()));
            continue;
        }
        let err = |message: String| ConfigError::Invalid {
            file: file.to_string(),
            line: index + 1,
            message,
        };
        let (Some(dir), None) = (words.next(), words.next()) else {
            return Err(err("include_dir takes exactly one directory".into()));
        };
        let entries = std::fs::read_dir(dir).map_err(|e| err(format!("include_dir {dir}: {e}")))?;
        let mut files: Vec<std::path::PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        files.sort();
        for path in files {
            let included = read(&path)?;
            let name = path.display().to_string();
            for (n, line) in included.lines().enumerate() {
                if line.split_whitespace().next() == Some("include_dir") {
                    return Err(ConfigError::Invalid {
                        file: name,
                        line: n + 1,
                        message: "include_dir inside an included file".into(),
                    });
                }
                out.push((name.clone(), n, line.to_string()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn include_dir_reads_conf_files_in_order_and_errors_name_them() {
        let dir = std::env::temp_dir().join(format!("ferrymq-include-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.conf"), "max_queued_messages 7\n").unwrap();
        std::fs::write(
            dir.join("a.conf"),
            "max_queued_messages 3\nmax_keepalive 30\n",
        )
        .unwrap();
        std::fs::write(dir.join("ignored.txt"), "bogus\n").unwrap();
        let main = format!("listener 1883\ninclude_dir {}\n", dir.display());
        let c = Config::parse(&main, "main.conf").unwrap();
        assert_eq!(
            (c.max_queued_messages, c.max_keepalive),
            (7, 30),
            "a.conf then b.conf"
        );
        std::fs::write(dir.join("c.conf"), "\nfrobnicate 1\n").unwrap();
        let e = Config::parse(&main, "main.conf").unwrap_err().to_string();
        assert!(e.contains("c.conf:2:"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    use super::*;

    #[test]
    fn listener_and_limits() {
        let c = Config::parse(
            "# comment\n\nlistener 1884 127.0.0.1\nmax_inflight_messages 5\nmax_queued_messages 0\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(
            c.listeners,
            vec![ListenerConfig::new("127.0.0.1:1884".parse().unwrap())]
        );
        assert_eq!(c.max_inflight_messages, 5);
        assert_eq!(c.max_queued_messages, usize::MAX);
    }

    #[test]
    fn persistence_commit_window_is_microseconds_up_to_a_second() {
        let c = Config::parse("persistence_commit_window 500\n", "t.conf").unwrap();
        assert_eq!(
            c.persistence_commit_window,
            std::time::Duration::from_micros(500)
        );
        assert!(Config::parse("", "t.conf")
            .unwrap()
            .persistence_commit_window
            .is_zero());
        for bad in ["1000001", "-1", "1ms"] {
            let e = Config::parse(&format!("persistence_commit_window {bad}\n"), "t.conf");
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_option_names_file_and_line() {
        let e = Config::parse("listener 1883\nbogus_option 1\n", "m.conf").unwrap_err();
        assert!(e.to_string().starts_with("m.conf:2: "), "{e}");
        let e = Config::parse("max_keepalive 70000\n", "m.conf").unwrap_err();
        assert!(e.to_string().starts_with("m.conf:1: "), "{e}");
    }

    #[test]
    fn options_after_a_listener_apply_to_it() {
        let c = Config::parse(
            "listener 1883 127.0.0.1\n\
             listener 8883\ncertfile s.pem\nkeyfile s.key\ncafile ca.pem\n\
             require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.3\n\
             listener 9001 127.0.0.1\nprotocol websockets\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 4);
        assert!(!c.listeners[0].is_tls());
        for l in &c.listeners[1..3] {
            assert!(l.is_tls());
            assert_eq!(l.cafile.as_deref(), Some(Path::new("ca.pem")));
            assert!(l.require_certificate && l.use_identity_as_username);
            assert_eq!(l.tls_version, Some(TlsVersion::Tls13));
            assert_eq!(l.protocol, ListenerProtocol::Mqtt);
        }
        assert_eq!(c.listeners[3].protocol, ListenerProtocol::WebSockets);
        assert!(!c.listeners[3].is_tls());
    }

    #[test]
    fn listener_options_without_a_listener_name_file_and_line() {
        for option in [
            "protocol websockets",
            "certfile a.pem",
            "keyfile a.key",
            "cafile ca.pem",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
        ] {
            let e = Config::parse(&format!("# x\n{option}\n"), "m.conf").unwrap_err();
            assert!(e.to_string().starts_with("m.conf:2: "), "{e}");
            assert!(e.to_string().contains("listener"), "{e}");
        }
    }

    #[test]
    fn inconsistent_tls_settings_are_refused() {
        for (text, line) in [
            ("listener 1\ncertfile a\n", 1),
            ("listener 1\ncafile a\nlistener 2\n", 1),
            (
                "listener 1\ncertfile a\nkeyfile b\nrequire_certificate true\n",
                1,
            ),
            ("listener 1\nlistener 2\ntls_version tlsv1.2\n", 2),
            ("listener 1\ntls_version tlsv1.1\n", 2),
            ("listener 1\ncapath /etc/ssl\n", 1),
            ("listener 1\nprotocol http\n", 2),
        ] {
            let e = Config::parse(text, "m.conf").unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("m.conf:{line}: ")),
                "{text:?}: {e}"
            );
        }
    }
}
