//! Broker settings and the `mosquitto.conf`-syntax file that sets them.
//!
//! Every limit that network input can push against has a field here and a
//! safe default. The parser understands the options the broker implements;
//! any other word is an error naming the file and line, so a setting that
//! would change security or delivery is never silently ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// A listener the broker may start without: the default IPv6 loopback
    /// on a machine without IPv6.
    pub optional: bool,
}

impl ListenerConfig {
    pub fn new(addr: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            addr,
            optional: false,
        }
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
    /// Keep sessions, queued messages and retained messages on disk.
    pub persistence: bool,
    /// Directory of the store.
    pub persistence_location: std::path::PathBuf,
    /// `allow_anonymous`; when unset, Mosquitto 2's default: allowed only
    /// when the configuration file names no listener (so the broker serves
    /// loopback alone).
    pub allow_anonymous: Option<bool>,
    /// Whether the listeners came from `listener` lines of a file.
    pub listeners_from_file: bool,
    pub password_file: Option<std::path::PathBuf>,
    pub acl_file: Option<std::path::PathBuf>,
}

impl Config {
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
            max_keepalive: 65_535,
            sys_interval: Duration::from_secs(10),
            auto_id_prefix: "auto-".into(),
            persistence: true,
            persistence_location: "ferrymq-data".into(),
            allow_anonymous: None,
            listeners_from_file: false,
            password_file: None,
            acl_file: None,
        }
    }
}

/// Listeners used when none is configured: loopback only, as Mosquitto 2.
pub fn default_listeners(port: u16) -> Vec<ListenerConfig> {
    vec![
        ListenerConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        ListenerConfig {
            addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            optional: true,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses `mosquitto.conf` syntax: one `option value...` a line, `#`
    /// comments, blank lines ignored.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (index, raw) in text.lines().enumerate() {
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
            match option {
                "listener" => {
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
                "auto_id_prefix" => config.auto_id_prefix = one()?.to_string(),
                "persistence" => {
                    config.persistence = match one()? {
                        "true" => true,
                        "false" => false,
                        other => {
                            return Err(err(format!("persistence: {other:?} is not true or false")))
                        }
                    }
                }
                "persistence_location" => config.persistence_location = one()?.into(),
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
                "password_file" => config.password_file = Some(one()?.into()),
                "acl_file" => config.acl_file = Some(one()?.into()),
                "per_listener_settings" => {
                    if one()? != "false" {
                        return Err(err(
                            "per_listener_settings true is not supported yet: security settings \
                             would apply to every listener"
                                .into(),
                        ));
                    }
                }
                // Mosquitto snapshots every autosave_interval; ferrymq writes
                // every acknowledged change before acknowledging it, so
                // these have nothing to tune. Accepted for compatibility.
                "autosave_interval" | "autosave_on_changes" | "persistence_file" => {
                    one()?;
                }
                other => {
                    return Err(err(format!(
                        "unknown or not yet supported option {other:?}"
                    )))
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
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
    fn unknown_option_names_file_and_line() {
        let e = Config::parse("listener 1883\nbogus_option 1\n", "m.conf").unwrap_err();
        assert!(e.to_string().starts_with("m.conf:2: "), "{e}");
        let e = Config::parse("max_keepalive 70000\n", "m.conf").unwrap_err();
        assert!(e.to_string().starts_with("m.conf:1: "), "{e}");
    }
}
