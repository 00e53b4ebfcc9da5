//! decode ∘ encode = identity for every packet type of MQTT 3.1 and 3.1.1
//! (habit 2). The strategies generate only what 3.x can carry: no
//! properties, the six CONNACK return codes, SUBACK 0/1/2/0x80, no reason
//! codes elsewhere, QoS as the only subscription option.

mod common;

use common::check_round_trip;
use common::strategies::packet;
use ferrymq_codec::packet::PacketType;
use ferrymq_codec::Protocol;
use proptest::prelude::*;

macro_rules! round_trips {
    ($protocol:expr; $($name:ident: $t:ident,)*) => {
        proptest! {
            $(
                #[test]
                fn $name(p in packet($protocol, PacketType::$t)) {
                    check_round_trip(&p, $protocol)?;
                }
            )*
        }
    };
}

mod v3_1 {
    use super::*;

    round_trips! {
        Protocol::V3_1;
        connect: Connect,
        connack: ConnAck,
        publish: Publish,
        puback: PubAck,
        pubrec: PubRec,
        pubrel: PubRel,
        pubcomp: PubComp,
        subscribe: Subscribe,
        suback: SubAck,
        unsubscribe: Unsubscribe,
        unsuback: UnsubAck,
        pingreq: PingReq,
        pingresp: PingResp,
        disconnect: Disconnect,
    }
}

mod v3_1_1 {
    use super::*;

    round_trips! {
        Protocol::V3_1_1;
        connect: Connect,
        connack: ConnAck,
        publish: Publish,
        puback: PubAck,
        pubrec: PubRec,
        pubrel: PubRel,
        pubcomp: PubComp,
        subscribe: Subscribe,
        suback: SubAck,
        unsubscribe: Unsubscribe,
        unsuback: UnsubAck,
        pingreq: PingReq,
        pingresp: PingResp,
        disconnect: Disconnect,
    }
}

/// The strategies themselves stay inside 3.x: a generated packet never
/// carries properties or a reason code 3.x cannot express.
mod strategies_stay_in_3x {
    use super::*;
    use common::strategies::any_packet;
    use ferrymq_codec::{Packet, ReasonCode};

    fn check_3x(p: &Packet) -> Result<(), TestCaseError> {
        match p {
            Packet::Connect(c) => {
                prop_assert!(c.properties.is_empty());
                if let Some(w) = &c.will {
                    prop_assert!(w.properties.is_empty());
                }
                prop_assert!(c.password.is_none() || c.username.is_some());
            }
            Packet::ConnAck(c) => {
                prop_assert!(c.properties.is_empty());
                prop_assert!(c.reason.to_v3_connack().is_some());
            }
            Packet::Publish(x) => {
                prop_assert!(x.properties.is_empty());
                prop_assert!(!x.topic.is_empty());
            }
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                prop_assert_eq!(r.reason, ReasonCode::Success);
                prop_assert!(r.properties.is_empty());
            }
            Packet::Subscribe(s) => prop_assert!(s.properties.is_empty()),
            Packet::SubAck(s) => {
                prop_assert!(s.properties.is_empty());
                for r in &s.reasons {
                    prop_assert!(matches!(*r as u8, 0 | 1 | 2 | 0x80));
                }
            }
            Packet::Unsubscribe(u) => prop_assert!(u.properties.is_empty()),
            Packet::UnsubAck(u) => {
                prop_assert!(u.properties.is_empty() && u.reasons.is_empty())
            }
            Packet::Disconnect(d) => {
                prop_assert_eq!(d.reason, ReasonCode::Success);
                prop_assert!(d.properties.is_empty());
            }
            Packet::Auth(_) => prop_assert!(false, "AUTH in 3.x"),
            Packet::PingReq | Packet::PingResp => {}
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn v3_1(p in any_packet(Protocol::V3_1)) {
            check_3x(&p)?;
        }

        #[test]
        fn v3_1_1(p in any_packet(Protocol::V3_1_1)) {
            check_3x(&p)?;
        }
    }
}
