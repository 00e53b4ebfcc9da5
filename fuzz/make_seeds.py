#!/usr/bin/env python3
"""Writes the hand-made seed corpora under fuzz/corpus-seed/<target>/.

The packets are built byte by byte from the standards, independently of
ferrymq's encoder, so a codec bug cannot hide itself in its own seeds.
Each decode seed is a stream of valid packets (the replay test checks that
they decode completely). Re-run after editing; the output is deterministic:

    python3 fuzz/make_seeds.py
"""

import os
import shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus-seed")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def u16(n):
    return n.to_bytes(2, "big")


def u32(n):
    return n.to_bytes(4, "big")


def s(text):
    """An MQTT string or Binary Data: two-byte length, then the bytes."""
    b = text.encode() if isinstance(text, str) else bytes(text)
    return u16(len(b)) + b


def packet(ptype, flags, body):
    return bytes([(ptype << 4) | flags]) + varint(len(body)) + body


def props(*items):
    body = b"".join(items)
    return varint(len(body)) + body


# MQTT 5 properties, by identifier.
def p_u8(pid, v):
    return bytes([pid, v])


def p_u16(pid, v):
    return bytes([pid]) + u16(v)


def p_u32(pid, v):
    return bytes([pid]) + u32(v)


def p_str(pid, v):
    return bytes([pid]) + s(v)


def p_var(pid, v):
    return bytes([pid]) + varint(v)


def p_user(k, v):
    return bytes([0x26]) + s(k) + s(v)


CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP = 8, 9, 10, 11, 12, 13
DISCONNECT, AUTH = 14, 15


def v3_packets(name, level):
    """The 3.x packets; `name`/`level` pick 3.1 (MQIsdp/3) or 3.1.1 (MQTT/4)."""
    head = s(name) + bytes([level])
    p = {}
    p["connect_minimal"] = packet(CONNECT, 0, head + bytes([0x02]) + u16(60) + s("client-1"))
    # Clean session, will QoS 1 retained, user name and password.
    p["connect_full"] = packet(
        CONNECT,
        0,
        head
        + bytes([0x02 | 0x04 | (1 << 3) | 0x20 | 0x40 | 0x80])
        + u16(30)
        + s("sensor-42")
        + s("devices/sensor-42/status")
        + s(b"offline")
        + s("alice")
        + s(b"\x00secret\xff"),
    )
    p["connack"] = packet(CONNACK, 0, bytes([0x01, 0x00]))
    p["connack_refused"] = packet(CONNACK, 0, bytes([0x00, 0x05]))
    p["publish_qos0"] = packet(PUBLISH, 0b0000, s("a/b") + b"hello")
    p["publish_qos1"] = packet(PUBLISH, 0b0010, s("sensors/temp") + u16(1) + b"21.5")
    p["publish_qos2_dup_retain"] = packet(PUBLISH, 0b1101, s("x") + u16(0xFFFF) + bytes(range(256)))
    p["publish_empty_payload"] = packet(PUBLISH, 0b0011, s("retained/clear") + u16(7))
    p["puback"] = packet(PUBACK, 0, u16(1))
    p["pubrec"] = packet(PUBREC, 0, u16(2))
    p["pubrel"] = packet(PUBREL, 0b0010, u16(2))
    p["pubcomp"] = packet(PUBCOMP, 0, u16(2))
    p["subscribe"] = packet(
        SUBSCRIBE, 0b0010, u16(10) + s("a/+/c") + b"\x00" + s("sport/#") + b"\x01" + s("$SYS/x") + b"\x02"
    )
    p["suback"] = packet(SUBACK, 0, u16(10) + bytes([0x00, 0x01, 0x02, 0x80]))
    p["unsubscribe"] = packet(UNSUBSCRIBE, 0b0010, u16(11) + s("a/+/c") + s("#"))
    p["unsuback"] = packet(UNSUBACK, 0, u16(11))
    p["pingreq"] = packet(PINGREQ, 0, b"")
    p["pingresp"] = packet(PINGRESP, 0, b"")
    p["disconnect"] = packet(DISCONNECT, 0, b"")
    # A publish large enough for a two-byte Remaining Length.
    p["publish_2byte_len"] = packet(PUBLISH, 0b0010, s("big") + u16(3) + b"z" * 300)
    return p


def v5_packets():
    head = s("MQTT") + bytes([5])
    p = {}
    p["connect_minimal"] = packet(CONNECT, 0, head + bytes([0x02]) + u16(60) + props() + s(""))
    p["connect_full"] = packet(
        CONNECT,
        0,
        head
        + bytes([0x02 | 0x04 | (2 << 3) | 0x20 | 0x40 | 0x80])
        + u16(0)
        + props(
            p_u32(0x11, 3600),  # Session Expiry Interval
            p_u16(0x21, 20),  # Receive Maximum
            p_u32(0x27, 1 << 20),  # Maximum Packet Size
            p_u16(0x22, 10),  # Topic Alias Maximum
            p_u8(0x19, 1),  # Request Response Information
            p_u8(0x17, 0),  # Request Problem Information
            p_user("k", "v"),
            p_user("k", "v2"),
            p_str(0x15, "SCRAM-SHA-256"),  # Authentication Method
            p_str(0x16, b"\x01\x02"),  # Authentication Data
        )
        + s("client-5")
        + props(
            p_u32(0x18, 5),  # Will Delay Interval
            p_u8(0x01, 1),  # Payload Format Indicator
            p_u32(0x02, 60),  # Message Expiry Interval
            p_str(0x03, "text/plain"),  # Content Type
            p_str(0x08, "replies/here"),  # Response Topic
            p_str(0x09, b"corr"),  # Correlation Data
            p_user("will", "yes"),
        )
        + s("clients/client-5/will")
        + s(b"gone")
        + s("bob")
        + s(b"pw"),
    )
    # MQTT 5 allows a password without a user name.
    p["connect_password_only"] = packet(CONNECT, 0, head + bytes([0x40]) + u16(10) + props() + s("c") + s(b"token"))
    p["connack"] = packet(
        CONNACK,
        0,
        bytes([0x00, 0x00])
        + props(
            p_u32(0x11, 0),
            p_u16(0x21, 100),
            p_u8(0x24, 1),  # Maximum QoS
            p_u8(0x25, 1),  # Retain Available
            p_u32(0x27, 65536),
            p_str(0x12, "auto-XYZ"),  # Assigned Client Identifier
            p_u16(0x22, 5),
            p_str(0x1F, "welcome"),  # Reason String
            p_u8(0x28, 1),
            p_u8(0x29, 1),
            p_u8(0x2A, 0),
            p_u16(0x13, 30),  # Server Keep Alive
            p_str(0x1A, "resp/info"),  # Response Information
            p_str(0x1C, "other.example:1883"),  # Server Reference
        ),
    )
    p["connack_refused"] = packet(CONNACK, 0, bytes([0x00, 0x87]) + props(p_str(0x1F, "not authorized")))
    p["publish_qos0"] = packet(PUBLISH, 0b0000, s("a/b") + props() + b"hello")
    p["publish_qos1"] = packet(PUBLISH, 0b0010, s("sensors/temp") + u16(1) + props() + b"21.5")
    p["publish_props"] = packet(
        PUBLISH,
        0b0101,
        s("req/1")
        + u16(9)
        + props(
            p_u8(0x01, 1),
            p_u32(0x02, 10),
            p_u16(0x23, 3),  # Topic Alias
            p_str(0x08, "resp/1"),
            p_str(0x09, b"\xde\xad"),
            p_user("a", "b"),
            p_var(0x0B, 1),  # Subscription Identifier (repeatable in PUBLISH)
            p_var(0x0B, 268435455),
            p_str(0x03, "application/json"),
        )
        + b'{"v":1}',
    )
    # An empty topic with a Topic Alias.
    p["publish_alias_only"] = packet(PUBLISH, 0b0011, s("") + u16(4) + props(p_u16(0x23, 3)) + b"again")
    p["puback_short"] = packet(PUBACK, 0, u16(1))
    p["puback_reason"] = packet(PUBACK, 0, u16(1) + bytes([0x10]))
    p["puback_reason_props"] = packet(PUBACK, 0, u16(1) + bytes([0x97]) + props(p_str(0x1F, "quota"), p_user("x", "y")))
    p["pubrec"] = packet(PUBREC, 0, u16(2) + bytes([0x00]) + props())
    p["pubrel"] = packet(PUBREL, 0b0010, u16(2) + bytes([0x92]))
    p["pubcomp"] = packet(PUBCOMP, 0, u16(2))
    p["subscribe"] = packet(
        SUBSCRIBE,
        0b0010,
        u16(10)
        + props(p_var(0x0B, 42), p_user("s", "t"))
        + s("a/+/c")
        + bytes([0x00])
        + s("sport/#")
        + bytes([0x01 | 0x04 | 0x08 | (1 << 4)])
        + s("$share/g/x")
        + bytes([0x02 | (2 << 4)]),
    )
    p["suback"] = packet(SUBACK, 0, u16(10) + props(p_str(0x1F, "partly")) + bytes([0x00, 0x01, 0x02, 0x80, 0x8F, 0xA2]))
    p["unsubscribe"] = packet(UNSUBSCRIBE, 0b0010, u16(11) + props(p_user("u", "v")) + s("a/+/c") + s("#"))
    p["unsuback"] = packet(UNSUBACK, 0, u16(11) + props() + bytes([0x00, 0x11, 0x87]))
    p["pingreq"] = packet(PINGREQ, 0, b"")
    p["pingresp"] = packet(PINGRESP, 0, b"")
    p["disconnect_short"] = packet(DISCONNECT, 0, b"")
    p["disconnect_reason"] = packet(DISCONNECT, 0, bytes([0x04]))
    p["disconnect_props"] = packet(
        DISCONNECT, 0, bytes([0x9C]) + props(p_u32(0x11, 0), p_str(0x1C, "b.example"), p_str(0x1F, "moved"))
    )
    p["auth"] = packet(AUTH, 0, bytes([0x18]) + props(p_str(0x15, "SCRAM-SHA-256"), p_str(0x16, b"\x00\x01")))
    p["auth_short"] = packet(AUTH, 0, b"")
    return p


def write(target, packets):
    d = os.path.join(ROOT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in packets.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def decode_seeds(packets):
    seeds = dict(packets)
    # Whole sessions as one stream, the way a socket delivers them.
    order = [k for k in packets if k.startswith("connect")][:1] + [
        k for k in packets if not k.startswith("connect")
    ]
    seeds["stream_session"] = b"".join(packets[k] for k in order)
    seeds["stream_publishes"] = b"".join(packets[k] for k in packets if k.startswith("publish")) * 3
    return seeds


def connect_level(connect):
    """The protocol level of an encoded CONNECT."""
    i = 1
    while connect[i] & 0x80:  # Remaining Length
        i += 1
    i += 1
    name_len = int.from_bytes(connect[i : i + 2], "big")
    return connect[i + 2 + name_len]


def main():
    v3_1 = v3_packets("MQIsdp", 3)
    v3_1_1 = v3_packets("MQTT", 4)
    v5 = v5_packets()
    # A CONNECT names its own version, whatever the connection was set to
    # before it arrived: give each target the other versions' CONNECTs too.
    for own, others in [(v3_1, [v3_1_1, v5]), (v3_1_1, [v3_1, v5]), (v5, [v3_1, v3_1_1])]:
        for other in others:
            own[f"connect_full_level{connect_level(other['connect_full'])}"] = other["connect_full"]
    write("decode_v3_1", decode_seeds(v3_1))
    write("decode_v3_1_1", decode_seeds(v3_1_1))
    write("decode_v5", decode_seeds(v5))
    topics = [
        "#", "+", "a", "a/b", "a/+/c", "sport/tennis/#", "+/+/#", "/", "//", "/+/",
        "$SYS/broker/load", "$share/group/a/#", "a//b", "", "a#", "a/#/b", "#/", "a+",
        "+a/b", "a/b+", "##", "++", "caf\u00e9/\u2603/\U0001F680", " spaced / level ",
    ]
    seeds = {f"topic_{i:02}": t.encode() for i, t in enumerate(topics)}
    seeds["nul"] = b"a\x00b"
    seeds["surrogate"] = b"a/\xed\xa0\x80"
    seeds["overlong_slash"] = b"a\xc0\xafb"
    seeds["long_levels"] = b"/".join([b"level"] * 200)
    write("topic_filter", seeds)


if __name__ == "__main__":
    main()
