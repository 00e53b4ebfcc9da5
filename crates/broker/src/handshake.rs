//! CONNECT handling ([MQTT-3.1]): client identifier rules, keep-alive
//! limits, session takeover and resumption, the CONNACK.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ferrymq_codec::{
    ConnAck, Connect, MqttString, Packet, Properties, Property, Protocol, ReasonCode,
};
use tracing::{debug, warn};

use crate::alias;
use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::metrics::Tally;
use crate::protocol::Connection;
use crate::registry::{Claim, Kick, Presence};

/// How long a new connection waits for the one it takes over to let go.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest client id accepted. MQTT allows 65,535 bytes, but the store
/// keys a session's records by its client id plus a few bytes, and its
/// engine takes keys of at most 65,535 bytes.
const MAX_CLIENT_ID_BYTES: usize = 65_000;

/// A connection that passed CONNECT.
#[derive(Debug)]
pub struct Accepted {
    /// Boxed: a connection task's future stays small when the state it
    /// keeps for the whole connection lives on the heap.
    pub connection: Box<Connection>,
    pub client_id: Arc<str>,
    /// Kicked by a connection taking the session over or the admin API;
    /// finished by us once the session is parked or removed.
    pub presence: Arc<Presence>,
    pub connection_id: u64,
    /// Effective keep-alive in seconds (0: none).
    pub keep_alive: u16,
}

/// A user vouched for by an enhanced-authentication exchange.
#[derive(Debug)]
pub struct Authenticated {
    pub username: Arc<str>,
    /// Authentication Method and final Authentication Data for CONNACK.
    pub connack_properties: Properties,
}

/// A CONNECT that is refused: the CONNACK to send (if any), then close.
#[derive(Debug)]
pub struct Refused {
    pub client_id: String,
    pub protocol: Protocol,
    pub reason: ReasonCode,
    pub detail: &'static str,
    /// Whether a CONNACK is sent at all: Mosquitto closes a 3.x client
    /// it refuses for `global_max_clients` without one.
    pub answered: bool,
}

impl Refused {
    pub fn new(
        client_id: impl Into<String>,
        protocol: Protocol,
        reason: ReasonCode,
        detail: &'static str,
    ) -> Refused {
        Refused {
            client_id: client_id.into(),
            protocol,
            reason,
            detail,
            answered: true,
        }
    }

    /// The refusing CONNACK. MQTT 5 gets what Mosquitto 2.1 states on a
    /// refusal (Maximum QoS, when below 2), then a Reason String saying
    /// why (the standard allows one on a CONNACK whatever the client's
    /// Request Problem Information).
    pub fn connack(&self, listener: &ListenerConfig) -> Packet {
        let mut properties = Properties::new();
        if self.protocol.is_v5() {
            if listener.max_qos < ferrymq_codec::QoS::ExactlyOnce {
                properties.push(Property::MaximumQoS(listener.max_qos as u8));
            }
            if let Ok(why) = MqttString::try_from(self.detail).map(Property::ReasonString) {
                if !self.detail.is_empty() {
                    properties.push(why);
                }
            }
        }
        Packet::ConnAck(ConnAck {
            session_present: false,
            reason: self.reason,
            properties,
        })
    }
}

/// The properties of a successful MQTT 5 CONNACK, as Mosquitto 2.1 sends
/// them for the same configuration and CONNECT, in its order, so that the
/// bytes match: Server Keep Alive, Topic Alias Maximum, Assigned Client
/// Identifier, the authentication method and data, then Retain Available
/// (only when false), Maximum Packet Size, Receive Maximum and Maximum QoS
/// (each unless at the protocol's default). Nothing the protocol already
/// implies is stated (Wildcard, Subscription Identifier and Shared
/// Subscription Available are all 1).
fn connack_properties(
    config: &crate::Config,
    listener: &ListenerConfig,
    server_keep_alive: Option<u16>,
    assigned: Option<String>,
    auth: Properties,
    properties: &mut Properties,
) {
    if let Some(ka) = server_keep_alive {
        properties.push(Property::ServerKeepAlive(ka));
    }
    if listener.max_topic_alias > 0 {
        properties.push(Property::TopicAliasMaximum(listener.max_topic_alias));
    }
    if let Some(id) = assigned.and_then(|id| MqttString::try_from(id).ok()) {
        properties.push(Property::AssignedClientIdentifier(id));
    }
    properties.0.extend(auth.0);
    if !config.retain_available {
        properties.push(Property::RetainAvailable(0));
    }
    match u32::try_from(config.max_packet_size) {
        Ok(size) if config.max_packet_size < ferrymq_codec::varint::MAX as usize + 5 => {
            properties.push(Property::MaximumPacketSize(size));
        }
        _ => {}
    }
    if config.max_inflight_messages < u16::MAX {
        properties.push(Property::ReceiveMaximum(config.max_inflight_messages));
    }
    if listener.max_qos < ferrymq_codec::QoS::ExactlyOnce {
        properties.push(Property::MaximumQoS(listener.max_qos as u8));
    }
}

/// Answers `connect`. `identity`: the user
/// named by a verified TLS client certificate (`use_identity_as_username`),
/// which replaces CONNECT's user name and password.
pub async fn accept(
    broker: &Arc<Broker>,
    connect: Connect,
    authenticated: Option<Authenticated>,
    identity: Option<Arc<str>>,
    endpoint: Arc<crate::net::listener::Endpoint>,
) -> Result<Accepted, Refused> {
    // `mount_point`: the will is published under the listener's prefix.
    let mut connect = connect;
    let mut will_unmountable = false;
    if let (Some(mount), Some(will)) = (
        endpoint.settings.mount_point.as_deref(),
        connect.will.as_mut(),
    ) {
        match will.topic.prefixed(mount) {
            Ok(topic) => will.topic = topic,
            Err(_) => will_unmountable = true,
        }
    }
    let protocol = connect.protocol;
    let v5 = protocol.is_v5();
    let refuse = |reason: ReasonCode, detail: &'static str| {
        Refused::new(connect.client_id.to_string(), protocol, reason, detail)
    };

    let config = &broker.config;
    let listener = &endpoint.settings;
    if !listener.accept_protocol_versions.accepts(protocol) {
        // accept_protocol_versions: 3.x gets return code 1, 5.0 0x84.
        return Err(refuse(
            ReasonCode::UnsupportedProtocolVersion,
            "this listener does not accept the protocol version (accept_protocol_versions)",
        ));
    }
    let mut assigned = None;
    if connect.client_id.is_empty() && !config.allow_zero_length_clientid {
        // `allow_zero_length_clientid false`: no identifier is assigned.
        return Err(refuse(
            ReasonCode::ClientIdentifierNotValid,
            "empty client identifier (allow_zero_length_clientid false)",
        ));
    }
    let mut client_id: Arc<str> = if connect.client_id.is_empty() {
        // 3.1 demands an identifier; 3.1.1 allows none only with a clean
        // session ([MQTT-3.1.3-7], [MQTT-3.1.3-8]); 5.0 always assigns one.
        if protocol == Protocol::V3_1 || (protocol == Protocol::V3_1_1 && !connect.clean_start) {
            return Err(refuse(
                ReasonCode::ClientIdentifierNotValid,
                "empty client identifier without a clean session",
            ));
        }
        let prefix = listener
            .auto_id_prefix
            .as_deref()
            .unwrap_or(&broker.config.auto_id_prefix);
        let id = format!("{prefix}{}", uuid::Uuid::new_v4());
        assigned = Some(id.clone());
        id.into()
    } else {
        connect.client_id.as_str().into()
    };

    let max_keepalive = broker.config.max_keepalive;
    let mut keep_alive = connect.keep_alive;
    let mut server_keep_alive = None;
    if max_keepalive > 0 && (keep_alive > max_keepalive || keep_alive == 0) {
        if v5 {
            keep_alive = max_keepalive;
            server_keep_alive = Some(max_keepalive);
        } else {
            // 3.x cannot be told a different keep-alive: refused, as
            // Mosquitto 2.1 does (return code 2), a keep-alive of 0 ("none")
            // included.
            return Err(refuse(
                ReasonCode::ClientIdentifierNotValid,
                "keep-alive of 0 or above max_keepalive",
            ));
        }
    }

    // A will the broker could not publish as asked is refused up front
    // ([MQTT-3.2.2-12], [MQTT-3.2.2-13] for 5.0; 3.x has no code for it,
    // and gets the nearest CONNACK return code).
    if let Some(will) = &connect.will {
        if will_unmountable {
            return Err(refuse(
                ReasonCode::TopicNameInvalid,
                "will topic too long under the listener's mount_point",
            ));
        }
        if will.qos > listener.max_qos {
            return Err(refuse(
                ReasonCode::QoSNotSupported,
                "will QoS above max_qos",
            ));
        }
        if will.retain && !config.retain_available {
            return Err(refuse(
                ReasonCode::RetainNotSupported,
                "retained will with retain_available false",
            ));
        }
        if crate::router::level_count(&will.topic) > config.max_topic_levels {
            return Err(refuse(
                ReasonCode::TopicNameInvalid,
                "will topic with more levels than max_topic_levels",
            ));
        }
    }

    // An enhanced-authentication exchange (net::enhanced_auth) already
    // vouched for the user; otherwise the user name and password do.
    let mut connack_auth = Properties::new();
    let username: Option<Arc<str>>;
    if let Some(name) = identity {
        username = Some(name);
    } else if let Some(auth) = authenticated {
        username = Some(auth.username);
        connack_auth = auth.connack_properties;
    } else if v5 && connect.properties.authentication_method().is_some() {
        // [MQTT-3.1.2.11.9]: never proceed with a method we did not run.
        return Err(refuse(
            ReasonCode::BadAuthenticationMethod,
            "unsupported authentication method",
        ));
    } else {
        username = connect.username.as_ref().map(|u| u.as_str().into());
        // `listener_allow_anonymous` overrides `allow_anonymous` both
        // ways, as in Mosquitto 2.1.
        let anonymous = listener
            .security
            .allow_anonymous
            .unwrap_or(endpoint.security.allow_anonymous);
        if !endpoint
            .security
            .authenticate(username.as_deref(), connect.password.as_deref(), anonymous)
            .await
        {
            return Err(refuse(
                ReasonCode::NotAuthorized,
                if username.is_some() {
                    "bad user name or password"
                } else {
                    "anonymous clients are not allowed"
                },
            ));
        }
    }

    if listener.use_username_as_clientid {
        // The user name is the client id, so one user cannot take over
        // another's session; without a user name there is no id.
        let Some(name) = &username else {
            return Err(refuse(
                ReasonCode::NotAuthorized,
                "no user name to use as client id (use_username_as_clientid)",
            ));
        };
        if assigned.is_some() {
            // The client sent no id: MQTT 5 tells it the one it has.
            assigned = Some(name.to_string());
        }
        client_id = name.clone();
    }
    if client_id.len() > MAX_CLIENT_ID_BYTES {
        return Err(refuse(
            ReasonCode::ClientIdentifierNotValid,
            "client identifier longer than 65,000 bytes",
        ));
    }
    if let Some(prefix) = &config.clientid_prefixes {
        if !client_id.starts_with(prefix.as_str()) {
            return Err(refuse(
                ReasonCode::NotAuthorized,
                "client id without a prefix of clientid_prefixes",
            ));
        }
    }

    // 3.x: a session outlives the connection unless Clean Session; 5.0: for
    // its Session Expiry Interval (absent: 0).
    let expiry_interval = if v5 {
        connect.properties.session_expiry_interval().unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };

    // `memory_limit`: no new client while the heap is at the limit (3.x
    // closed without an answer, as for `global_max_clients`).
    if crate::heap::over(config.memory_limit) {
        return Err(Refused {
            answered: v5,
            ..refuse(ReasonCode::ServerBusy, "memory_limit reached")
        });
    }

    // `global_max_clients`: sessions, connected or not, at most; taking up
    // one's own session again is no new one. As Mosquitto 2.1: MQTT 5 is
    // told 0x89 Server busy, 3.x is closed without a CONNACK.
    if let Some(max) = config.global_max_clients {
        if broker.registry.len() >= max && !broker.registry.contains(&client_id) {
            return Err(Refused {
                answered: v5,
                ..refuse(ReasonCode::ServerBusy, "global_max_clients reached")
            });
        }
    }

    let connection_id = broker.next_id();
    let presence = Arc::new(Presence::default());
    let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
    let resumed = loop {
        match broker.registry.claim(&client_id, connection_id, &presence) {
            Claim::Resumed(state) => break Some(state),
            Claim::Fresh => break None,
            Claim::Busy { presence: other } => {
                debug!("taking over the session of a connected client");
                other.kick(Kick::TakenOver);
                if tokio::time::timeout_at(deadline, other.finished())
                    .await
                    .is_err()
                {
                    warn!("the connection being taken over did not let go in time");
                    return Err(refuse(ReasonCode::ServerBusy, "session takeover timed out"));
                }
            }
        }
    };

    let (mut session, session_present) = match resumed {
        Some(state) if !connect.clean_start => {
            let mut state = *state;
            // Back in time: the delayed will is not published ([MQTT-3.1.3-9]).
            if let Some(will) = state.delayed_will.take() {
                will.cancel();
            }
            (state, true)
        }
        Some(mut state) => {
            // Clean Start ends the old session, and with it a delayed will.
            if let Some(will) = state.delayed_will.take() {
                will.fire();
            }
            broker.discard_session(&mut state);
            (
                broker.new_session(client_id.clone(), expiry_interval),
                false,
            )
        }
        None => (
            broker.new_session(client_id.clone(), expiry_interval),
            false,
        ),
    };
    session.expiry_interval = expiry_interval;
    let durable = broker.persist.is_some() && expiry_interval > 0;
    let was_durable = session
        .shared
        .durable
        .swap(durable, std::sync::atomic::Ordering::Relaxed);
    if was_durable && !durable {
        // Resumed with a Session Expiry of 0: the session ends with this
        // connection, so its record goes now (at the end nothing would
        // say it was ever stored, and a restart would bring it back).
        broker.store(vec![ferrymq_store::Op::DeleteSession {
            client_id: client_id.clone(),
        }]);
    }
    // Connected now: the record loses its expiry deadline and any delayed
    // will cancelled above.
    if durable {
        broker.store_session(&session, 0);
    }

    let mut properties = Properties::new();
    let mut max_inflight = config.max_inflight_messages;
    let mut client_max_packet = None;
    let mut client_alias_max = 0;
    let mut problem_information = true;
    if v5 {
        let p = &connect.properties;
        if let Some(rm) = p.receive_maximum() {
            max_inflight = max_inflight.min(rm);
        }
        client_max_packet = p.maximum_packet_size();
        client_alias_max = p.topic_alias_maximum().unwrap_or(0);
        problem_information = p.request_problem_information() != Some(0);
        connack_properties(
            config,
            listener,
            server_keep_alive,
            assigned,
            connack_auth,
            &mut properties,
        );
        if p.request_response_information() == Some(1) {
            // A topic prefix the client may use for responses ([MQTT-3.2.2.3.15]).
            if let Ok(info) = MqttString::try_from(format!("response/{client_id}")) {
                properties.push(Property::ResponseInformation(info));
            }
        }
    }

    // The will is kept for the whole connection: copy it out of the read
    // buffer so that it does not pin the buffer's allocation.
    let will = connect.will.map(|mut w| {
        w.payload = bytes::Bytes::copy_from_slice(&w.payload);
        if let Ok(topic) = ferrymq_codec::TopicName::new(w.topic.as_str()) {
            w.topic = topic;
        }
        Box::new(w)
    });
    let mut connection = Box::new(Connection {
        broker: broker.clone(),
        endpoint: endpoint.clone(),
        protocol,
        session,
        username,
        will,
        out: BytesMut::new(),
        max_inflight,
        client_max_packet,
        aliases_in: alias::Inbound::new(if v5 { listener.max_topic_alias } else { 0 }),
        aliases_out: alias::Outbound::new(client_alias_max.min(listener.max_topic_alias_broker)),
        receive_maximum: config.max_inflight_messages,
        problem_information,
        store_ops: Vec::new(),
        waiting: None,
    });
    // The CONNECT itself is a packet received.
    Tally::count(|t| t.messages_received += 1);
    connection.send(&Packet::ConnAck(ConnAck {
        session_present,
        reason: ReasonCode::Success,
        properties,
    }));
    if session_present {
        connection.resend_inflight(std::time::Instant::now());
    }
    // The connection's first round may run on another thread.
    Tally::flush_thread(&broker.metrics);
    Ok(Accepted {
        connection,
        client_id,
        presence,
        connection_id,
        keep_alive,
    })
}
