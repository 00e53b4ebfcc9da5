//! The codec's one error type, and its mapping onto MQTT 5 reason codes.

use crate::packet::PacketType;
use crate::reason::ReasonCode;

/// Everything that can be wrong with bytes on the wire, or with a packet
/// handed to the encoder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("malformed Variable Byte Integer")]
    MalformedVarint,
    #[error("packet of {size} bytes exceeds the maximum packet size of {max}")]
    PacketTooLarge { size: usize, max: usize },
    #[error("reserved packet type {0}")]
    InvalidPacketType(u8),
    #[error("{packet} with fixed header flags {flags:#06b}, which the standard forbids")]
    InvalidHeaderFlags { packet: PacketType, flags: u8 },
    #[error("{0} is a server-to-client packet and cannot come from a client")]
    UnexpectedPacket(PacketType),
    #[error("packet is shorter than its fields")]
    UnexpectedEnd,
    #[error("{0} bytes left over after the packet's fields")]
    TrailingBytes(usize),
    #[error("invalid protocol name")]
    InvalidProtocolName,
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolLevel(u8),
    #[error("QoS 3 does not exist")]
    InvalidQoS,
    #[error("DUP set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    #[error("invalid CONNECT flags: {0}")]
    InvalidConnectFlags(&'static str),
    #[error("invalid CONNACK flags")]
    InvalidConnAckFlags,
    #[error("string is not well-formed UTF-8")]
    InvalidUtf8,
    #[error("string contains U+0000")]
    NullCharacter,
    #[error("topic contains a control character (U+0001..U+001F, U+007F..U+009F)")]
    ControlCharacter,
    #[error("string of {0} bytes exceeds 65,535")]
    StringTooLong(usize),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(&'static str),
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(&'static str),
    #[error("packet identifier 0")]
    ZeroPacketId,
    #[error("{0} without any topic filter")]
    NoTopicFilters(PacketType),
    #[error("reserved bits set in subscription options")]
    InvalidSubscriptionOptions,
    #[error("Retain Handling 3 in subscription options")]
    InvalidRetainHandling,
    #[error("unknown property identifier {0:#04x}")]
    UnknownProperty(u8),
    #[error("{property} is not allowed in {context}")]
    PropertyNotAllowed {
        property: &'static str,
        context: String,
    },
    #[error("{0} appears more than once")]
    DuplicateProperty(&'static str),
    #[error("invalid value for {0}")]
    InvalidPropertyValue(&'static str),
    #[error("Topic Alias 0")]
    TopicAliasZero,
    #[error("MQTT 5 PUBLISH with an empty topic and no Topic Alias")]
    MissingTopic,
    #[error("Authentication Data without Authentication Method")]
    AuthDataWithoutMethod,
    #[error("reason code {code:#04x} is not valid in {packet}")]
    InvalidReasonCode { packet: PacketType, code: u8 },
    #[error("remaining length {0} exceeds 268,435,455")]
    RemainingLengthTooLarge(usize),
}

impl Error {
    /// The MQTT 5 reason code a server sends (CONNACK or DISCONNECT) when a
    /// client's packet fails with this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Error::PacketTooLarge { .. } | Error::RemainingLengthTooLarge(_) => {
                ReasonCode::PacketTooLarge
            }
            Error::UnsupportedProtocolLevel(_) | Error::InvalidProtocolName => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Error::InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            Error::InvalidTopicFilter(_) => ReasonCode::TopicFilterInvalid,
            Error::TopicAliasZero => ReasonCode::TopicAliasInvalid,
            Error::UnexpectedPacket(_)
            | Error::ZeroPacketId
            | Error::NoTopicFilters(_)
            // "It is a Protocol Error to send a Retain Handling value of 3"
            // (5.0 section 3.8.3.1); reserved bits are malformed.
            | Error::InvalidRetainHandling
            | Error::DuplicateProperty(_)
            | Error::InvalidPropertyValue(_)
            | Error::MissingTopic
            | Error::AuthDataWithoutMethod => ReasonCode::ProtocolError,
            Error::MalformedVarint
            | Error::InvalidPacketType(_)
            | Error::InvalidHeaderFlags { .. }
            | Error::UnexpectedEnd
            | Error::TrailingBytes(_)
            | Error::InvalidQoS
            | Error::DupOnQoS0
            | Error::InvalidConnectFlags(_)
            | Error::InvalidConnAckFlags
            | Error::InvalidUtf8
            | Error::NullCharacter
            // Mosquitto's reading: malformed UTF-8, so a malformed packet.
            | Error::ControlCharacter
            | Error::StringTooLong(_)
            | Error::InvalidSubscriptionOptions
            // "A Control Packet which contains an Identifier which is not
            // valid for its packet type ... is a Malformed Packet" (5.0
            // section 2.2.2.2).
            | Error::UnknownProperty(_)
            | Error::PropertyNotAllowed { .. }
            | Error::InvalidReasonCode { .. } => ReasonCode::MalformedPacket,
        }
    }
}
