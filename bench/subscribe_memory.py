#!/usr/bin/env python3
"""One SUBSCRIBE as large as the broker takes, against retained messages:
what it costs the broker (issue 20, item 2).

Publishes RETAINED retained messages, reads the broker's peak RSS, sends
one SUBSCRIBE of about PACKET bytes made of `#` filters (3.1.1, QoS 0),
reads the SUBACK and every PUBLISH until the broker has been quiet for a
second (or BOUND seconds in all), and reads the peak RSS again. Prints one
JSON line.

    subscribe_memory.py HOST PORT BROKER_PID [RETAINED] [PACKET] [BOUND] [same|distinct]

`same`: every filter `#` (a repeated filter); `distinct`: `+/0`, `+/1`, ...
"""

import json
import socket
import struct
import sys
import time


def remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def string(s):
    return struct.pack(">H", len(s)) + s


def connect(host, port, client_id):
    s = socket.create_connection((host, port), timeout=10)
    body = string(b"MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + string(client_id)
    s.sendall(packet(0x10, body))
    ack = s.recv(4)
    assert ack[:2] == b"\x20\x02" and ack[3] == 0, ack
    return s


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    retained = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    size = int(sys.argv[5]) if len(sys.argv) > 5 else 1_999_000
    bound = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0
    distinct = len(sys.argv) > 7 and sys.argv[7] == "distinct"

    pub = connect(host, port, b"retainer")
    burst = b"".join(
        packet(0x31, string(f"r/{i}".encode()) + b"v" * 64) for i in range(retained)
    )
    pub.sendall(burst)
    pub.sendall(b"\xc0\x00")  # PINGREQ: once answered, every retained message is in
    assert pub.recv(2) == b"\xd0\x00"
    before = hwm_kib(pid)

    sub = connect(host, port, b"amplifier")
    if distinct:
        # `+/<i>` filters: each distinct, each walking every first level.
        body, filters = bytearray(struct.pack(">H", 1)), 0
        while len(body) < size - 16:
            body += string(f"+/{filters}".encode()) + b"\x00"
            filters += 1
        body = bytes(body)
    else:
        one = string(b"#") + b"\x00"
        filters = (size - 8) // len(one)
        body = struct.pack(">H", 1) + one * filters
    sub.sendall(packet(0x82, body))
    sub.settimeout(1.0)
    started = time.monotonic()
    received = 0
    suback_at = None
    buf = b""
    while time.monotonic() - started < bound:
        try:
            chunk = sub.recv(1 << 20)
        except socket.timeout:
            if suback_at is not None:
                break
            continue
        if not chunk:
            break
        buf += chunk
        # Count whole packets.
        while True:
            if len(buf) < 2:
                break
            n, mult, i = 0, 1, 1
            while i < len(buf) and i <= 4:
                b = buf[i]
                n += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            else:
                break
            if len(buf) < i + n:
                break
            kind = buf[0] >> 4
            if kind == 9 and suback_at is None:
                suback_at = time.monotonic() - started
            elif kind == 3:
                received += 1
            buf = buf[i + n :]
    after = hwm_kib(pid)
    print(
        json.dumps(
            {
                "retained": retained,
                "subscribe_bytes": len(body),
                "distinct": distinct,
                "filters": filters,
                "suback_seconds": suback_at,
                "retained_received": received,
                "peak_rss_before_kib": before,
                "peak_rss_after_kib": after,
                "bounded_at_seconds": bound if suback_at is None else None,
            }
        )
    )


if __name__ == "__main__":
    main()
