//! The `mosquitto.conf` parser: one `option value...` a line, `#` comments,
//! `include_dir`, listener sections, Mosquitto 2.1's default listener.
//!
//! Listener options apply to the listener above them. Before any
//! `listener` line, `port`, `bind_address` and the options Mosquitto 2.1
//! lets stand there (`certfile`, `max_connections`, `protocol`, ...) make
//! and apply to the *default listener* (port 1883, every interface), as
//! Mosquitto does. A file with no `listener`, `port` or `bind_address` line
//! runs in local-only mode: whatever the default listener collected is
//! dropped, and the broker listens on loopback alone.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrymq_codec::QoS;

use super::listener::{
    every_interface, ListenerConfig, ListenerProtocol, ProtocolVersions, ProxyVersion, TlsVersion,
};
use super::{logging, mosquitto, Config, ConfigError};

/// What the listener options of a line apply to.
#[derive(Debug, Clone)]
enum Target {
    /// The sockets of a `listener` line, in `Config::listeners`.
    Listener(Range<usize>),
    /// Mosquitto's default listener (kept aside until the end).
    Default,
}

/// The default listener: what `port`, `bind_address` and listener options
/// before any `listener` line set.
#[derive(Debug)]
struct DefaultListener {
    settings: ListenerConfig,
    port: u16,
    host: Option<String>,
    /// `socket_domain`: IPv4 (true) or IPv6 alone.
    family: Option<bool>,
    /// Where it was made, for errors found at the end.
    file: String,
    line: usize,
}

struct Parser {
    config: Config,
    /// The listener the last `listener`, `port` or `bind_address` line (or
    /// a listener option before any) opened, and where.
    current: Option<(Target, String, usize)>,
    default: Option<DefaultListener>,
    /// A `listener`, `port` or `bind_address` line: not local-only.
    explicit: bool,
    per_listener: bool,
    location_set: bool,
    /// `listener` lines so far.
    groups: usize,
}

/// One line being read: its option, arguments and place.
struct Line<'a> {
    file: &'a str,
    number: usize,
    /// The whole line, comments and blanks already excluded.
    text: &'a str,
    option: &'a str,
    args: Vec<&'a str>,
}

impl Line<'_> {
    fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_string(),
            line: self.number,
            message: message.into(),
        }
    }

    fn one(&self) -> Result<&str, ConfigError> {
        match self.args.as_slice() {
            [value] => Ok(value),
            _ => Err(self.err(format!("{} takes exactly one value", self.option))),
        }
    }

    fn number(&self, max: u64) -> Result<u64, ConfigError> {
        let value = self.one()?;
        value
            .parse::<u64>()
            .ok()
            .filter(|v| *v <= max)
            .ok_or_else(|| {
                self.err(format!(
                    "{}: {value:?} is not a number up to {max}",
                    self.option
                ))
            })
    }

    /// A number, where -1 (or, with `zero_unlimited`, 0) means no limit.
    fn limit(&self, zero_unlimited: bool) -> Result<Option<usize>, ConfigError> {
        match self.one()? {
            "-1" => Ok(None),
            _ => {
                let n = self.number(u32::MAX.into())? as usize;
                Ok((n > 0 || !zero_unlimited).then_some(n))
            }
        }
    }

    /// Mosquitto's booleans: `true`, `false`, `1`, `0`.
    fn flag(&self) -> Result<bool, ConfigError> {
        match self.one()? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.err(format!("{}: {other:?} is not true or false", self.option))),
        }
    }

    /// The line's text from its `n`th argument on, inner spaces kept.
    fn rest(&self, n: usize) -> &str {
        let mut rest = self.text;
        for word in std::iter::once(self.option).chain(self.args.iter().take(n).copied()) {
            rest = rest.trim_start();
            rest = rest.strip_prefix(word).unwrap_or(rest);
        }
        rest.trim()
    }

    fn path(&self) -> Result<PathBuf, ConfigError> {
        self.one().map(PathBuf::from)
    }
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
        let lines = expand_includes(text, file)?;
        let mut parser = Parser {
            config: Config::default(),
            current: None,
            default: None,
            explicit: false,
            // Where the security options go depends on this, wherever in
            // the file it stands.
            per_listener: lines.iter().any(|(_, _, text)| {
                let mut words = text.split_whitespace();
                words.next() == Some("per_listener_settings")
                    && matches!(words.next(), Some("true" | "1"))
            }),
            location_set: false,
            groups: 0,
        };
        parser.config.per_listener_settings = parser.per_listener;
        for (file, index, raw) in &lines {
            let text = raw.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            let mut words = text.split_whitespace();
            let line = Line {
                file,
                number: index + 1,
                text,
                option: words.next().unwrap_or_default(),
                args: words.collect(),
            };
            parser.line(&line)?;
        }
        parser.finish()
    }
}

impl Parser {
    /// Applies `set` to the current listener's sockets. `default_ok`: the
    /// option may stand before any listener, where it makes (and applies
    /// to) the default listener, as Mosquitto 2.1 allows.
    fn listener_option(
        &mut self,
        line: &Line<'_>,
        default_ok: bool,
        set: &dyn Fn(&mut ListenerConfig),
    ) -> Result<(), ConfigError> {
        if self.current.is_none() {
            if !default_ok {
                return Err(line.err(format!(
                    "The '{}' option requires a listener to be defined first",
                    line.option
                )));
            }
            self.open_default(line);
        }
        match self.current.as_ref().map(|(t, _, _)| t.clone()) {
            Some(Target::Listener(range)) => {
                for l in self.config.listeners.get_mut(range).unwrap_or_default() {
                    set(l);
                }
            }
            Some(Target::Default) => {
                if let Some(d) = &mut self.default {
                    set(&mut d.settings);
                }
            }
            None => {}
        }
        Ok(())
    }

    /// Makes the default listener if needed, and the current one.
    fn open_default(&mut self, line: &Line<'_>) {
        if self.default.is_none() {
            self.config.warnings.push(format!(
                "{}:{}: a default listener (port 1883) is made for the '{}' option; it is \
                 best practice to define a 'listener' first",
                line.file, line.number, line.option
            ));
            self.default = Some(DefaultListener {
                settings: ListenerConfig::new(SocketAddr::new(
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    1883,
                )),
                port: 1883,
                host: None,
                family: None,
                file: line.file.to_string(),
                line: line.number,
            });
        }
        self.current = Some((Target::Default, line.file.to_string(), line.number));
    }

    /// Checks the listener being left, once all its options are read.
    fn close_listener(&self) -> Result<(), ConfigError> {
        let Some((target, file, line)) = &self.current else {
            return Ok(());
        };
        let settings = match target {
            Target::Listener(range) => self.config.listeners.get(range.start),
            Target::Default => self.default.as_ref().map(|d| &d.settings),
        };
        match settings.map(ListenerConfig::validate) {
            Some(Err(message)) => Err(ConfigError::Invalid {
                file: file.clone(),
                line: *line,
                message: format!("listener: {message}"),
            }),
            _ => Ok(()),
        }
    }

    fn line(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let option = line.option;
        match option {
            "listener" => self.listener(line)?,
            "port" => {
                let port = line.number(u16::MAX.into())? as u16;
                if port == 0 {
                    return Err(line.err(format!("Invalid 'port' value ({port})")));
                }
                self.deprecated(line, "listener PORT");
                self.close_listener()?;
                self.explicit = true;
                self.open_default(line);
                if let Some(d) = &mut self.default {
                    d.port = port;
                }
            }
            "bind_address" => {
                let host = line.one()?.to_string();
                self.deprecated(line, "listener PORT ADDRESS");
                self.close_listener()?;
                self.explicit = true;
                self.open_default(line);
                if let Some(d) = &mut self.default {
                    if d.host.replace(host).is_some() {
                        return Err(line.err(
                            "Duplicate 'default listener bind_address' value in configuration",
                        ));
                    }
                }
            }
            "bind_interface" => {
                let name = line.one()?.to_string();
                if matches!(self.current, None | Some((Target::Default, _, _))) {
                    self.deprecated(line, "bind_interface after a `listener` line");
                }
                self.listener_option(line, true, &|l| l.bind_interface = Some(name.clone()))?;
            }
            "protocol" => {
                let protocol =
                    match line.one()? {
                        "mqtt" => ListenerProtocol::Mqtt,
                        "websockets" => ListenerProtocol::WebSockets,
                        "http_api" => return Err(line.err(
                            "protocol http_api (Mosquitto's HTTP API listener) is not supported: \
                             ferrymq's own HTTP listener is http_listener (metrics and admin API)",
                        )),
                        other => {
                            return Err(
                                line.err(format!("protocol: {other:?} is not mqtt or websockets"))
                            )
                        }
                    };
                self.listener_option(line, true, &|l| l.protocol = protocol)?;
            }
            "cafile" | "capath" | "certfile" | "keyfile" | "crlfile" => {
                let path = line.path()?;
                self.listener_option(line, true, &|l| {
                    let field = match option {
                        "cafile" => &mut l.cafile,
                        "capath" => &mut l.capath,
                        "certfile" => &mut l.certfile,
                        "keyfile" => &mut l.keyfile,
                        _ => &mut l.crlfile,
                    };
                    *field = Some(path.clone());
                })?;
            }
            "require_certificate"
            | "use_identity_as_username"
            | "use_subject_as_username"
            | "use_username_as_clientid"
            | "disable_client_cert_date_checks"
            | "proxy_protocol_v2_require_tls" => {
                let on = line.flag()?;
                let default_ok = !matches!(
                    option,
                    "disable_client_cert_date_checks" | "proxy_protocol_v2_require_tls"
                );
                self.listener_option(line, default_ok, &|l| {
                    let field = match option {
                        "require_certificate" => &mut l.require_certificate,
                        "use_identity_as_username" => &mut l.use_identity_as_username,
                        "use_subject_as_username" => &mut l.use_subject_as_username,
                        "use_username_as_clientid" => &mut l.use_username_as_clientid,
                        "disable_client_cert_date_checks" => &mut l.disable_client_cert_date_checks,
                        _ => &mut l.proxy_protocol_v2_require_tls,
                    };
                    *field = on;
                })?;
            }
            "tls_version" => {
                let version = match line.one()? {
                    "tlsv1.2" => TlsVersion::Tls12,
                    "tlsv1.3" => TlsVersion::Tls13,
                    other => {
                        return Err(line.err(format!(
                            "tls_version: {other:?} is not supported (tlsv1.2 or tlsv1.3)"
                        )))
                    }
                };
                self.listener_option(line, true, &|l| l.tls_version = Some(version))?;
            }
            "max_qos" | "maximum_qos" => {
                let qos = match line.one()? {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    "2" => QoS::ExactlyOnce,
                    other => return Err(line.err(format!("{option}: {other:?} is not 0, 1 or 2"))),
                };
                self.listener_option(line, true, &|l| l.max_qos = qos)?;
            }
            "max_connections" => {
                let limit = line.limit(false)?;
                self.listener_option(line, true, &|l| l.max_connections = limit)?;
            }
            "max_topic_alias" | "max_topic_alias_broker" => {
                let n = line.number(u16::MAX.into())? as u16;
                self.listener_option(line, true, &|l| {
                    if option == "max_topic_alias" {
                        l.max_topic_alias = n;
                    } else {
                        l.max_topic_alias_broker = n;
                    }
                })?;
            }
            "listener_auto_id_prefix" => {
                let prefix = line.one()?.to_string();
                self.listener_option(line, false, &|l| l.auto_id_prefix = Some(prefix.clone()))?;
            }
            "listener_allow_anonymous" => {
                let allow = line.flag()?;
                self.listener_option(line, false, &|l| l.security.allow_anonymous = Some(allow))?;
            }
            "accept_protocol_versions" => {
                if matches!(self.current, Some((Target::Default, _, _)) | None) {
                    return Err(line.err(
                        "The 'accept_protocol_versions' option requires a listener to be defined \
                         first",
                    ));
                }
                if line.args.is_empty() {
                    return Err(line.err("accept_protocol_versions needs a value"));
                }
                let versions = ProtocolVersions::parse(&line.args.join(" "));
                self.listener_option(line, false, &|l| l.accept_protocol_versions = versions)?;
            }
            "mount_point" => {
                let mount = line.one()?.to_string();
                if mount.contains(['+', '#']) {
                    return Err(line.err(format!(
                        "Invalid 'mount_point' value ({mount}). Does it contain a wildcard \
                         character?"
                    )));
                }
                self.listener_option(line, false, &|l| l.mount_point = Some(mount.clone()))?;
            }
            "websockets_origin" => {
                let origin = line.one()?.to_string();
                self.listener_option(line, false, &|l| l.websockets_origins.push(origin.clone()))?;
            }
            "enable_proxy_protocol" => {
                let version = match line.one()? {
                    "1" => ProxyVersion::V1,
                    "2" => ProxyVersion::V2,
                    other if other.parse::<i64>().is_err() => {
                        return Err(line.err("'enable_proxy_protocol' value not a number"))
                    }
                    _ => return Err(line.err("enable_proxy_protocol must be 1 or 2")),
                };
                self.listener_option(line, false, &|l| l.proxy_protocol = Some(version))?;
            }
            "socket_domain" => self.socket_domain(line)?,
            // With per_listener_settings true these belong to the
            // listener above them (and must follow one).
            "allow_anonymous" if self.per_listener => {
                let allow = line.flag()?;
                self.listener_option(line, true, &|l| l.security.allow_anonymous = Some(allow))?;
            }
            "password_file" | "acl_file" if self.per_listener => {
                let path = line.path()?;
                self.listener_option(line, true, &|l| {
                    let field = if option == "password_file" {
                        &mut l.security.password_file
                    } else {
                        &mut l.security.acl_file
                    };
                    *field = Some(path.clone());
                })?;
            }
            _ => self.global(line)?,
        }
        Ok(())
    }

    /// `listener PORT [ADDRESS]`, or `listener 0 PATH` for a Unix socket.
    fn listener(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        self.close_listener()?;
        self.explicit = true;
        let start = self.config.listeners.len();
        self.groups += 1;
        let (port, host) = match line.args.as_slice() {
            [port] => (*port, None),
            // A second word starting with `#` is a comment, as in Mosquitto.
            [port, host, ..] if host.starts_with('#') => (*port, None),
            [port, host] => (*port, Some(*host)),
            _ => return Err(line.err("listener takes PORT [ADDRESS]")),
        };
        let port: u16 = port
            .parse()
            .map_err(|_| line.err(format!("listener: {port:?} is not a port")))?;
        match host {
            // Port 0 with an address: a port the system picks (ferrymq's
            // tests use it); with a path: a Unix socket, as in Mosquitto.
            Some(path) if port == 0 && path.parse::<IpAddr>().is_err() => {
                self.config
                    .listeners
                    .push(ListenerConfig::unix(PathBuf::from(path)));
            }
            Some(host) => {
                for addr in resolve(host, port).map_err(|e| line.err(format!("listener: {e}")))? {
                    self.config.listeners.push(ListenerConfig::new(addr));
                }
            }
            // Mosquitto binds every interface, IPv4 and IPv6.
            None => self.config.listeners.extend(every_interface(port)),
        }
        let range = start..self.config.listeners.len();
        for l in self
            .config
            .listeners
            .get_mut(range.clone())
            .unwrap_or_default()
        {
            l.group = self.groups;
        }
        self.current = Some((Target::Listener(range), line.file.to_string(), line.number));
        Ok(())
    }

    /// `socket_domain ipv4|ipv6`: the current listener keeps one family.
    fn socket_domain(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let v4 = match line.one()? {
            "ipv4" => true,
            "ipv6" => false,
            other => return Err(line.err(format!("socket_domain: {other:?} is not ipv4 or ipv6"))),
        };
        if self.current.is_none() {
            self.open_default(line);
        }
        let Some((Target::Listener(range), file, number)) = self.current.clone() else {
            // The default listener's sockets are made at the end.
            if let Some(d) = &mut self.default {
                d.family = Some(v4);
            }
            return Ok(());
        };
        // The current listener's sockets are the last ones.
        let sockets: Vec<ListenerConfig> = self.config.listeners.drain(range.clone()).collect();
        let kept: Vec<ListenerConfig> = sockets
            .into_iter()
            .filter(|l| l.unix.is_some() || l.addr.is_ipv4() == v4)
            .collect();
        if kept.is_empty() {
            return Err(line.err("socket_domain excludes the only address of this listener"));
        }
        self.config.listeners.extend(kept);
        let range = range.start..self.config.listeners.len();
        self.current = Some((Target::Listener(range), file, number));
        Ok(())
    }

    fn deprecated(&mut self, line: &Line<'_>, instead: &str) {
        self.config.warnings.push(format!(
            "{}:{}: the '{}' option is deprecated and will be removed in Mosquitto 3.0: write \
             `{instead}` instead",
            line.file, line.number, line.option
        ));
    }

    /// Options that are not a listener's.
    fn global(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let config = &mut self.config;
        let option = line.option;
        match option {
            "max_inflight_messages" => {
                // 0 means "no limit" in Mosquitto; the wire limit is 65,535.
                let n = line.number(u16::MAX.into())? as u16;
                config.max_inflight_messages = if n == 0 { u16::MAX } else { n };
            }
            "max_queued_messages" => {
                let n = line.number(u32::MAX.into())? as usize;
                config.max_queued_messages = if n == 0 { usize::MAX } else { n };
            }
            "max_keepalive" => config.max_keepalive = line.number(u16::MAX.into())? as u16,
            "max_packet_size" => {
                let n = line.number(ferrymq_codec::varint::MAX as u64 + 5)? as usize;
                config.max_packet_size = if n == 0 {
                    ferrymq_codec::varint::MAX as usize + 5
                } else {
                    n
                };
            }
            "sys_interval" => {
                config.sys_interval = Duration::from_secs(line.number(u32::MAX.into())?)
            }
            "connect_timeout" => {
                config.connect_timeout = Duration::from_secs(line.number(3600)?.max(1))
            }
            "auto_id_prefix" => config.auto_id_prefix = line.one()?.to_string(),
            "global_max_connections" => {
                if let Some(n) = line.limit(true)? {
                    config.max_connections = config.max_connections.min(n);
                }
            }
            "global_max_clients" => config.global_max_clients = line.limit(true)?,
            "max_queue_stall_ms" => {
                config.max_queue_stall = Duration::from_millis(line.number(3_600_000)?)
            }
            "max_store_backlog" => {
                config.max_store_backlog = (line.number(u32::MAX.into())? as usize).max(1)
            }
            "max_topic_levels" | "max_subscriptions_per_session" | "max_filters_per_subscribe" => {
                let n = line.number(u32::MAX.into())? as usize;
                let n = if n == 0 { usize::MAX } else { n };
                match option {
                    "max_topic_levels" => config.max_topic_levels = n,
                    "max_subscriptions_per_session" => config.max_subscriptions_per_session = n,
                    _ => config.max_filters_per_subscribe = n,
                }
            }
            "message_size_limit" => {
                config.message_size_limit = line.number(ferrymq_codec::varint::MAX as u64)? as usize
            }
            "max_queued_bytes" => {
                let n = line.number(u64::MAX)?;
                config.max_queued_bytes = if n == 0 {
                    usize::MAX
                } else {
                    usize::try_from(n).unwrap_or(usize::MAX)
                };
            }
            "queue_qos0_messages" => config.queue_qos0_messages = line.flag()?,
            "retain_available" => config.retain_available = line.flag()?,
            "allow_zero_length_clientid" => config.allow_zero_length_clientid = line.flag()?,
            "upgrade_outgoing_qos" => config.upgrade_outgoing_qos = line.flag()?,
            "check_retain_source" => config.check_retain_source = line.flag()?,
            "memory_limit" => {
                let bytes = line.number(u64::MAX)?;
                config.memory_limit =
                    (bytes > 0).then(|| usize::try_from(bytes).unwrap_or(usize::MAX));
            }
            "retain_expiry_interval" => {
                let minutes = line.number(u32::MAX.into())?;
                config.retain_expiry_interval =
                    (minutes > 0).then(|| Duration::from_secs(minutes * 60));
            }
            "clientid_prefixes" => config.clientid_prefixes = Some(line.one()?.to_string()),
            "persistent_client_expiration" => {
                let value = line.one()?;
                config.persistent_client_expiration =
                    Some(mosquitto::parse_expiration(value).ok_or_else(|| {
                        line.err(format!(
                            "persistent_client_expiration: {value:?} is not a number followed by \
                             s, h, d, w, m (month) or y"
                        ))
                    })?);
            }
            "log_dest" => self.log_dest(line)?,
            "log_type" => {
                let word = line.one()?;
                let t = logging::LogType::parse(word).ok_or_else(|| {
                    line.err(format!(
                        "log_type: {word:?} is not error, warning, notice, information, debug, \
                         subscribe, unsubscribe, websockets, all or none"
                    ))
                })?;
                self.config.logging.add_type(t);
            }
            "user" => {
                let user = line.one()?;
                if mosquitto::running_as_root() {
                    return Err(line.err(format!(
                        "user {user}: ferrymq does not switch users; started as root it would \
                         keep running as root. Start it as {user} instead (systemd: User={user})"
                    )));
                }
                config.warnings.push(format!(
                    "{}:{}: user {user} is accepted and ignored: ferrymq is not running as root, \
                     where Mosquitto ignores it too",
                    line.file, line.number
                ));
            }
            "persistence" | "retained_persistence" => config.persistence = line.flag()?,
            "persistence_location" => {
                self.location_set = true;
                config.persistence_location = line.path()?;
            }
            "persistence_file" => {
                let name = line.one()?;
                if name.contains('/') || name == "." || name == ".." {
                    return Err(line.err(format!(
                        "persistence_file: {name:?} is a file name, not a path (the directory is \
                         persistence_location)"
                    )));
                }
                config.persistence_file = name.to_string();
            }
            "persistence_commit_window" => {
                let micros: u64 = line
                    .one()?
                    .parse()
                    .ok()
                    .filter(|&n| n <= 1_000_000)
                    .ok_or_else(|| {
                        line.err("persistence_commit_window: microseconds from 0 to 1000000")
                    })?;
                config.persistence_commit_window = Duration::from_micros(micros);
            }
            "allow_anonymous" => config.allow_anonymous = Some(line.flag()?),
            // ferrymq's own metrics and admin listener: crate::http.
            option if crate::http::HttpConfig::OPTIONS.contains(&option) => config
                .http
                .set(option, &line.args)
                .map_err(|m| line.err(m))?,
            "password_file" => config.password_file = Some(line.path()?),
            "acl_file" => config.acl_file = Some(line.path()?),
            // Read before the loop; checked here.
            "per_listener_settings" => {
                line.flag()?;
            }
            "pid_file" => config.pid_file = Some(line.path()?),
            // Every other option Mosquitto documents: warned about or
            // refused by name (see `mosquitto`); anything else is unknown.
            _ => self.documented(line)?,
        }
        Ok(())
    }

    /// An option without an arm of its own, as [`mosquitto::classify`]
    /// decides it.
    fn documented(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        match mosquitto::classify(line.option, &line.args.join(" ")) {
            mosquitto::Outcome::Accept => {}
            mosquitto::Outcome::Warn(message) => {
                self.config
                    .warnings
                    .push(format!("{}:{}: {message}", line.file, line.number));
            }
            mosquitto::Outcome::Refuse(message) => return Err(line.err(message)),
            mosquitto::Outcome::Unknown => {
                return Err(line.err(format!(
                    "unknown option {:?}: Mosquitto 2.1 documents no such option",
                    line.option
                )))
            }
        }
        Ok(())
    }

    fn log_dest(&mut self, line: &Line<'_>) -> Result<(), ConfigError> {
        let config = &mut self.config;
        let dest = match line.args.as_slice() {
            ["stderr"] => Some(logging::LogDest::Stderr),
            // Every line is written out at once anyway.
            ["stdout"] | ["stdout", "unbuffered"] => Some(logging::LogDest::Stdout),
            // The rest of the line is the path, spaces and all, as in Mosquitto.
            ["file", ..] if line.args.len() > 1 => {
                Some(logging::LogDest::File(PathBuf::from(line.rest(1))))
            }
            ["file"] => return Err(line.err("log_dest file needs a path")),
            ["none"] => None,
            [other @ ("syslog" | "topic" | "dlt" | "android")] => {
                config.warnings.push(format!(
                    "{}:{}: log_dest {other} is not supported and is ignored{}",
                    line.file,
                    line.number,
                    if *other == "syslog" {
                        "; logs go to stderr (journald keeps a service's stderr)"
                    } else {
                        ""
                    }
                ));
                (*other == "syslog").then_some(logging::LogDest::Stderr)
            }
            _ => {
                return Err(line.err(format!(
                    "log_dest: {:?} is not stderr, stdout, file PATH, syslog, topic or none",
                    line.args.join(" ")
                )))
            }
        };
        // `topic` and the like add nothing but must not clear.
        if dest.is_some() || line.args.first() == Some(&"none") {
            config.logging.add_dest(dest);
        } else {
            config.logging.dests.get_or_insert_with(Vec::new);
        }
        Ok(())
    }

    /// The end of the file: the default listener's sockets, local-only
    /// mode, the environment.
    fn finish(mut self) -> Result<Config, ConfigError> {
        // In local-only mode the default listener is dropped unchecked.
        if self.explicit {
            self.close_listener()?;
        }
        if let (true, Some(d)) = (self.explicit, self.default.take()) {
            let err = |message: String| ConfigError::Invalid {
                file: d.file.clone(),
                line: d.line,
                message,
            };
            let mut sockets = match &d.host {
                Some(host) => {
                    resolve(host, d.port).map_err(|e| err(format!("bind_address: {e}")))?
                }
                None => every_interface(d.port)
                    .into_iter()
                    .map(|l| l.addr)
                    .collect(),
            };
            // socket_domain on the default listener chose a family.
            if let Some(v4) = d.family {
                sockets.retain(|a| a.is_ipv4() == v4);
            }
            // The default listener comes first, as Mosquitto lists it.
            let made: Vec<ListenerConfig> = sockets
                .into_iter()
                .map(|addr| ListenerConfig {
                    addr,
                    optional: false,
                    ..d.settings.clone()
                })
                .collect();
            self.config.listeners.splice(0..0, made);
        }
        // Local-only mode: no `listener`, `port` or `bind_address` line;
        // what a default listener collected is dropped, as in Mosquitto.
        self.config.listeners_from_file = self.explicit;
        if !self.explicit {
            self.config.listeners.clear();
        }
        // As Mosquitto 2.1: the environment names the location when the
        // file does not (snap and container packaging set it).
        if !self.location_set {
            if let Some(dir) = std::env::var_os("MOSQUITTO_PERSISTENCE_LOCATION") {
                self.config.persistence_location = dir.into();
            }
        }
        Ok(self.config)
    }
}

/// The addresses `host` names (an IP address, or a name resolved as
/// Mosquitto resolves it), with `port`.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host:?} is not an address this machine can resolve: {e}"))?
        .collect();
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("{host:?} resolves to no address"));
    }
    Ok(addrs)
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

    use super::super::*;
    use std::path::Path;

    #[test]
    fn listener_and_limits() {
        let c = Config::parse(
            "# comment\n\nlistener 1884 127.0.0.1\nmax_inflight_messages 5\nmax_queued_messages 0\n",
            "t.conf",
        )
        .unwrap();
        assert_eq!(
            c.listeners,
            vec![ListenerConfig {
                group: 1,
                ..ListenerConfig::new("127.0.0.1:1884".parse().unwrap())
            }]
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
    fn listener_options_before_any_listener_make_the_default_listener() {
        // With a port line: the default listener (every interface) gets them.
        let c = Config::parse(
            "certfile a.pem\nkeyfile a.key\nmax_qos 1\nport 8883\nlistener 1883 127.0.0.1\n",
            "m.conf",
        )
        .unwrap();
        let addrs: Vec<String> = c.listeners.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["0.0.0.0:8883", "[::]:8883", "127.0.0.1:1883"]);
        assert!(c.listeners[0].is_tls() && c.listeners[1].is_tls());
        assert_eq!(c.listeners[0].max_qos, ferrymq_codec::QoS::AtLeastOnce);
        assert!(!c.listeners[2].is_tls());
        assert!(
            c.warnings.iter().any(|w| w.starts_with("m.conf:1: ")),
            "{:?}",
            c.warnings
        );
        assert!(c
            .warnings
            .iter()
            .any(|w| w.starts_with("m.conf:4: ") && w.contains("deprecated")));
        // Without listener, port or bind_address: local-only, and what the
        // default listener collected is dropped, as in Mosquitto.
        let c = Config::parse("max_qos 1\ncertfile a.pem\n", "m.conf").unwrap();
        assert!(c.listeners.is_empty() && !c.listeners_from_file);
        // bind_address alone makes the default listener on port 1883.
        let c = Config::parse("bind_address 127.0.0.1\n", "m.conf").unwrap();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].addr.to_string(), "127.0.0.1:1883");
        // Options that exist only on a listener line still need one.
        for option in [
            "listener_auto_id_prefix p-",
            "listener_allow_anonymous true",
            "accept_protocol_versions 5",
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

    /// Forms Mosquitto 2.1's parser takes beyond its man page.
    #[test]
    fn mosquitto_parser_forms() {
        let c = Config::parse(
            "log_dest file /var/log/my broker/mosquitto.log  \nlog_dest stdout unbuffered\n\
             retained_persistence true\n",
            "m.conf",
        )
        .unwrap();
        assert_eq!(
            c.logging.destinations(),
            vec![
                logging::LogDest::File("/var/log/my broker/mosquitto.log".into()),
                logging::LogDest::Stdout
            ]
        );
        assert!(c.persistence);
        for plugin in [
            "plugin_load dynsec /usr/lib/x.so",
            "listener 1\nplugin_use dynsec",
        ] {
            let e = Config::parse(plugin, "m.conf").unwrap_err().to_string();
            assert!(e.contains("plugins"), "{plugin}: {e}");
        }
    }
}
