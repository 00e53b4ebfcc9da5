//! Packets in, bytes out, into the caller's `BytesMut`. The Remaining
//! Length is computed first so that each packet is written in one pass with
//! one `reserve`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::packet::*;
use crate::property::{Properties, Property};
use crate::reason::ReasonCode;
use crate::types::{MqttString, Protocol};
use crate::{varint, Error};

/// Appends the encoding of `packet` to `buf` and returns its size. On error
/// `buf` is left as it was.
pub fn encode(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<usize, Error> {
    let start = buf.len();
    let v5 = protocol.is_v5();
    // Most of the traffic (PUBLISH, its acknowledgements, pings) takes a
    // straight path without the generic dispatch (twice) over every type.
    let result = match packet {
        Packet::Publish(p) => publish(&p.borrowed(), v5, buf),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r)
            if !v5 || (r.reason == ReasonCode::Success && r.properties.is_empty()) =>
        {
            let ptype = packet.packet_type();
            let [hi, lo] = r.packet_id.get().to_be_bytes();
            buf.put_slice(&[((ptype as u8) << 4) | ptype.required_flags(), 2, hi, lo]);
            Ok(4)
        }
        Packet::PingReq | Packet::PingResp => {
            buf.put_slice(&[(packet.packet_type() as u8) << 4, 0]);
            Ok(2)
        }
        _ => encode_inner(packet, protocol, buf),
    };
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// The size `packet` will take on the wire, fixed header included.
pub fn encoded_len(packet: &Packet, protocol: Protocol) -> Result<usize, Error> {
    let remaining = remaining_len(packet, protocol.is_v5())?;
    Ok(1 + varint::len(remaining as u32) + remaining)
}

fn encode_inner(packet: &Packet, protocol: Protocol, buf: &mut BytesMut) -> Result<usize, Error> {
    let v5 = protocol.is_v5();
    let remaining = remaining_len(packet, v5)?;
    let total = 1 + varint::len(remaining as u32) + remaining;
    buf.reserve(total);
    let ptype = packet.packet_type();
    let flags = match packet {
        Packet::Publish(p) => publish_flags(&p.borrowed()),
        _ => ptype.required_flags(),
    };
    buf.put_u8(((ptype as u8) << 4) | flags);
    varint::write(buf, remaining as u32);
    match packet {
        Packet::Connect(c) => connect(c, buf)?,
        Packet::ConnAck(c) => {
            buf.put_u8(u8::from(c.session_present));
            buf.put_u8(if v5 {
                c.reason as u8
            } else {
                c.reason.to_v3_connack_lossy()
            });
            if v5 {
                properties(&c.properties, buf)?;
            }
        }
        Packet::Publish(p) => publish_body(&p.borrowed(), v5, buf)?,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            buf.put_u16(r.packet_id.get());
            reason_tail(v5, r.reason, &r.properties, buf)?;
        }
        Packet::Subscribe(s) => {
            buf.put_u16(s.packet_id.get());
            if v5 {
                properties(&s.properties, buf)?;
            }
            for (filter, opts) in &s.filters {
                mqtt_string(filter.as_mqtt_string(), buf)?;
                let mut byte = opts.qos as u8;
                if v5 {
                    byte |= u8::from(opts.no_local) << 2
                        | u8::from(opts.retain_as_published) << 3
                        | (opts.retain_handling as u8) << 4;
                }
                buf.put_u8(byte);
            }
        }
        Packet::SubAck(s) => {
            buf.put_u16(s.packet_id.get());
            if v5 {
                properties(&s.properties, buf)?;
            }
            for reason in &s.reasons {
                let code = *reason as u8;
                // 3.x knows only the granted QoS values and 0x80 (failure).
                buf.put_u8(if v5 || code <= 2 { code } else { 0x80 });
            }
        }
        Packet::Unsubscribe(u) => {
            buf.put_u16(u.packet_id.get());
            if v5 {
                properties(&u.properties, buf)?;
            }
            for filter in &u.filters {
                mqtt_string(filter.as_mqtt_string(), buf)?;
            }
        }
        Packet::UnsubAck(u) => {
            buf.put_u16(u.packet_id.get());
            if v5 {
                properties(&u.properties, buf)?;
                for reason in &u.reasons {
                    buf.put_u8(*reason as u8);
                }
            }
        }
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect { reason, properties })
        | Packet::Auth(Auth { reason, properties }) => {
            if v5 && (*reason != ReasonCode::Success || !properties.is_empty()) {
                buf.put_u8(*reason as u8);
                if !properties.is_empty() {
                    self::properties(properties, buf)?;
                }
            }
        }
    }
    Ok(total)
}

/// Appends a PUBLISH made of borrowed parts (see [`PublishRef`]) and
/// returns its size; on error `buf` is left as it was.
pub fn encode_publish(
    p: &PublishRef<'_>,
    protocol: Protocol,
    buf: &mut BytesMut,
) -> Result<usize, Error> {
    let start = buf.len();
    let result = publish(p, protocol.is_v5(), buf);
    if result.is_err() {
        buf.truncate(start);
    }
    result
}

/// A whole PUBLISH: what `encode_inner` does for it, minus the dispatch.
#[inline]
fn publish(p: &PublishRef<'_>, v5: bool, buf: &mut BytesMut) -> Result<usize, Error> {
    let remaining = publish_remaining_len(p, v5)?;
    let total = 1 + varint::len(remaining as u32) + remaining;
    buf.reserve(total);
    buf.put_u8(((PacketType::Publish as u8) << 4) | publish_flags(p));
    varint::write(buf, remaining as u32);
    publish_body(p, v5, buf)?;
    Ok(total)
}

#[inline]
fn publish_flags(p: &PublishRef<'_>) -> u8 {
    (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
}

#[inline(always)]
fn publish_body(p: &PublishRef<'_>, v5: bool, buf: &mut BytesMut) -> Result<(), Error> {
    mqtt_string(p.topic.as_mqtt_string(), buf)?;
    if let Some(id) = p.packet_id {
        buf.put_u16(id.get());
    }
    if v5 {
        properties(p.properties, buf)?;
    }
    buf.put_slice(p.payload);
    Ok(())
}

/// Checked against the Variable Byte Integer maximum.
#[inline]
fn publish_remaining_len(p: &PublishRef<'_>, v5: bool) -> Result<usize, Error> {
    let props = if v5 {
        properties_field_len(p.properties)?
    } else {
        0
    };
    let len =
        2 + p.topic.len() + if p.packet_id.is_some() { 2 } else { 0 } + props + p.payload.len();
    check_varint(len)?;
    Ok(len)
}

fn connect(c: &Connect, buf: &mut BytesMut) -> Result<(), Error> {
    let v5 = c.protocol.is_v5();
    string(c.protocol.name().as_bytes(), buf)?;
    buf.put_u8(c.protocol.level());
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    if v5 {
        properties(&c.properties, buf)?;
    }
    mqtt_string(&c.client_id, buf)?;
    if let Some(w) = &c.will {
        if v5 {
            properties(&w.properties, buf)?;
        }
        mqtt_string(w.topic.as_mqtt_string(), buf)?;
        string(&w.payload, buf)?;
    }
    if let Some(u) = &c.username {
        mqtt_string(u, buf)?;
    }
    if let Some(p) = &c.password {
        string(p, buf)?;
    }
    Ok(())
}

fn reason_tail(
    v5: bool,
    reason: ReasonCode,
    props: &Properties,
    buf: &mut BytesMut,
) -> Result<(), Error> {
    if v5 && (reason != ReasonCode::Success || !props.is_empty()) {
        buf.put_u8(reason as u8);
        if !props.is_empty() {
            properties(props, buf)?;
        }
    }
    Ok(())
}

/// A length-prefixed field: an MQTT string or Binary Data.
fn string(bytes: &[u8], buf: &mut BytesMut) -> Result<(), Error> {
    let len = u16::try_from(bytes.len()).map_err(|_| Error::StringTooLong(bytes.len()))?;
    buf.put_u16(len);
    buf.put_slice(bytes);
    Ok(())
}

fn mqtt_string(s: &MqttString, buf: &mut BytesMut) -> Result<(), Error> {
    string(s.as_bytes(), buf)
}

fn properties(props: &Properties, buf: &mut BytesMut) -> Result<(), Error> {
    varint::write(buf, properties_len(props) as u32);
    for p in props {
        buf.put_u8(p.id());
        match p {
            Property::PayloadFormatIndicator(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQoS(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v) => buf.put_u8(*v),
            Property::ServerKeepAlive(v)
            | Property::ReceiveMaximum(v)
            | Property::TopicAliasMaximum(v)
            | Property::TopicAlias(v) => buf.put_u16(*v),
            Property::MessageExpiryInterval(v)
            | Property::SessionExpiryInterval(v)
            | Property::WillDelayInterval(v)
            | Property::MaximumPacketSize(v) => buf.put_u32(*v),
            Property::SubscriptionIdentifier(v) => varint::write(buf, *v),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => mqtt_string(s, buf)?,
            Property::CorrelationData(b) | Property::AuthenticationData(b) => string(b, buf)?,
            Property::UserProperty(k, v) => {
                mqtt_string(k, buf)?;
                mqtt_string(v, buf)?;
            }
        }
    }
    Ok(())
}

fn property_len(p: &Property) -> usize {
    1 + match p {
        Property::PayloadFormatIndicator(_)
        | Property::RequestProblemInformation(_)
        | Property::RequestResponseInformation(_)
        | Property::MaximumQoS(_)
        | Property::RetainAvailable(_)
        | Property::WildcardSubscriptionAvailable(_)
        | Property::SubscriptionIdentifierAvailable(_)
        | Property::SharedSubscriptionAvailable(_) => 1,
        Property::ServerKeepAlive(_)
        | Property::ReceiveMaximum(_)
        | Property::TopicAliasMaximum(_)
        | Property::TopicAlias(_) => 2,
        Property::MessageExpiryInterval(_)
        | Property::SessionExpiryInterval(_)
        | Property::WillDelayInterval(_)
        | Property::MaximumPacketSize(_) => 4,
        Property::SubscriptionIdentifier(v) => varint::len(*v),
        Property::ContentType(s)
        | Property::ResponseTopic(s)
        | Property::AssignedClientIdentifier(s)
        | Property::AuthenticationMethod(s)
        | Property::ResponseInformation(s)
        | Property::ServerReference(s)
        | Property::ReasonString(s) => 2 + s.len(),
        Property::CorrelationData(b) | Property::AuthenticationData(b) => 2 + b.len(),
        Property::UserProperty(k, v) => 4 + k.len() + v.len(),
    }
}

/// The bytes `props` take on the wire, without the length field before them.
pub fn properties_len(props: &Properties) -> usize {
    props.iter().map(property_len).sum()
}

/// Properties with their length prefix.
fn properties_field_len(props: &Properties) -> Result<usize, Error> {
    let len = properties_len(props);
    check_varint(len)?;
    Ok(varint::len(len as u32) + len)
}

fn check_varint(len: usize) -> Result<(), Error> {
    if len > varint::MAX as usize {
        Err(Error::RemainingLengthTooLarge(len))
    } else {
        Ok(())
    }
}

fn reason_tail_len(v5: bool, reason: ReasonCode, props: &Properties) -> Result<usize, Error> {
    Ok(
        if !v5 || (reason == ReasonCode::Success && props.is_empty()) {
            0
        } else if props.is_empty() {
            1
        } else {
            1 + properties_field_len(props)?
        },
    )
}

fn remaining_len(packet: &Packet, v5: bool) -> Result<usize, Error> {
    let props = |p: &Properties| -> Result<usize, Error> {
        if v5 {
            properties_field_len(p)
        } else {
            Ok(0)
        }
    };
    let len = match packet {
        Packet::Connect(c) => {
            // A CONNECT names its own version, and `connect` writes its
            // properties by that version, not the connection's.
            let props = |p: &Properties| -> Result<usize, Error> {
                if c.protocol.is_v5() {
                    properties_field_len(p)
                } else {
                    Ok(0)
                }
            };
            let mut len = 2 + c.protocol.name().len() + 1 + 1 + 2;
            len += props(&c.properties)? + 2 + c.client_id.len();
            if let Some(w) = &c.will {
                len += props(&w.properties)? + 2 + w.topic.len() + 2 + w.payload.len();
            }
            len += c.username.as_ref().map_or(0, |u| 2 + u.len());
            len += c.password.as_ref().map_or(0, |p| 2 + p.len());
            len
        }
        Packet::ConnAck(c) => 2 + props(&c.properties)?,
        Packet::Publish(p) => publish_remaining_len(&p.borrowed(), v5)?,
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            2 + reason_tail_len(v5, r.reason, &r.properties)?
        }
        Packet::Subscribe(s) => {
            2 + props(&s.properties)? + s.filters.iter().map(|(f, _)| 3 + f.len()).sum::<usize>()
        }
        Packet::SubAck(s) => 2 + props(&s.properties)? + s.reasons.len(),
        Packet::Unsubscribe(u) => {
            2 + props(&u.properties)? + u.filters.iter().map(|f| 2 + f.len()).sum::<usize>()
        }
        Packet::UnsubAck(u) => {
            if v5 {
                2 + props(&u.properties)? + u.reasons.len()
            } else {
                2
            }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(Disconnect { reason, properties })
        | Packet::Auth(Auth { reason, properties }) => reason_tail_len(v5, *reason, properties)?,
    };
    check_varint(len)?;
    Ok(len)
}

/// Convenience for tests and tools: encodes into a fresh buffer.
pub fn to_bytes(packet: &Packet, protocol: Protocol) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    encode(packet, protocol, &mut buf)?;
    Ok(buf.freeze())
}
