//! One listener's settings: where it listens, what it speaks, and the
//! options Mosquitto sets per listener (those written after its `listener`
//! line, or before any for the default listener).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ferrymq_codec::{Protocol, QoS};

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

/// `enable_proxy_protocol 1|2`: the PROXY protocol header every connection
/// of the listener starts with (HAProxy's text version 1, or binary 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub addr: SocketAddr,
    /// `listener 0 PATH`: a Unix-domain socket at PATH instead of `addr`.
    pub unix: Option<PathBuf>,
    /// Which `listener` line it comes from (0: the default listener): the
    /// sockets of one line share its `max_connections`.
    pub group: usize,
    /// A listener the broker may start without: the default IPv6 loopback
    /// on a machine without IPv6.
    pub optional: bool,
    /// `bind_interface`: bind to this network interface's address.
    pub bind_interface: Option<String>,
    pub protocol: ListenerProtocol,
    /// PEM certificates that client certificates must chain to; also used
    /// to complete the server's own chain.
    pub cafile: Option<PathBuf>,
    /// A directory of PEM CA certificates (`*.pem`, `*.crt` and OpenSSL's
    /// hashed `*.0` links), trusted as `cafile` is.
    pub capath: Option<PathBuf>,
    /// PEM certificate chain of the server: TLS is on when set.
    pub certfile: Option<PathBuf>,
    /// PEM private key of `certfile`.
    pub keyfile: Option<PathBuf>,
    /// `crlfile`: PEM certificate revocation lists for client certificates.
    pub crlfile: Option<PathBuf>,
    /// Clients must present a certificate signed by `cafile`.
    pub require_certificate: bool,
    /// `disable_client_cert_date_checks`: client certificates (and their
    /// CAs) are accepted outside their validity dates.
    pub disable_client_cert_date_checks: bool,
    /// The client certificate's Common Name is the user name; CONNECT's
    /// user name and password are ignored.
    pub use_identity_as_username: bool,
    /// The client certificate's subject (RFC 2253 form) is the user name.
    pub use_subject_as_username: bool,
    pub tls_version: Option<TlsVersion>,
    /// `enable_proxy_protocol`: a PROXY header precedes each connection.
    pub proxy_protocol: Option<ProxyVersion>,
    /// `proxy_protocol_v2_require_tls`: a PROXY v2 header must say the
    /// client connected over TLS.
    pub proxy_protocol_v2_require_tls: bool,
    /// `websockets_origin` (repeatable): the Origin headers a WebSocket
    /// upgrade may carry; none set: any.
    pub websockets_origins: Vec<String>,
    /// `accept_protocol_versions`: the MQTT versions the listener takes.
    pub accept_protocol_versions: ProtocolVersions,
    /// `max_connections`: connections at once on this listener.
    pub max_connections: Option<usize>,
    /// `max_qos`: the highest QoS its clients may use.
    pub max_qos: QoS,
    /// `max_topic_alias`: topic aliases an MQTT 5 client may set.
    pub max_topic_alias: u16,
    /// `max_topic_alias_broker`: topic aliases the broker sets towards a
    /// client, at most (and at most what the client allows).
    pub max_topic_alias_broker: u16,
    /// `use_username_as_clientid`: the user name replaces the client id.
    pub use_username_as_clientid: bool,
    /// `listener_auto_id_prefix`: this listener's prefix of assigned
    /// client ids (the global `auto_id_prefix` when unset).
    pub auto_id_prefix: Option<String>,
    /// `mount_point`: a prefix added to every topic its clients publish
    /// or subscribe to, and removed from what they receive.
    pub mount_point: Option<String>,
    /// This listener's own security settings, with `per_listener_settings
    /// true` (otherwise the file's global ones apply to every listener),
    /// and its `listener_allow_anonymous`.
    pub security: ListenerSecurity,
}

/// `allow_anonymous`, `password_file` and `acl_file` given after a
/// `listener` line with `per_listener_settings true`, and
/// `listener_allow_anonymous` in any case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// With `per_listener_settings true`: unset, refused, as Mosquitto 2
    /// does on a configured listener. Otherwise `listener_allow_anonymous`,
    /// which overrides the global `allow_anonymous` both ways.
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
}

/// Which of MQTT 3.1 (3), 3.1.1 (4) and 5.0 (5) a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolVersions(pub [bool; 3]);

impl Default for ProtocolVersions {
    fn default() -> Self {
        ProtocolVersions([true; 3])
    }
}

impl ProtocolVersions {
    /// Mosquitto's syntax: the levels 3, 4 and 5, separated by commas or
    /// blanks; other words are ignored (as Mosquitto ignores them).
    pub fn parse(value: &str) -> ProtocolVersions {
        let mut accepted = [false; 3];
        for word in value.split([',', ' ', '\t']) {
            match word {
                "3" => accepted[0] = true,
                "4" => accepted[1] = true,
                "5" => accepted[2] = true,
                _ => {}
            }
        }
        ProtocolVersions(accepted)
    }

    pub fn accepts(&self, protocol: Protocol) -> bool {
        let i = usize::from(protocol.level() - 3);
        self.0.get(i).copied().unwrap_or(false)
    }
}

impl ListenerConfig {
    pub fn new(addr: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            addr,
            unix: None,
            group: 0,
            optional: false,
            bind_interface: None,
            protocol: ListenerProtocol::Mqtt,
            cafile: None,
            capath: None,
            certfile: None,
            keyfile: None,
            crlfile: None,
            require_certificate: false,
            disable_client_cert_date_checks: false,
            use_identity_as_username: false,
            use_subject_as_username: false,
            tls_version: None,
            proxy_protocol: None,
            proxy_protocol_v2_require_tls: false,
            websockets_origins: Vec::new(),
            accept_protocol_versions: ProtocolVersions::default(),
            max_connections: None,
            max_qos: QoS::ExactlyOnce,
            max_topic_alias: 10,
            max_topic_alias_broker: 10,
            use_username_as_clientid: false,
            auto_id_prefix: None,
            mount_point: None,
            security: ListenerSecurity::default(),
        }
    }

    /// A listener on a Unix-domain socket at `path`.
    pub fn unix(path: PathBuf) -> ListenerConfig {
        ListenerConfig {
            unix: Some(path),
            ..ListenerConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
        }
    }

    /// Whether connections on this listener start with a TLS handshake.
    pub fn is_tls(&self) -> bool {
        self.certfile.is_some()
    }

    /// Where it listens, for messages: the address, or `unix:PATH`.
    pub fn describe(&self) -> String {
        match &self.unix {
            Some(path) => format!("unix:{}", path.display()),
            None => self.addr.to_string(),
        }
    }

    /// Checks the settings fit together; the message says what to fix.
    pub(super) fn validate(&self) -> Result<(), String> {
        match (&self.certfile, &self.keyfile) {
            (Some(_), None) => return Err("certfile is set but keyfile is not".into()),
            (None, Some(_)) => return Err("keyfile is set but certfile is not".into()),
            _ => {}
        }
        // Behind `enable_proxy_protocol 2` the TLS is the proxy's: its
        // header says whether there was a verified certificate, and whose.
        let proxy_tls = self.proxy_protocol == Some(ProxyVersion::V2);
        if !self.is_tls() {
            let tls_only = [
                ("cafile", self.cafile.is_some()),
                ("capath", self.capath.is_some()),
                ("crlfile", self.crlfile.is_some()),
                (
                    "require_certificate",
                    self.require_certificate && !proxy_tls,
                ),
                (
                    "use_identity_as_username",
                    self.use_identity_as_username && !proxy_tls,
                ),
                ("use_subject_as_username", self.use_subject_as_username),
                ("tls_version", self.tls_version.is_some()),
            ];
            if let Some((name, _)) = tls_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} needs TLS on this listener: set certfile and keyfile"
                ));
            }
        }
        if self.is_tls()
            && self.require_certificate
            && self.cafile.is_none()
            && self.capath.is_none()
        {
            return Err(
                "require_certificate true needs a cafile or capath to verify clients with".into(),
            );
        }
        if self.use_identity_as_username && self.use_subject_as_username {
            return Err(
                "use_identity_as_username and use_subject_as_username exclude each other".into(),
            );
        }
        if proxy_tls {
            // As Mosquitto: the TLS behind a PROXY v2 header is the proxy's.
            if self.is_tls() {
                return Err(
                    "certfile and keyfile cannot be used with `enable_proxy_protocol 2`".into(),
                );
            }
            if self.use_subject_as_username {
                return Err(
                    "use_subject_as_username cannot be used with `enable_proxy_protocol 2`".into(),
                );
            }
        }
        Ok(())
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

/// The sockets of `listener PORT` without an address (or of Mosquitto's
/// default listener): every IPv4 and IPv6 interface.
pub fn every_interface(port: u16) -> Vec<ListenerConfig> {
    [
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    ]
    .into_iter()
    .map(|ip| ListenerConfig::new(SocketAddr::new(ip, port)))
    .collect()
}
