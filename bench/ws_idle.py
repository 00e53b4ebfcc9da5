#!/usr/bin/env python3
"""Idle MQTT-over-WebSocket clients, for bench/idle.sh (the load generator
has no WebSocket byte stream): N clients connect one after another (HTTP
upgrade, subprotocol mqtt, MQTT 3.1.1 CONNECT in a masked binary frame),
then idle for DURATION seconds, each sending a PINGREQ every half
keep-alive. Prints one JSON object shaped like `ferrymq bench conn --json`:
connect figures, the broker's RSS per connection, errors.

    ws_idle.py PORT N BROKER_PID KEEPALIVE DURATION
"""
import base64
import json
import os
import socket
import struct
import sys
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def frame(payload):
    """A masked binary frame, as a client must send ([RFC 6455] 5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def connect(port, i, keepalive):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1024)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    client_id = f"ws-idle-{i}".encode()
    body = b"\x00\x04MQTT\x04\x02" + struct.pack(">H", keepalive)
    body += struct.pack(">H", len(client_id)) + client_id
    s.sendall(frame(bytes([0x10, len(body)]) + body))
    # A server frame is unmasked: two header bytes, then the CONNACK.
    ack = read_exact(s, 6)
    if ack[2:] != b"\x20\x02\x00\x00":
        raise ConnectionError(f"CONNACK {ack[2:].hex()}")
    s.setblocking(False)
    return s


def main():
    port, n, pid, keepalive, duration = (int(a) for a in sys.argv[1:6])
    before = rss(pid)
    errors, samples, conns = 0, [], []
    started = time.monotonic()
    for i in range(1, n + 1):
        try:
            conns.append(connect(port, i, keepalive))
        except Exception as e:  # counted, as the load generator does
            errors += 1
            if len(samples) < 5:
                samples.append(f"{i}: {e}")
    elapsed = time.monotonic() - started
    after = rss(pid)
    ping = frame(b"\xc0\x00")
    end = time.monotonic() + duration
    next_ping = time.monotonic() + keepalive / 2
    while time.monotonic() < end:
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        for s in conns:
            try:
                s.recv(4096)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass
        if time.monotonic() >= next_ping:
            next_ping += keepalive / 2
            for s in conns:
                try:
                    s.send(ping)
                except OSError:
                    pass
    print(
        json.dumps(
            {
                "connect": {
                    "attempted": n,
                    "connected": len(conns),
                    "seconds": elapsed,
                    "per_second": len(conns) / elapsed if elapsed else 0,
                },
                "broker_rss_per_connection_bytes": (after - before) / len(conns)
                if conns
                else None,
                "errors": errors,
                "error_samples": samples,
            }
        )
    )


if __name__ == "__main__":
    main()
