//! Every option Mosquitto 2.1's `mosquitto.conf(5)` documents, and what
//! ferrymq does with it. The policy (docs/architecture.md, "Configuration"):
//!
//! - **implemented**: `Config::parse` has a match arm for it;
//! - **ignored with a warning** naming file and line, where ignoring it
//!   changes neither security nor what is delivered (log cosmetics, buffer
//!   sizes, snapshot timing ferrymq has no use for);
//! - **refused** with one error naming file, line and why, where ignoring it
//!   would change security or delivery (plugins, PSK, bridges, ...).
//!
//! Some options are harmless at one value (the one ferrymq always behaves
//! as, usually Mosquitto's default) and not at others: those carry that
//! value and are accepted silently when set to it.
//!
//! A word in none of these lists is an error naming file and line. The
//! unit test in `config.rs` walks [`DOCUMENTED`] so no option falls back
//! to "unknown".

/// What ferrymq does with one documented option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// `Config::parse` implements it.
    Implemented,
    /// Accepted with a warning giving the reason it is harmless.
    Warn(&'static str),
    /// Accepted silently at the given value (ferrymq's behaviour), with a
    /// warning at any other.
    WarnUnless(&'static str, &'static str),
    /// Refused, with the reason.
    Refuse(&'static str),
    /// Accepted silently at the given value, refused at any other.
    RefuseUnless(&'static str, &'static str),
    /// A bridge option: refused, since ferrymq has no bridges yet.
    Bridge,
}

use std::time::Duration;

use Handling::*;

const PLUGINS: &str = "ferrymq does not load Mosquitto plugins; authentication and ACLs come \
                       from password_file and acl_file";
const PSK: &str = "TLS-PSK is not supported (rustls has no PSK cipher suites): use \
                   certificates (certfile/keyfile, cafile, require_certificate)";
const LOG_COSMETICS: &str = "log format and routing are set by log_dest and log_type; this one \
                             changes only how lines look";

/// Every option of `mosquitto.conf(5)` (Mosquitto 2.1), plus a few older
/// ones still found in configuration files, with their handling.
pub const DOCUMENTED: &[(&str, Handling)] = &[
    // ---- General options ----
    ("acl_file", Implemented),
    ("allow_anonymous", Implemented),
    (
        "allow_duplicate_messages",
        Warn("ferrymq always sends a client one copy of a message that matches several of its subscriptions"),
    ),
    ("allow_zero_length_clientid", Implemented),
    (
        "auth_plugin_deny_special_chars",
        Warn("it applies to plugins, which ferrymq does not load; its ACL patterns already refuse ids holding + # or /"),
    ),
    ("auto_id_prefix", Implemented),
    (
        "autosave_interval",
        Warn("ferrymq writes every acknowledged change to its store before acknowledging it, so there is no snapshot to time"),
    ),
    (
        "autosave_on_changes",
        Warn("ferrymq writes every acknowledged change to its store before acknowledging it, so there is no snapshot to time"),
    ),
    ("check_retain_source", Implemented),
    ("clientid_prefixes", Implemented),
    (
        "connection_messages",
        WarnUnless("true", "connect and disconnect lines are logged at the information level; use log_type to hide them"),
    ),
    (
        "enable_control_api",
        RefuseUnless("false", "the $CONTROL/broker/v1 API is not implemented"),
    ),
    ("global_max_clients", Implemented),
    ("global_max_connections", Implemented),
    ("global_plugin", Refuse(PLUGINS)),
    ("include_dir", Implemented),
    ("log_dest", Implemented),
    ("log_facility", Warn("syslog is not supported; logs go to the other log_dest destinations")),
    ("log_timestamp", Warn(LOG_COSMETICS)),
    ("log_timestamp_format", Warn(LOG_COSMETICS)),
    ("log_type", Implemented),
    (
        "max_inflight_bytes",
        WarnUnless("0", "the in-flight window is counted in messages (max_inflight_messages), not bytes; every message is still delivered"),
    ),
    ("max_inflight_messages", Implemented),
    ("max_keepalive", Implemented),
    ("max_packet_size", Implemented),
    ("max_queued_bytes", Implemented),
    ("max_queued_messages", Implemented),
    ("memory_limit", Implemented),
    ("message_size_limit", Implemented),
    ("password_file", Implemented),
    ("per_listener_settings", Implemented),
    ("persistence", Implemented),
    // An undocumented alias of `persistence` Mosquitto's parser accepts.
    ("retained_persistence", Implemented),
    ("persistence_file", Implemented),
    ("persistence_location", Implemented),
    ("persistent_client_expiration", Implemented),
    ("pid_file", Implemented),
    ("plugin", Refuse(PLUGINS)),
    // Mosquitto 2.1's named plugins: loaded once, used per listener.
    ("plugin_load", Refuse(PLUGINS)),
    ("plugin_use", Refuse(PLUGINS)),
    ("auth_plugin", Refuse(PLUGINS)),
    ("psk_file", Refuse(PSK)),
    ("queue_qos0_messages", Implemented),
    ("retain_available", Implemented),
    ("retain_expiry_interval", Implemented),
    ("set_tcp_nodelay", WarnUnless("true", "TCP_NODELAY is always on")),
    ("sys_interval", Implemented),
    ("upgrade_outgoing_qos", Implemented),
    // Handled in `user_option`: it matters only when started as root.
    ("user", Implemented),
    // Removed from Mosquitto 2 but common in older files (Mosquitto warns
    // about `retry_interval` and refuses `store_clean_interval`; both are
    // harmless to ignore).
    ("retry_interval", Warn("Mosquitto 2 removed it: messages are resent on reconnect only, as MQTT 3.1.1 and 5 require")),
    ("store_clean_interval", Warn("Mosquitto 2 removed it")),
    // ---- Listeners: general options ----
    ("accept_protocol_versions", Implemented),
    ("bind_address", Implemented),
    ("bind_interface", Implemented),
    ("enable_proxy_protocol", Implemented),
    (
        "http_dir",
        Warn("ferrymq serves no static HTTP files; MQTT over WebSocket works without them"),
    ),
    ("listener", Implemented),
    ("listener_allow_anonymous", Implemented),
    ("listener_auto_id_prefix", Implemented),
    ("max_connections", Implemented),
    ("max_qos", Implemented),
    ("max_topic_alias", Implemented),
    ("max_topic_alias_broker", Implemented),
    ("mount_point", Implemented),
    (
        "mptcp",
        WarnUnless("false", "Multipath TCP is not enabled; clients connect over plain TCP, as Mosquitto falls back to"),
    ),
    ("port", Implemented),
    ("protocol", Implemented),
    ("proxy_protocol_v2_require_tls", Implemented),
    ("socket_domain", Implemented),
    ("use_username_as_clientid", Implemented),
    (
        "packet_buffer_size",
        Warn("ferrymq sizes its read buffers itself"),
    ),
    (
        "websockets_headers_size",
        Warn("ferrymq sizes its WebSocket handshake buffer itself"),
    ),
    ("websockets_log_level", Warn("use log_type websockets")),
    ("websockets_origin", Implemented),
    // ---- Listeners: certificate based TLS ----
    ("cafile", Implemented),
    ("capath", Implemented),
    ("certfile", Implemented),
    (
        "ciphers",
        Warn("rustls offers only AEAD cipher suites with forward secrecy (AES-GCM, ChaCha20-Poly1305) and takes no list"),
    ),
    (
        "ciphers_tls1.3",
        Warn("rustls offers only the TLS 1.3 AEAD suites (AES-GCM, ChaCha20-Poly1305) and takes no list"),
    ),
    ("crlfile", Implemented),
    (
        "dhparamfile",
        Warn("rustls uses elliptic-curve key exchange only, so DH parameters are not needed"),
    ),
    ("disable_client_cert_date_checks", Implemented),
    ("keyfile", Implemented),
    ("require_certificate", Implemented),
    (
        "tls_engine",
        Refuse("OpenSSL engines are not supported: give the key as a PEM keyfile"),
    ),
    (
        "tls_engine_kpass_sha1",
        Refuse("OpenSSL engines are not supported: give the key as a PEM keyfile"),
    ),
    (
        "tls_keyform",
        RefuseUnless("pem", "OpenSSL engines are not supported: give the key as a PEM keyfile"),
    ),
    ("tls_version", Implemented),
    ("use_identity_as_username", Implemented),
    ("use_subject_as_username", Implemented),
    // ---- Listeners: pre-shared-key TLS ----
    ("psk_hint", Refuse(PSK)),
    // ---- Bridges ----
    ("address", Bridge),
    ("addresses", Bridge),
    ("bridge_attempt_unsubscribe", Bridge),
    ("bridge_bind_address", Bridge),
    ("bridge_max_packet_size", Bridge),
    ("bridge_max_topic_alias", Bridge),
    ("bridge_mptcp", Bridge),
    ("bridge_outgoing_retain", Bridge),
    ("bridge_protocol_version", Bridge),
    ("bridge_receive_maximum", Bridge),
    ("bridge_session_expiry_interval", Bridge),
    ("bridge_tcp_keepalive", Bridge),
    ("bridge_tcp_user_timeout", Bridge),
    ("cleansession", Bridge),
    ("local_cleansession", Bridge),
    ("connection", Bridge),
    ("keepalive_interval", Bridge),
    ("idle_timeout", Bridge),
    ("local_clientid", Bridge),
    ("local_password", Bridge),
    ("local_username", Bridge),
    ("notifications", Bridge),
    ("notifications_local_only", Bridge),
    ("notification_topic", Bridge),
    ("remote_clientid", Bridge),
    ("clientid", Bridge),
    ("remote_password", Bridge),
    ("password", Bridge),
    ("remote_username", Bridge),
    ("username", Bridge),
    ("restart_timeout", Bridge),
    ("round_robin", Bridge),
    ("start_type", Bridge),
    ("threshold", Bridge),
    ("topic", Bridge),
    ("try_private", Bridge),
    ("bridge_reload_type", Bridge),
    ("bridge_alpn", Bridge),
    ("bridge_cafile", Bridge),
    ("bridge_capath", Bridge),
    ("bridge_certfile", Bridge),
    ("bridge_identity", Bridge),
    ("bridge_insecure", Bridge),
    ("bridge_keyfile", Bridge),
    ("bridge_psk", Bridge),
    ("bridge_require_ocsp", Bridge),
    ("bridge_tls_use_os_certs", Bridge),
    ("bridge_tls_version", Bridge),
    ("bridge_ciphers", Bridge),
    ("bridge_ciphers_tls1.3", Bridge),
];

/// The handling of `option`, if Mosquitto documents it. `plugin_opt_*`
/// and `auth_opt_*` go with the plugin they configure.
pub fn handling(option: &str) -> Option<Handling> {
    if option.starts_with("plugin_opt_") || option.starts_with("auth_opt_") {
        return Some(Refuse(PLUGINS));
    }
    DOCUMENTED
        .iter()
        .find(|(name, _)| *name == option)
        .map(|(_, h)| *h)
}

/// What the parser does with a line whose option it has no arm for.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Accept,
    Warn(String),
    Refuse(String),
    Unknown,
}

/// Decides a line of an option without its own arm in `Config::parse`;
/// `value` is the rest of the line, words joined by single spaces.
pub fn classify(option: &str, value: &str) -> Outcome {
    // "3, 4, 5" and "3,4,5" are the same list.
    let compact: String = value.chars().filter(|c| !c.is_whitespace()).collect();
    match handling(option) {
        None => Outcome::Unknown,
        // An implemented option without an arm is a bug in the parser: say
        // so rather than pretend the option is unknown.
        Some(Implemented) => Outcome::Refuse(format!(
            "{option} is implemented but the parser did not handle it (a ferrymq bug)"
        )),
        Some(Warn(why)) => Outcome::Warn(format!("{option} is accepted and ignored: {why}")),
        Some(WarnUnless(ok, _)) if compact == ok => Outcome::Accept,
        Some(WarnUnless(ok, why)) => Outcome::Warn(format!(
            "{option} {value} is accepted and ignored (ferrymq behaves as {option} {ok}): {why}"
        )),
        Some(Refuse(why)) => Outcome::Refuse(format!(
            "{option} is not supported: {why}; ignoring it would change security or delivery, \
             so the configuration is refused"
        )),
        Some(RefuseUnless(ok, _)) if compact == ok => Outcome::Accept,
        Some(RefuseUnless(ok, why)) => Outcome::Refuse(format!(
            "{option} {value} is not supported (only {option} {ok}): {why}; the configuration \
             is refused"
        )),
        Some(Bridge) => Outcome::Refuse(format!(
            "{option} is a bridge option and bridges are not supported yet; the configuration \
             is refused rather than run without the bridge"
        )),
    }
}

/// `persistent_client_expiration`: a number and a unit, as Mosquitto reads
/// it: s(econds), h(ours), d(ays), w(eeks), m(onths of 30 days), y(ears of
/// 365 days).
pub fn parse_expiration(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let n: u64 = value.get(..value.len() - unit.len_utf8())?.parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'm' => 30 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(seconds)?)).filter(|d| !d.is_zero())
}

/// Whether this process runs as root (effective uid 0): `/proc/self` belongs
/// to the effective user. Where that cannot be read, assume root, so that
/// `user` is refused rather than silently ignored.
pub(super) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(true, |m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{logging, Config};
    use std::path::Path;

    #[test]
    fn harmless_options_warn_and_delivery_options_are_refused() {
        let c = Config::parse(
            "log_dest syslog\nlog_type all\npid_file /run/x.pid\nlog_timestamp false\n\
             set_tcp_nodelay true\nmax_inflight_bytes 0\nmax_inflight_bytes 10\n",
            "m.conf",
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("m.conf:1: log_dest syslog"),
            "{:?}",
            c.warnings
        );
        assert!(c.warnings[1].starts_with("m.conf:4: log_timestamp"));
        assert!(c.warnings[2].starts_with("m.conf:7: max_inflight_bytes 10"));
        assert_eq!(c.pid_file.as_deref(), Some(Path::new("/run/x.pid")));
        for (option, says) in [
            ("plugin /x.so", "plugins"),
            ("plugin_opt_db x", "plugins"),
            ("psk_file f", "PSK"),
            ("listener 1\npsk_hint h", "PSK"),
            ("connection bridge", "bridges are not supported"),
            ("topic # both 0", "bridges are not supported"),
            ("bridge_cafile ca.pem", "bridges are not supported"),
            ("tls_keyform engine", "engines"),
            ("listener 1\nprotocol http_api", "http_api"),
        ] {
            let e = Config::parse(option, "m.conf").unwrap_err().to_string();
            let line = option.lines().count();
            assert!(e.starts_with(&format!("m.conf:{line}: ")), "{option}: {e}");
            assert!(e.contains(says), "{option}: {e}");
        }
        // At the value ferrymq behaves as, accepted silently.
        for option in [
            "tls_keyform pem",
            "listener 1\naccept_protocol_versions 3, 4, 5",
            "enable_control_api false",
            "per_listener_settings false",
        ] {
            let c = Config::parse(option, "m.conf").unwrap();
            assert!(c.warnings.is_empty(), "{option}: {:?}", c.warnings);
        }
    }

    /// A plausible value for each documented option, so the walk below
    /// reaches its handling rather than a value error.
    fn sample_value(option: &str) -> &'static str {
        match option {
            "listener" => "1883",
            "log_dest" => "stderr",
            "log_type" => "error",
            "protocol" => "mqtt",
            "socket_domain" => "ipv4",
            "tls_version" => "tlsv1.2",
            "max_qos" => "1",
            "persistent_client_expiration" => "1d",
            "max_connections" | "global_max_connections" | "global_max_clients" => "-1",
            "accept_protocol_versions" => "3,4,5",
            "tls_keyform" => "pem",
            "user" => "nobody",
            "include_dir" => "/nonexistent-ferrymq-include",
            o if o.starts_with("allow_")
                || o.starts_with("use_")
                || o.starts_with("queue_")
                || o.starts_with("upgrade_")
                || o == "retain_available"
                || o == "persistence"
                || o == "require_certificate"
                || o == "per_listener_settings" =>
            {
                "false"
            }
            o if o.starts_with("max_")
                || o.ends_with("_interval")
                || o.ends_with("_limit")
                || o == "sys_interval" =>
            {
                "0"
            }
            _ => "x",
        }
    }

    /// Every option of mosquitto.conf(5) is implemented, warned about or
    /// refused by name: none may fall back to "unknown option".
    #[test]
    fn every_documented_mosquitto_option_is_classified() {
        for (option, handling) in DOCUMENTED {
            let line = format!("{option} {}", sample_value(option));
            // Listener options need a listener above them.
            for text in [line.clone(), format!("listener 1884\n{line}")] {
                let result = Config::parse(&text, "m.conf");
                let message = match &result {
                    Ok(c) => c.warnings.join("; "),
                    Err(e) => e.to_string(),
                };
                assert!(!message.contains("unknown option"), "{text:?}: {message}");
                assert!(!message.contains("a ferrymq bug"), "{text:?}: {message}");
                if *handling == Handling::Bridge {
                    assert!(message.contains("bridges are not supported"), "{message}");
                }
                if let (Handling::Refuse(_), Err(e)) = (handling, &result) {
                    assert!(e.to_string().contains(option), "{e}");
                }
            }
        }
        // And an unknown word is still an error naming file and line.
        let e = Config::parse("listener 1883\nmaximum_qoss 1\n", "m.conf").unwrap_err();
        assert!(e.to_string().starts_with("m.conf:2: unknown option"), "{e}");
    }

    /// The README tells users what happens to each option: none may be
    /// missing from it (bridge options by family).
    #[test]
    fn the_readme_names_every_documented_option() {
        let readme = include_str!("../../../../README.md");
        for (option, _) in DOCUMENTED {
            let family = ["bridge_", "remote_", "local_"]
                .iter()
                .find(|p| option.starts_with(*p))
                .map(|p| format!("`{p}*`"));
            let named = readme.contains(&format!("`{option}`"))
                || readme.contains(&format!("`{option} "))
                || family.is_some_and(|f| readme.contains(&f));
            assert!(named, "README.md does not name `{option}`");
        }
    }

    #[test]
    fn implemented_options_set_their_fields() {
        let c = Config::parse(
            "listener 1883\nmax_qos 1\nuse_username_as_clientid true\n\
             listener 1884 127.0.0.1\nmax_qos 1\nuse_username_as_clientid true\n\
             message_size_limit 100\nmax_queued_bytes 5000\nqueue_qos0_messages true\n\
             retain_available false\nallow_zero_length_clientid false\n\
             persistent_client_expiration 2h\nclientid_prefixes dev-\n\
             upgrade_outgoing_qos true\nmax_topic_alias_broker 3\n\
             global_max_connections 7\nlog_dest file /tmp/f.log\nlog_dest stdout\n\
             log_type warning\n",
            "m.conf",
        )
        .unwrap();
        for l in &c.listeners {
            assert_eq!(l.max_qos, ferrymq_codec::QoS::AtLeastOnce);
            assert!(l.use_username_as_clientid);
        }
        assert_eq!(c.message_size_limit, 100);
        assert_eq!(c.max_queued_bytes, 5000);
        assert!(c.queue_qos0_messages && !c.retain_available && !c.allow_zero_length_clientid);
        assert_eq!(
            c.persistent_client_expiration,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(c.clientid_prefixes.as_deref(), Some("dev-"));
        assert!(c.upgrade_outgoing_qos);
        assert_eq!(c.listeners[2].max_topic_alias_broker, 3);
        assert_eq!(c.listeners[0].max_topic_alias_broker, 10);
        assert_eq!(c.max_connections, 7);
        assert_eq!(
            c.logging.destinations(),
            vec![
                logging::LogDest::File("/tmp/f.log".into()),
                logging::LogDest::Stdout
            ]
        );
        assert_eq!(c.logging.filter(false), "warn");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(Config::default().max_queued_bytes, usize::MAX);
    }

    #[test]
    fn listener_options_belong_to_their_listener() {
        let c = Config::parse(
            "listener 1 127.0.0.1\nmax_qos 1\nlistener_allow_anonymous true\n\
             accept_protocol_versions 5\nlistener_auto_id_prefix one-\n\
             listener 2 127.0.0.1\nmax_topic_alias 0\nuse_username_as_clientid 1\n",
            "m.conf",
        )
        .unwrap();
        let (one, two) = (&c.listeners[0], &c.listeners[1]);
        assert_eq!(one.max_qos, ferrymq_codec::QoS::AtLeastOnce);
        assert_eq!(two.max_qos, ferrymq_codec::QoS::ExactlyOnce);
        assert_eq!(one.security.allow_anonymous, Some(true));
        assert_eq!(two.security.allow_anonymous, None);
        assert!(one
            .accept_protocol_versions
            .accepts(ferrymq_codec::Protocol::V5));
        assert!(!one
            .accept_protocol_versions
            .accepts(ferrymq_codec::Protocol::V3_1_1));
        assert!(two
            .accept_protocol_versions
            .accepts(ferrymq_codec::Protocol::V3_1_1));
        assert_eq!(one.auto_id_prefix.as_deref(), Some("one-"));
        assert_eq!((one.max_topic_alias, two.max_topic_alias), (10, 0));
        assert!(!one.use_username_as_clientid && two.use_username_as_clientid);
    }

    #[test]
    fn persistent_client_expiration_units_are_mosquittos() {
        for (text, secs) in [
            ("30s", 30),
            ("2h", 7200),
            ("14d", 14 * 86_400),
            ("1w", 7 * 86_400),
            ("2m", 60 * 86_400),
            ("1y", 365 * 86_400),
        ] {
            assert_eq!(
                parse_expiration(text),
                Some(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in ["", "d", "5", "5x", "-1d", "0d", "1.5h"] {
            assert_eq!(parse_expiration(bad), None, "{bad}");
        }
    }

    #[test]
    fn socket_domain_keeps_one_family() {
        let c = Config::parse(
            "listener 1883\nsocket_domain ipv4\nlistener 1884\n",
            "m.conf",
        )
        .unwrap();
        let addrs: Vec<String> = c.listeners.iter().map(|l| l.addr.to_string()).collect();
        assert_eq!(addrs, ["0.0.0.0:1883", "0.0.0.0:1884", "[::]:1884"]);
        let e = Config::parse("listener 1 127.0.0.1\nsocket_domain ipv6\n", "m.conf").unwrap_err();
        assert!(e.to_string().starts_with("m.conf:2: "), "{e}");
    }

    #[test]
    fn capath_is_a_listener_tls_option() {
        let c = Config::parse(
            "listener 8883\ncertfile s.pem\nkeyfile s.key\ncapath /etc/ca\nrequire_certificate true\n",
            "m.conf",
        )
        .unwrap();
        assert_eq!(c.listeners[0].capath.as_deref(), Some(Path::new("/etc/ca")));
    }
}
