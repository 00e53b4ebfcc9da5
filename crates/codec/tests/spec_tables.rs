//! The 5.0 standard's tables, written out again from the text: where each
//! property may appear (section 2.2.2.2, table 2-4) and which reason codes
//! each packet may carry (section 2.4, table 2-6, and the per-packet
//! tables of chapter 3). The round-trip strategies draw on
//! `property::allowed_in` and `ReasonCode::valid_in`, so these tables check
//! them independently.

mod common;

use common::strategies::ALL_PROPERTY_IDS;
use ferrymq_codec::packet::PacketType;
use ferrymq_codec::property::{allowed_in, PropertyContext};
use ferrymq_codec::ReasonCode;

/// Where a property may appear: the packets by name, "Will" for the Will
/// properties of CONNECT.
const PROPERTY_TABLE: &[(u8, &str, &[&str])] = &[
    (0x01, "Payload Format Indicator", &["PUBLISH", "Will"]),
    (0x02, "Message Expiry Interval", &["PUBLISH", "Will"]),
    (0x03, "Content Type", &["PUBLISH", "Will"]),
    (0x08, "Response Topic", &["PUBLISH", "Will"]),
    (0x09, "Correlation Data", &["PUBLISH", "Will"]),
    (0x0B, "Subscription Identifier", &["PUBLISH", "SUBSCRIBE"]),
    (
        0x11,
        "Session Expiry Interval",
        &["CONNECT", "CONNACK", "DISCONNECT"],
    ),
    (0x12, "Assigned Client Identifier", &["CONNACK"]),
    (0x13, "Server Keep Alive", &["CONNACK"]),
    (
        0x15,
        "Authentication Method",
        &["CONNECT", "CONNACK", "AUTH"],
    ),
    (0x16, "Authentication Data", &["CONNECT", "CONNACK", "AUTH"]),
    (0x17, "Request Problem Information", &["CONNECT"]),
    (0x18, "Will Delay Interval", &["Will"]),
    (0x19, "Request Response Information", &["CONNECT"]),
    (0x1A, "Response Information", &["CONNACK"]),
    (0x1C, "Server Reference", &["CONNACK", "DISCONNECT"]),
    (
        0x1F,
        "Reason String",
        &[
            "CONNACK",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBACK",
            "UNSUBACK",
            "DISCONNECT",
            "AUTH",
        ],
    ),
    (0x21, "Receive Maximum", &["CONNECT", "CONNACK"]),
    (0x22, "Topic Alias Maximum", &["CONNECT", "CONNACK"]),
    (0x23, "Topic Alias", &["PUBLISH"]),
    (0x24, "Maximum QoS", &["CONNACK"]),
    (0x25, "Retain Available", &["CONNACK"]),
    (
        0x26,
        "User Property",
        &[
            "CONNECT",
            "CONNACK",
            "PUBLISH",
            "Will",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBSCRIBE",
            "SUBACK",
            "UNSUBSCRIBE",
            "UNSUBACK",
            "DISCONNECT",
            "AUTH",
        ],
    ),
    (0x27, "Maximum Packet Size", &["CONNECT", "CONNACK"]),
    (0x28, "Wildcard Subscription Available", &["CONNACK"]),
    (0x29, "Subscription Identifier Available", &["CONNACK"]),
    (0x2A, "Shared Subscription Available", &["CONNACK"]),
];

fn all_contexts() -> Vec<PropertyContext> {
    let mut all: Vec<_> = (1..=15)
        .filter_map(PacketType::from_u8)
        .map(PropertyContext::Packet)
        .collect();
    all.push(PropertyContext::Will);
    all
}

fn context_name(c: PropertyContext) -> String {
    match c {
        PropertyContext::Packet(t) => t.to_string(),
        PropertyContext::Will => "Will".to_string(),
    }
}

#[test]
fn s2_2_2_2_table_2_4_where_properties_may_appear() {
    assert_eq!(PROPERTY_TABLE.len(), ALL_PROPERTY_IDS.len());
    for &(pid, name, places) in PROPERTY_TABLE {
        assert!(ALL_PROPERTY_IDS.contains(&pid));
        assert_eq!(ferrymq_codec::property::name(pid), name);
        for context in all_contexts() {
            let expected = places.contains(&context_name(context).as_str());
            assert_eq!(
                allowed_in(pid, context),
                expected,
                "{name} ({pid:#04x}) in {context}"
            );
        }
    }
    for pid in (0..=u8::MAX).filter(|p| !ALL_PROPERTY_IDS.contains(p)) {
        for context in all_contexts() {
            assert!(!allowed_in(pid, context), "{pid:#04x} in {context}");
        }
    }
}

use ReasonCode as R;

/// Which packets may carry each reason code. DISCONNECT follows table 3-10
/// (its own reason codes), which does not list 0x8C Bad authentication
/// method although table 2-6 does; the per-packet table is taken as
/// authoritative, as the codec does.
const REASON_TABLE: &[(ReasonCode, &[PacketType])] = {
    use PacketType::*;
    &[
        (
            R::Success,
            &[
                ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
            ],
        ),
        (R::GrantedQoS1, &[SubAck]),
        (R::GrantedQoS2, &[SubAck]),
        (R::DisconnectWithWillMessage, &[Disconnect]),
        (R::NoMatchingSubscribers, &[PubAck, PubRec]),
        (R::NoSubscriptionExisted, &[UnsubAck]),
        (R::ContinueAuthentication, &[Auth]),
        (R::ReAuthenticate, &[Auth]),
        (
            R::UnspecifiedError,
            &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect],
        ),
        (R::MalformedPacket, &[ConnAck, Disconnect]),
        (R::ProtocolError, &[ConnAck, Disconnect]),
        (
            R::ImplementationSpecificError,
            &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect],
        ),
        (R::UnsupportedProtocolVersion, &[ConnAck]),
        (R::ClientIdentifierNotValid, &[ConnAck]),
        (R::BadUserNameOrPassword, &[ConnAck]),
        (
            R::NotAuthorized,
            &[ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect],
        ),
        (R::ServerUnavailable, &[ConnAck]),
        (R::ServerBusy, &[ConnAck, Disconnect]),
        (R::Banned, &[ConnAck]),
        (R::ServerShuttingDown, &[Disconnect]),
        (R::BadAuthenticationMethod, &[ConnAck]),
        (R::KeepAliveTimeout, &[Disconnect]),
        (R::SessionTakenOver, &[Disconnect]),
        (R::TopicFilterInvalid, &[SubAck, UnsubAck, Disconnect]),
        (R::TopicNameInvalid, &[ConnAck, PubAck, PubRec, Disconnect]),
        (
            R::PacketIdentifierInUse,
            &[PubAck, PubRec, SubAck, UnsubAck],
        ),
        (R::PacketIdentifierNotFound, &[PubRel, PubComp]),
        (R::ReceiveMaximumExceeded, &[Disconnect]),
        (R::TopicAliasInvalid, &[Disconnect]),
        (R::PacketTooLarge, &[ConnAck, Disconnect]),
        (R::MessageRateTooHigh, &[Disconnect]),
        (
            R::QuotaExceeded,
            &[ConnAck, PubAck, PubRec, SubAck, Disconnect],
        ),
        (R::AdministrativeAction, &[Disconnect]),
        (
            R::PayloadFormatInvalid,
            &[ConnAck, PubAck, PubRec, Disconnect],
        ),
        (R::RetainNotSupported, &[ConnAck, Disconnect]),
        (R::QoSNotSupported, &[ConnAck, Disconnect]),
        (R::UseAnotherServer, &[ConnAck, Disconnect]),
        (R::ServerMoved, &[ConnAck, Disconnect]),
        (R::SharedSubscriptionsNotSupported, &[SubAck, Disconnect]),
        (R::ConnectionRateExceeded, &[ConnAck, Disconnect]),
        (R::MaximumConnectTime, &[Disconnect]),
        (
            R::SubscriptionIdentifiersNotSupported,
            &[SubAck, Disconnect],
        ),
        (R::WildcardSubscriptionsNotSupported, &[SubAck, Disconnect]),
    ]
};

#[test]
fn s2_4_table_2_6_which_packets_carry_which_reason_codes() {
    assert_eq!(REASON_TABLE.len(), ReasonCode::ALL.len());
    for &(code, packets) in REASON_TABLE {
        for t in (1..=15).filter_map(PacketType::from_u8) {
            assert_eq!(code.valid_in(t), packets.contains(&t), "{code} in {t}");
        }
    }
}

/// The numeric values of table 2-6.
#[test]
fn s2_4_table_2_6_values() {
    let values: Vec<u8> = REASON_TABLE.iter().map(|(c, _)| *c as u8).collect();
    assert_eq!(
        values,
        [
            0x00, 0x01, 0x02, 0x04, 0x10, 0x11, 0x18, 0x19, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85,
            0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x91, 0x92, 0x93,
            0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1,
            0xA2,
        ]
    );
    for &(code, _) in REASON_TABLE {
        assert_eq!(ReasonCode::from_u8(code as u8), Some(code));
    }
}

/// 3.1.1 table 3.1: the CONNACK return codes and the 5.0 reason codes
/// they correspond to.
#[test]
fn s3_2_2_3_v3_connack_return_codes() {
    let table = [
        (0, R::Success),
        (1, R::UnsupportedProtocolVersion),
        (2, R::ClientIdentifierNotValid),
        (3, R::ServerUnavailable),
        (4, R::BadUserNameOrPassword),
        (5, R::NotAuthorized),
    ];
    for (code, reason) in table {
        assert_eq!(ReasonCode::from_v3_connack(code), Some(reason));
        assert_eq!(reason.to_v3_connack(), Some(code));
    }
    for code in 6..=u8::MAX {
        assert_eq!(ReasonCode::from_v3_connack(code), None);
    }
    let expressible = ReasonCode::ALL
        .iter()
        .filter(|r| r.to_v3_connack().is_some())
        .count();
    assert_eq!(expressible, 6);
}
