//! The connection flags `ferrymq pub`, `sub` and `rr` share (Mosquitto's
//! names), and their resolution into [`ConnectOptions`]: raw clap values
//! in, checked settings out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{ArgAction, Args};
use ferrymq_client::{
    ConnectOptions, LastWill, Properties, Property, Protocol, QoS, TlsOptions, Transport,
};

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Host to connect to.
    #[arg(short = 'h', long = "host", default_value = "localhost")]
    pub host: String,
    /// Port (default 1883, 8883 with TLS).
    #[arg(short = 'p', long = "port")]
    pub port: Option<u16>,
    /// URL: mqtt[s]://[user[:password]@]host[:port]/topic (also ws://, wss://).
    #[arg(short = 'L', long = "url")]
    pub url: Option<String>,
    /// Client id (default: generated).
    #[arg(short = 'i', long = "id")]
    pub id: Option<String>,
    /// Client id prefix; the process id is appended.
    #[arg(short = 'I', long = "id-prefix")]
    pub id_prefix: Option<String>,
    /// Keep-alive in seconds.
    #[arg(short = 'k', long = "keepalive", default_value_t = 60)]
    pub keepalive: u16,
    /// User name.
    #[arg(short = 'u', long = "username")]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw")]
    pub password: Option<String>,
    /// MQTT version: mqttv31, mqttv311 or mqttv5.
    #[arg(short = 'V', long = "protocol-version", default_value = "mqttv311")]
    pub version: String,
    /// MQTT 5 property: -D COMMAND NAME VALUE [VALUE], e.g.
    /// `-D publish user-property key value`. Repeatable.
    #[arg(short = 'D', long = "property", num_args = 3..=4, action = ArgAction::Append,
          value_names = ["COMMAND", "NAME", "VALUE"])]
    pub properties: Vec<String>,
    /// Keep the session (clean session / clean start off).
    #[arg(short = 'c', long = "disable-clean-session")]
    pub no_clean: bool,
    /// MQTT 5 session expiry interval in seconds.
    #[arg(short = 'x', long = "session-expiry-interval")]
    pub session_expiry: Option<u32>,
    #[arg(long = "will-topic")]
    pub will_topic: Option<String>,
    #[arg(long = "will-payload")]
    pub will_payload: Option<String>,
    #[arg(long = "will-qos", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub will_qos: u8,
    #[arg(long = "will-retain")]
    pub will_retain: bool,
    /// CA certificates (PEM) to verify the server with; turns TLS on.
    #[arg(long = "cafile")]
    pub cafile: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long = "cert")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long = "key")]
    pub key: Option<PathBuf>,
    /// Do not verify the server's certificate or name; turns TLS on.
    #[arg(long = "insecure")]
    pub insecure: bool,
    /// WebSocket transport (path /mqtt); with TLS flags, secure WebSocket.
    #[arg(long = "ws")]
    pub ws: bool,
    /// Print what the client does (to stderr).
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// Resolved connection settings.
#[derive(Debug)]
pub struct Connection {
    pub options: ConnectOptions,
    /// The topic given in the -L URL, if any.
    pub url_topic: Option<String>,
    /// -D properties by command (publish, subscribe, disconnect, ...).
    pub properties: HashMap<String, Properties>,
    pub debug: bool,
}

impl Connection {
    pub fn properties_for(&self, command: &str) -> Properties {
        self.properties.get(command).cloned().unwrap_or_default()
    }

    /// Prints a debug line (-d) to stderr.
    pub fn debug(&self, line: impl std::fmt::Display) {
        if self.debug {
            eprintln!("Client {} {line}", self.options.client_id);
        }
    }
}

pub fn parse_qos(q: u8) -> QoS {
    match q {
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtMostOnce,
    }
}

fn parse_version(v: &str) -> anyhow::Result<Protocol> {
    Ok(match v {
        "mqttv31" | "31" | "3.1" => Protocol::V3_1,
        "mqttv311" | "311" | "3.1.1" => Protocol::V3_1_1,
        "mqttv5" | "5" | "5.0" => Protocol::V5,
        other => bail!("unknown protocol version '{other}' (mqttv31, mqttv311 or mqttv5)"),
    })
}

struct Url {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: Option<u16>,
    topic: Option<String>,
}

fn parse_url(url: &str) -> anyhow::Result<Url> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| anyhow!("URL '{url}' has no scheme (mqtt://, mqtts://, ws://, wss://)"))?;
    if !matches!(scheme, "mqtt" | "mqtts" | "ws" | "wss") {
        bail!("unsupported URL scheme '{scheme}' (mqtt, mqtts, ws, wss)");
    }
    let (authority, topic) = match rest.split_once('/') {
        Some((a, t)) => (a, (!t.is_empty()).then(|| t.to_string())),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("bad IPv6 address in URL '{url}'"))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .with_context(|| format!("bad port in URL '{url}'"))
        })
        .transpose()?;
    Ok(Url {
        scheme: scheme.to_string(),
        user,
        password,
        host,
        port,
        topic,
    })
}

impl ConnectArgs {
    /// Resolves the flags; `tool` names the generated client id.
    pub fn resolve(&self, tool: &str) -> anyhow::Result<Connection> {
        let protocol = parse_version(&self.version)?;
        let mut host = self.host.clone();
        let mut port = self.port;
        let mut username = self.username.clone();
        let mut password = self.password.clone();
        let mut scheme = "mqtt".to_string();
        let mut url_topic = None;
        if let Some(url) = &self.url {
            let url = parse_url(url)?;
            host = url.host;
            port = port.or(url.port);
            username = url.user.or(username);
            password = url.password.or(password);
            scheme = url.scheme;
            url_topic = url.topic;
        }
        let tls_flags = self.cafile.is_some() || self.insecure || self.cert.is_some();
        let tls = TlsOptions {
            ca_file: self.cafile.clone(),
            cert_file: self.cert.clone(),
            key_file: self.key.clone(),
            insecure: self.insecure,
            server_name: None,
        };
        let secure = tls_flags || scheme == "mqtts" || scheme == "wss";
        let websocket = self.ws || scheme == "ws" || scheme == "wss";
        let path = "/mqtt".to_string();
        let (transport, default_port) = match (websocket, secure) {
            (false, false) => (Transport::Tcp, 1883),
            (false, true) => (Transport::Tls(tls), 8883),
            (true, false) => (Transport::WebSocket { path }, 80),
            (true, true) => (Transport::SecureWebSocket { path, tls }, 443),
        };
        if self.key.is_some() != self.cert.is_some() {
            bail!("--cert and --key go together");
        }

        let mut properties: HashMap<String, Properties> = HashMap::new();
        if !self.properties.is_empty() && !protocol.is_v5() {
            bail!("-D properties need MQTT 5 (-V mqttv5)");
        }
        // clap hands the values of every -D as one list; each group is
        // COMMAND NAME VALUE, plus a second VALUE for user-property.
        let mut rest = self.properties.as_slice();
        while !rest.is_empty() {
            let len = if rest.get(1).map(String::as_str) == Some("user-property") {
                4
            } else {
                3
            };
            let group = rest.get(..len).unwrap_or(rest);
            let (command, property) = parse_property(group)?;
            properties.entry(command).or_default().push(property);
            rest = rest.get(len..).unwrap_or_default();
        }
        let mut connect_properties = properties.remove("connect").unwrap_or_default();
        if let Some(expiry) = self.session_expiry {
            if protocol.is_v5() {
                connect_properties.set(Property::SessionExpiryInterval(expiry));
            }
        }

        let will = match (&self.will_topic, &self.will_payload) {
            (Some(topic), payload) => Some(LastWill {
                topic: topic.clone(),
                payload: Bytes::from(payload.clone().unwrap_or_default()),
                qos: parse_qos(self.will_qos),
                retain: self.will_retain,
                properties: properties.remove("will").unwrap_or_default(),
            }),
            (None, Some(_)) => bail!("--will-payload needs --will-topic"),
            (None, None) => None,
        };
        if password.is_some() && username.is_none() {
            bail!("a password (-P) needs a user name (-u)");
        }

        let client_id = match (&self.id, &self.id_prefix) {
            (Some(id), _) => id.clone(),
            (None, Some(prefix)) => format!("{prefix}{}", std::process::id()),
            (None, None) => format!("ferrymq_{tool}_{}", std::process::id()),
        };
        if self.no_clean && self.id.is_none() && self.id_prefix.is_none() {
            bail!("a persistent session (-c) needs a client id (-i or -I)");
        }
        let mut options = ConnectOptions::new(host, port.unwrap_or(default_port))
            .protocol(protocol)
            .client_id(client_id)
            .clean_start(!self.no_clean)
            .keep_alive(self.keepalive)
            .transport(transport)
            .properties(connect_properties)
            .connect_timeout(Duration::from_secs(10));
        options.username = username;
        options.password = password.map(Bytes::from);
        options.will = will;
        Ok(Connection {
            options,
            url_topic,
            properties,
            debug: self.debug,
        })
    }
}

/// One -D: COMMAND NAME VALUE [VALUE].
fn parse_property(args: &[String]) -> anyhow::Result<(String, Property)> {
    let [command, name, value, rest @ ..] = args else {
        bail!("-D needs a command, a property name and a value");
    };
    let command = command.to_ascii_lowercase();
    let known = [
        "connect",
        "publish",
        "subscribe",
        "unsubscribe",
        "disconnect",
        "will",
        "auth",
        "puback",
        "pubrec",
        "pubrel",
        "pubcomp",
    ];
    if !known.contains(&command.as_str()) {
        bail!("-D: unknown command '{command}'");
    }
    let s =
        |v: &str| ferrymq_client::MqttString::try_from(v).map_err(|e| anyhow!("-D {name}: {e}"));
    let n = |v: &str| -> anyhow::Result<u32> {
        v.parse::<u32>()
            .with_context(|| format!("-D {name}: '{v}' is not a number"))
    };
    let small = |v: &str| -> anyhow::Result<u16> {
        v.parse::<u16>()
            .with_context(|| format!("-D {name}: '{v}' is not a number up to 65535"))
    };
    let byte = |v: &str| -> anyhow::Result<u8> {
        v.parse::<u8>()
            .with_context(|| format!("-D {name}: '{v}' is not a number up to 255"))
    };
    let property = match name.as_str() {
        "user-property" => {
            let [v2] = rest else {
                bail!("-D {command} user-property needs a key and a value");
            };
            Property::UserProperty(s(value)?, s(v2)?)
        }
        "payload-format-indicator" => Property::PayloadFormatIndicator(byte(value)?),
        "message-expiry-interval" => Property::MessageExpiryInterval(n(value)?),
        "content-type" => Property::ContentType(s(value)?),
        "response-topic" => Property::ResponseTopic(s(value)?),
        "correlation-data" => Property::CorrelationData(Bytes::from(value.clone())),
        "subscription-identifier" => Property::SubscriptionIdentifier(n(value)?),
        "session-expiry-interval" => Property::SessionExpiryInterval(n(value)?),
        "authentication-method" => Property::AuthenticationMethod(s(value)?),
        "authentication-data" => Property::AuthenticationData(Bytes::from(value.clone())),
        "request-problem-information" => Property::RequestProblemInformation(byte(value)?),
        "will-delay-interval" => Property::WillDelayInterval(n(value)?),
        "request-response-information" => Property::RequestResponseInformation(byte(value)?),
        "reason-string" => Property::ReasonString(s(value)?),
        "receive-maximum" => Property::ReceiveMaximum(small(value)?),
        "topic-alias-maximum" => Property::TopicAliasMaximum(small(value)?),
        "topic-alias" => Property::TopicAlias(small(value)?),
        "maximum-packet-size" => Property::MaximumPacketSize(n(value)?),
        other => bail!("-D: unknown property '{other}'"),
    };
    if name != "user-property" && !rest.is_empty() {
        bail!("-D {command} {name} takes one value");
    }
    Ok((command, property))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_mosquitto_form() {
        let u = parse_url("mqtts://alice:secret@example.org:8884/a/b").unwrap();
        assert_eq!(u.scheme, "mqtts");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.password.as_deref(), Some("secret"));
        assert_eq!(u.host, "example.org");
        assert_eq!(u.port, Some(8884));
        assert_eq!(u.topic.as_deref(), Some("a/b"));
        let u = parse_url("mqtt://[::1]/t").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.port, None);
        assert!(parse_url("http://x").is_err());
    }

    #[test]
    fn properties_from_dash_d() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (c, p) = parse_property(&args(&["publish", "user-property", "k", "v"])).unwrap();
        assert_eq!(c, "publish");
        assert!(matches!(p, Property::UserProperty(..)));
        let (_, p) = parse_property(&args(&["connect", "session-expiry-interval", "60"])).unwrap();
        assert_eq!(p, Property::SessionExpiryInterval(60));
        assert!(parse_property(&args(&["publish", "nonsense", "1"])).is_err());
        assert!(parse_property(&args(&["publish", "topic-alias", "x"])).is_err());
    }
}
