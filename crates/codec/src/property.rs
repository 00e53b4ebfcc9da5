//! MQTT 5 properties (section 2.2.2 of the 5.0 standard): every property
//! with its wire type, the packets that may carry it, and the rules about
//! repetition and values.
//!
//! Properties are kept as a list in wire order: user properties keep their
//! order ([MQTT-3.3.2-18]) and a packet without properties (every MQTT 3.x
//! packet) costs an empty `Vec`, which does not allocate.

use std::fmt;

use bytes::Bytes;

use crate::packet::PacketType;
use crate::types::MqttString;
use crate::Error;

/// Where a property list sits. The Will properties of CONNECT are their own
/// context because they admit a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    Packet(PacketType),
    Will,
}

impl fmt::Display for PropertyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyContext::Packet(p) => fmt::Display::fmt(p, f),
            PropertyContext::Will => f.write_str("Will properties"),
        }
    }
}

/// One property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Property {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(MqttString),
    ResponseTopic(MqttString),
    CorrelationData(Bytes),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(MqttString),
    ServerKeepAlive(u16),
    AuthenticationMethod(MqttString),
    AuthenticationData(Bytes),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(MqttString),
    ServerReference(MqttString),
    ReasonString(MqttString),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    UserProperty(MqttString, MqttString),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// Property identifiers.
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The name the standard gives a property identifier, for error messages.
pub fn name(property: u8) -> &'static str {
    match property {
        id::PAYLOAD_FORMAT_INDICATOR => "Payload Format Indicator",
        id::MESSAGE_EXPIRY_INTERVAL => "Message Expiry Interval",
        id::CONTENT_TYPE => "Content Type",
        id::RESPONSE_TOPIC => "Response Topic",
        id::CORRELATION_DATA => "Correlation Data",
        id::SUBSCRIPTION_IDENTIFIER => "Subscription Identifier",
        id::SESSION_EXPIRY_INTERVAL => "Session Expiry Interval",
        id::ASSIGNED_CLIENT_IDENTIFIER => "Assigned Client Identifier",
        id::SERVER_KEEP_ALIVE => "Server Keep Alive",
        id::AUTHENTICATION_METHOD => "Authentication Method",
        id::AUTHENTICATION_DATA => "Authentication Data",
        id::REQUEST_PROBLEM_INFORMATION => "Request Problem Information",
        id::WILL_DELAY_INTERVAL => "Will Delay Interval",
        id::REQUEST_RESPONSE_INFORMATION => "Request Response Information",
        id::RESPONSE_INFORMATION => "Response Information",
        id::SERVER_REFERENCE => "Server Reference",
        id::REASON_STRING => "Reason String",
        id::RECEIVE_MAXIMUM => "Receive Maximum",
        id::TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        id::TOPIC_ALIAS => "Topic Alias",
        id::MAXIMUM_QOS => "Maximum QoS",
        id::RETAIN_AVAILABLE => "Retain Available",
        id::USER_PROPERTY => "User Property",
        id::MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        id::WILDCARD_SUBSCRIPTION_AVAILABLE => "Wildcard Subscription Available",
        id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => "Subscription Identifier Available",
        id::SHARED_SUBSCRIPTION_AVAILABLE => "Shared Subscription Available",
        _ => "unknown property",
    }
}

/// Whether the standard's table (section 2.2.2.2) lets `context` carry
/// property `property`.
pub fn allowed_in(property: u8, context: PropertyContext) -> bool {
    use PacketType as P;
    use PropertyContext::{Packet, Will};
    match property {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => matches!(context, Packet(P::Publish) | Will),
        id::SUBSCRIPTION_IDENTIFIER => matches!(context, Packet(P::Publish | P::Subscribe)),
        id::SESSION_EXPIRY_INTERVAL => {
            matches!(context, Packet(P::Connect | P::ConnAck | P::Disconnect))
        }
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => matches!(context, Packet(P::ConnAck)),
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => {
            matches!(context, Packet(P::Connect | P::ConnAck | P::Auth))
        }
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => {
            matches!(context, Packet(P::Connect))
        }
        id::WILL_DELAY_INTERVAL => matches!(context, Will),
        id::SERVER_REFERENCE => matches!(context, Packet(P::ConnAck | P::Disconnect)),
        id::REASON_STRING => matches!(
            context,
            Packet(
                P::ConnAck
                    | P::PubAck
                    | P::PubRec
                    | P::PubRel
                    | P::PubComp
                    | P::SubAck
                    | P::UnsubAck
                    | P::Disconnect
                    | P::Auth
            )
        ),
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            matches!(context, Packet(P::Connect | P::ConnAck))
        }
        id::TOPIC_ALIAS => matches!(context, Packet(P::Publish)),
        id::USER_PROPERTY => !matches!(context, Packet(P::PingReq | P::PingResp)),
        _ => false,
    }
}

impl Property {
    pub fn id(&self) -> u8 {
        match self {
            Property::PayloadFormatIndicator(_) => id::PAYLOAD_FORMAT_INDICATOR,
            Property::MessageExpiryInterval(_) => id::MESSAGE_EXPIRY_INTERVAL,
            Property::ContentType(_) => id::CONTENT_TYPE,
            Property::ResponseTopic(_) => id::RESPONSE_TOPIC,
            Property::CorrelationData(_) => id::CORRELATION_DATA,
            Property::SubscriptionIdentifier(_) => id::SUBSCRIPTION_IDENTIFIER,
            Property::SessionExpiryInterval(_) => id::SESSION_EXPIRY_INTERVAL,
            Property::AssignedClientIdentifier(_) => id::ASSIGNED_CLIENT_IDENTIFIER,
            Property::ServerKeepAlive(_) => id::SERVER_KEEP_ALIVE,
            Property::AuthenticationMethod(_) => id::AUTHENTICATION_METHOD,
            Property::AuthenticationData(_) => id::AUTHENTICATION_DATA,
            Property::RequestProblemInformation(_) => id::REQUEST_PROBLEM_INFORMATION,
            Property::WillDelayInterval(_) => id::WILL_DELAY_INTERVAL,
            Property::RequestResponseInformation(_) => id::REQUEST_RESPONSE_INFORMATION,
            Property::ResponseInformation(_) => id::RESPONSE_INFORMATION,
            Property::ServerReference(_) => id::SERVER_REFERENCE,
            Property::ReasonString(_) => id::REASON_STRING,
            Property::ReceiveMaximum(_) => id::RECEIVE_MAXIMUM,
            Property::TopicAliasMaximum(_) => id::TOPIC_ALIAS_MAXIMUM,
            Property::TopicAlias(_) => id::TOPIC_ALIAS,
            Property::MaximumQoS(_) => id::MAXIMUM_QOS,
            Property::RetainAvailable(_) => id::RETAIN_AVAILABLE,
            Property::UserProperty(..) => id::USER_PROPERTY,
            Property::MaximumPacketSize(_) => id::MAXIMUM_PACKET_SIZE,
            Property::WildcardSubscriptionAvailable(_) => id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            Property::SubscriptionIdentifierAvailable(_) => id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            Property::SharedSubscriptionAvailable(_) => id::SHARED_SUBSCRIPTION_AVAILABLE,
        }
    }

    /// The same property with its strings and binary data in allocations
    /// of their own (see [`MqttString::detached`]).
    pub fn detached(&self) -> Property {
        match self {
            Property::ContentType(s) => Property::ContentType(s.detached()),
            Property::ResponseTopic(s) => Property::ResponseTopic(s.detached()),
            Property::CorrelationData(b) => Property::CorrelationData(Bytes::copy_from_slice(b)),
            Property::AssignedClientIdentifier(s) => {
                Property::AssignedClientIdentifier(s.detached())
            }
            Property::AuthenticationMethod(s) => Property::AuthenticationMethod(s.detached()),
            Property::AuthenticationData(b) => {
                Property::AuthenticationData(Bytes::copy_from_slice(b))
            }
            Property::ResponseInformation(s) => Property::ResponseInformation(s.detached()),
            Property::ServerReference(s) => Property::ServerReference(s.detached()),
            Property::ReasonString(s) => Property::ReasonString(s.detached()),
            Property::UserProperty(k, v) => Property::UserProperty(k.detached(), v.detached()),
            other => other.clone(),
        }
    }

    /// Checks the value rules the standard states for single properties.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let id = self.id();
        let bad = || Err(Error::InvalidPropertyValue(name(id)));
        match *self {
            Property::PayloadFormatIndicator(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQoS(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v)
                if v > 1 =>
            {
                bad()
            }
            Property::ReceiveMaximum(0) | Property::MaximumPacketSize(0) => bad(),
            Property::SubscriptionIdentifier(v) if v == 0 || v > crate::varint::MAX => bad(),
            Property::TopicAlias(0) => Err(Error::TopicAliasZero),
            _ => Ok(()),
        }
    }
}

/// An ordered property list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties(pub Vec<Property>);

macro_rules! getter {
    ($fn:ident, $variant:ident, $ty:ty) => {
        pub fn $fn(&self) -> Option<$ty> {
            self.0.iter().find_map(|p| match p {
                Property::$variant(v) => Some(v.clone()),
                _ => None,
            })
        }
    };
}

impl Properties {
    /// The same list with every string and binary value in allocations of
    /// its own.
    pub fn detached(&self) -> Properties {
        Properties(self.0.iter().map(Property::detached).collect())
    }

    pub fn new() -> Properties {
        Properties(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Property> {
        self.0.iter()
    }

    pub fn push(&mut self, property: Property) {
        self.0.push(property);
    }

    /// Removes every property with identifier `id`.
    pub fn remove(&mut self, id: u8) {
        self.0.retain(|p| p.id() != id);
    }

    /// Replaces the property with the same identifier, or appends it.
    pub fn set(&mut self, property: Property) {
        let id = property.id();
        match self.0.iter_mut().find(|p| p.id() == id) {
            Some(slot) => *slot = property,
            None => self.0.push(property),
        }
    }

    getter!(payload_format_indicator, PayloadFormatIndicator, u8);
    getter!(message_expiry_interval, MessageExpiryInterval, u32);
    getter!(content_type, ContentType, MqttString);
    getter!(response_topic, ResponseTopic, MqttString);
    getter!(correlation_data, CorrelationData, Bytes);
    getter!(session_expiry_interval, SessionExpiryInterval, u32);
    getter!(
        assigned_client_identifier,
        AssignedClientIdentifier,
        MqttString
    );
    getter!(server_keep_alive, ServerKeepAlive, u16);
    getter!(authentication_method, AuthenticationMethod, MqttString);
    getter!(authentication_data, AuthenticationData, Bytes);
    getter!(request_problem_information, RequestProblemInformation, u8);
    getter!(will_delay_interval, WillDelayInterval, u32);
    getter!(request_response_information, RequestResponseInformation, u8);
    getter!(response_information, ResponseInformation, MqttString);
    getter!(server_reference, ServerReference, MqttString);
    getter!(reason_string, ReasonString, MqttString);
    getter!(receive_maximum, ReceiveMaximum, u16);
    getter!(topic_alias_maximum, TopicAliasMaximum, u16);
    getter!(topic_alias, TopicAlias, u16);
    getter!(maximum_qos, MaximumQoS, u8);
    getter!(retain_available, RetainAvailable, u8);
    getter!(maximum_packet_size, MaximumPacketSize, u32);

    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(*v),
            _ => None,
        })
    }

    pub fn user_properties(&self) -> impl Iterator<Item = (&MqttString, &MqttString)> {
        self.0.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }
}

impl From<Vec<Property>> for Properties {
    fn from(v: Vec<Property>) -> Properties {
        Properties(v)
    }
}

impl<'a> IntoIterator for &'a Properties {
    type Item = &'a Property;
    type IntoIter = std::slice::Iter<'a, Property>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
