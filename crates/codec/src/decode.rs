//! Bytes in, packets out. [`decode`] takes one packet off the front of a
//! buffer, or says that more bytes are needed and consumes nothing.

use bytes::{Buf, Bytes, BytesMut};

use crate::packet::*;
use crate::property::{self, id, Properties, Property, PropertyContext};
use crate::reason::ReasonCode;
use crate::types::{MqttString, PacketId, Protocol, QoS, TopicFilter, TopicName};
use crate::{varint, Error};

/// The fixed header of a packet whose first bytes are in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type and flags.
    pub byte1: u8,
    /// Length of the fixed header (2 to 5 bytes).
    pub header_len: usize,
    /// The Remaining Length.
    pub remaining_len: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the start of `buf`; `Ok(None)` if it is
    /// not complete yet.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Option<FixedHeader>, Error> {
        let Some((&byte1, rest)) = buf.split_first() else {
            return Ok(None);
        };
        Ok(varint::read(rest)?.map(|(remaining, len)| FixedHeader {
            byte1,
            header_len: 1 + len,
            remaining_len: remaining as usize,
        }))
    }

    /// Size of the whole packet, fixed header included.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Takes one packet off the front of `buf`.
///
/// * `Ok(None)`: the packet is not complete; nothing was consumed. Once the
///   fixed header is there, `buf` may be grown to [`FixedHeader::packet_len`].
/// * `Ok(Some(packet))`: the packet's bytes were split off `buf`; the
///   PUBLISH payload and strings share them without copying.
/// * `Err(_)`: the connection must be closed; if the fixed header announced
///   more than `max_packet_size` bytes, this happens before the body arrives.
///
/// `protocol` is the connection's version; a CONNECT names its own.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_packet_size: usize,
) -> Result<Option<Packet>, Error> {
    let Some(header) = FixedHeader::parse(buf)? else {
        return Ok(None);
    };
    let size = header.packet_len();
    if size > max_packet_size {
        return Err(Error::PacketTooLarge {
            size,
            max: max_packet_size,
        });
    }
    if buf.len() < size {
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header.header_len);
    decode_body(header.byte1, frame, protocol).map(Some)
}

/// Decodes a packet whose fixed header has been read: `byte1` is its first
/// byte and `body` exactly its Remaining Length bytes.
pub fn decode_body(byte1: u8, body: Bytes, protocol: Protocol) -> Result<Packet, Error> {
    let type_bits = byte1 >> 4;
    let flags = byte1 & 0x0F;
    let packet_type = match PacketType::from_u8(type_bits) {
        Some(PacketType::Auth) if !protocol.is_v5() => {
            return Err(Error::InvalidPacketType(type_bits))
        }
        Some(t) => t,
        None => return Err(Error::InvalidPacketType(type_bits)),
    };
    let required = packet_type.required_flags();
    // MQTT 3.1 sets DUP on a re-sent PUBREL, SUBSCRIBE or UNSUBSCRIBE (3.1
    // section 2.1, "DUP"); 3.1.1 made those bits reserved.
    let v3_1_dup = protocol == Protocol::V3_1 && required == 0b0010 && flags == 0b1010;
    if packet_type != PacketType::Publish && flags != required && !v3_1_dup {
        return Err(Error::InvalidHeaderFlags {
            packet: packet_type,
            flags,
        });
    }
    let mut r = Reader { buf: body };
    let v5 = protocol.is_v5();
    let packet = match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(connack(&mut r, v5)?),
        PacketType::Publish => return publish(flags, r, v5).map(Packet::Publish),
        PacketType::PubAck => Packet::PubAck(pub_response(&mut r, v5, packet_type)?),
        PacketType::PubRec => Packet::PubRec(pub_response(&mut r, v5, packet_type)?),
        PacketType::PubRel => Packet::PubRel(pub_response(&mut r, v5, packet_type)?),
        PacketType::PubComp => Packet::PubComp(pub_response(&mut r, v5, packet_type)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(&mut r, v5)?),
        PacketType::SubAck => Packet::SubAck(suback(&mut r, v5)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(&mut r, v5)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, v5)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => {
            let (reason, properties) = reason_and_properties(&mut r, v5, packet_type)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        PacketType::Auth => {
            let (reason, properties) = reason_and_properties(&mut r, v5, packet_type)?;
            Packet::Auth(Auth { reason, properties })
        }
    };
    if r.buf.has_remaining() {
        return Err(Error::TrailingBytes(r.buf.remaining()));
    }
    Ok(packet)
}

/// Bounds-checked reads over a packet body.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), Error> {
        if self.buf.remaining() < n {
            Err(Error::UnexpectedEnd)
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, Error> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16, Error> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    fn varint(&mut self) -> Result<u32, Error> {
        match varint::read(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(Error::UnexpectedEnd),
        }
    }

    fn binary(&mut self) -> Result<Bytes, Error> {
        let len = usize::from(self.u16()?);
        self.need(len)?;
        Ok(self.buf.split_to(len))
    }

    fn string(&mut self) -> Result<MqttString, Error> {
        MqttString::try_from(self.binary()?)
    }

    fn packet_id(&mut self) -> Result<PacketId, Error> {
        PacketId::new(self.u16()?).ok_or(Error::ZeroPacketId)
    }

    fn is_empty(&self) -> bool {
        !self.buf.has_remaining()
    }

    fn properties(&mut self, context: PropertyContext) -> Result<Properties, Error> {
        let len = self.varint()? as usize;
        self.need(len)?;
        let mut r = Reader {
            buf: self.buf.split_to(len),
        };
        let mut list = Vec::new();
        let mut seen: u64 = 0;
        while !r.is_empty() {
            let pid = r.u8()?;
            let p = match pid {
                id::PAYLOAD_FORMAT_INDICATOR => Property::PayloadFormatIndicator(r.u8()?),
                id::MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(r.u32()?),
                id::CONTENT_TYPE => Property::ContentType(r.string()?),
                id::RESPONSE_TOPIC => {
                    let topic = r.string()?;
                    // A Response Topic is a topic name ([MQTT-3.3.2-14]).
                    if topic.is_empty() {
                        return Err(Error::InvalidTopicName("empty Response Topic"));
                    }
                    TopicName::from_mqtt_string(topic.clone())?;
                    Property::ResponseTopic(topic)
                }
                id::CORRELATION_DATA => Property::CorrelationData(r.binary()?),
                id::SUBSCRIPTION_IDENTIFIER => Property::SubscriptionIdentifier(r.varint()?),
                id::SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(r.u32()?),
                id::ASSIGNED_CLIENT_IDENTIFIER => Property::AssignedClientIdentifier(r.string()?),
                id::SERVER_KEEP_ALIVE => Property::ServerKeepAlive(r.u16()?),
                id::AUTHENTICATION_METHOD => Property::AuthenticationMethod(r.string()?),
                id::AUTHENTICATION_DATA => Property::AuthenticationData(r.binary()?),
                id::REQUEST_PROBLEM_INFORMATION => Property::RequestProblemInformation(r.u8()?),
                id::WILL_DELAY_INTERVAL => Property::WillDelayInterval(r.u32()?),
                id::REQUEST_RESPONSE_INFORMATION => Property::RequestResponseInformation(r.u8()?),
                id::RESPONSE_INFORMATION => Property::ResponseInformation(r.string()?),
                id::SERVER_REFERENCE => Property::ServerReference(r.string()?),
                id::REASON_STRING => Property::ReasonString(r.string()?),
                id::RECEIVE_MAXIMUM => Property::ReceiveMaximum(r.u16()?),
                id::TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(r.u16()?),
                id::TOPIC_ALIAS => Property::TopicAlias(r.u16()?),
                id::MAXIMUM_QOS => Property::MaximumQoS(r.u8()?),
                id::RETAIN_AVAILABLE => Property::RetainAvailable(r.u8()?),
                id::USER_PROPERTY => Property::UserProperty(r.string()?, r.string()?),
                id::MAXIMUM_PACKET_SIZE => Property::MaximumPacketSize(r.u32()?),
                id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    Property::WildcardSubscriptionAvailable(r.u8()?)
                }
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    Property::SubscriptionIdentifierAvailable(r.u8()?)
                }
                id::SHARED_SUBSCRIPTION_AVAILABLE => Property::SharedSubscriptionAvailable(r.u8()?),
                other => return Err(Error::UnknownProperty(other)),
            };
            if !property::allowed_in(pid, context) {
                return Err(Error::PropertyNotAllowed {
                    property: property::name(pid),
                    context: context.to_string(),
                });
            }
            let repeatable = pid == id::USER_PROPERTY
                || (pid == id::SUBSCRIPTION_IDENTIFIER
                    && context == PropertyContext::Packet(PacketType::Publish));
            let bit = 1u64 << pid;
            if seen & bit != 0 && !repeatable {
                return Err(Error::DuplicateProperty(property::name(pid)));
            }
            seen |= bit;
            p.validate()?;
            list.push(p);
        }
        let has = |pid: u8| seen & (1u64 << pid) != 0;
        if has(id::AUTHENTICATION_DATA) && !has(id::AUTHENTICATION_METHOD) {
            return Err(Error::AuthDataWithoutMethod);
        }
        Ok(Properties(list))
    }

    fn reason(&mut self, packet: PacketType) -> Result<ReasonCode, Error> {
        let code = self.u8()?;
        ReasonCode::from_u8(code)
            .filter(|r| r.valid_in(packet))
            .ok_or(Error::InvalidReasonCode { packet, code })
    }
}

fn connect(r: &mut Reader) -> Result<Connect, Error> {
    let name = r.binary()?;
    let level = r.u8()?;
    let protocol = match (&name[..], level) {
        (b"MQTT", 4) => Protocol::V3_1_1,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V3_1,
        (b"MQTT" | b"MQIsdp", other) => return Err(Error::UnsupportedProtocolLevel(other)),
        _ => return Err(Error::InvalidProtocolName),
    };
    let v5 = protocol.is_v5();
    let flags = r.u8()?;
    if flags & 0x01 != 0 {
        return Err(Error::InvalidConnectFlags("reserved bit set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 0x03)?;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(Error::InvalidConnectFlags(
            "will QoS or will retain set without the will flag",
        ));
    }
    // MQTT 5 allows a password without a user name; 3.x does not.
    if !v5 && password_flag && !username_flag {
        return Err(Error::InvalidConnectFlags(
            "password flag set without the user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        r.properties(PropertyContext::Packet(PacketType::Connect))?
    } else {
        Properties::new()
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = if v5 {
            r.properties(PropertyContext::Will)?
        } else {
            Properties::new()
        };
        let topic = TopicName::from_mqtt_string(r.string()?)?;
        if topic.is_empty() {
            return Err(Error::InvalidTopicName("empty will topic"));
        }
        let payload = r.binary()?;
        Some(Will {
            qos: will_qos,
            retain: will_retain,
            properties,
            topic,
            payload,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
    })
}

fn connack(r: &mut Reader, v5: bool) -> Result<ConnAck, Error> {
    let flags = r.u8()?;
    if flags & 0xFE != 0 {
        return Err(Error::InvalidConnAckFlags);
    }
    let session_present = flags & 0x01 != 0;
    let code = r.u8()?;
    let reason = if v5 {
        ReasonCode::from_u8(code).filter(|c| c.valid_in(PacketType::ConnAck))
    } else {
        ReasonCode::from_v3_connack(code)
    }
    .ok_or(Error::InvalidReasonCode {
        packet: PacketType::ConnAck,
        code,
    })?;
    // A refusal never comes with a session ([MQTT-3.2.2-6]).
    if session_present && reason != ReasonCode::Success {
        return Err(Error::InvalidConnAckFlags);
    }
    let properties = if v5 {
        r.properties(PropertyContext::Packet(PacketType::ConnAck))?
    } else {
        Properties::new()
    };
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn publish(flags: u8, mut r: Reader, v5: bool) -> Result<Publish, Error> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03)?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(Error::DupOnQoS0);
    }
    let topic = TopicName::from_bytes(r.binary()?)?;
    let packet_id = if qos == QoS::AtMostOnce {
        None
    } else {
        Some(r.packet_id()?)
    };
    let properties = if v5 {
        r.properties(PropertyContext::Packet(PacketType::Publish))?
    } else {
        Properties::new()
    };
    if topic.is_empty() {
        if !v5 {
            return Err(Error::InvalidTopicName("empty topic name"));
        }
        if properties.topic_alias().is_none() {
            return Err(Error::MissingTopic);
        }
    }
    if properties
        .iter()
        .any(|p| matches!(p, Property::ResponseTopic(t) if t.is_empty()))
    {
        return Err(Error::InvalidTopicName("empty Response Topic"));
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload: r.buf,
    })
}

fn pub_response(r: &mut Reader, v5: bool, packet: PacketType) -> Result<PubResponse, Error> {
    let packet_id = r.packet_id()?;
    let (reason, properties) = reason_and_properties(r, v5, packet)?;
    Ok(PubResponse {
        packet_id,
        reason,
        properties,
    })
}

/// The tail shared by PUBACK/PUBREC/PUBREL/PUBCOMP/DISCONNECT/AUTH in MQTT 5:
/// an absent reason code means Success and absent properties mean none.
fn reason_and_properties(
    r: &mut Reader,
    v5: bool,
    packet: PacketType,
) -> Result<(ReasonCode, Properties), Error> {
    if !v5 || r.is_empty() {
        return Ok((ReasonCode::Success, Properties::new()));
    }
    let reason = r.reason(packet)?;
    let properties = if r.is_empty() {
        Properties::new()
    } else {
        r.properties(PropertyContext::Packet(packet))?
    };
    Ok((reason, properties))
}

fn subscribe(r: &mut Reader, v5: bool) -> Result<Subscribe, Error> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        r.properties(PropertyContext::Packet(PacketType::Subscribe))?
    } else {
        Properties::new()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = TopicFilter::from_mqtt_string(r.string()?)?;
        let byte = r.u8()?;
        let reserved = if v5 { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(Error::InvalidSubscriptionOptions);
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(Error::InvalidRetainHandling),
        };
        filters.push((
            filter,
            SubscriptionOptions {
                qos: QoS::from_u8(byte & 0x03)?,
                no_local: byte & 0x04 != 0,
                retain_as_published: byte & 0x08 != 0,
                retain_handling,
            },
        ));
    }
    if filters.is_empty() {
        return Err(Error::NoTopicFilters(PacketType::Subscribe));
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn suback(r: &mut Reader, v5: bool) -> Result<SubAck, Error> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        r.properties(PropertyContext::Packet(PacketType::SubAck))?
    } else {
        Properties::new()
    };
    let mut reasons = Vec::with_capacity(r.buf.remaining());
    while !r.is_empty() {
        let code = r.u8()?;
        let reason = ReasonCode::from_u8(code)
            .filter(|c| c.valid_in(PacketType::SubAck) && (v5 || (*c as u8) <= 2 || code == 0x80))
            .ok_or(Error::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            })?;
        reasons.push(reason);
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

fn unsubscribe(r: &mut Reader, v5: bool) -> Result<Unsubscribe, Error> {
    let packet_id = r.packet_id()?;
    let properties = if v5 {
        r.properties(PropertyContext::Packet(PacketType::Unsubscribe))?
    } else {
        Properties::new()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(TopicFilter::from_mqtt_string(r.string()?)?);
    }
    if filters.is_empty() {
        return Err(Error::NoTopicFilters(PacketType::Unsubscribe));
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, v5: bool) -> Result<UnsubAck, Error> {
    let packet_id = r.packet_id()?;
    let mut unsuback = UnsubAck {
        packet_id,
        properties: Properties::new(),
        reasons: Vec::new(),
    };
    if v5 {
        unsuback.properties = r.properties(PropertyContext::Packet(PacketType::UnsubAck))?;
        while !r.is_empty() {
            unsuback.reasons.push(r.reason(PacketType::UnsubAck)?);
        }
    }
    Ok(unsuback)
}
