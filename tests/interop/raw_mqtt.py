#!/usr/bin/env python3
"""Raw MQTT bytes for the interop suite, built from the specification's
field tables (no MQTT library), so the same bytes go to both brokers.

    raw_mqtt.py connack HOST PORT [v5|v311] [KEEPALIVE]
        CONNECT, print the CONNACK as hex.
    raw_mqtt.py connack-unix PATH [v5|v311]
        The same over a Unix-domain socket.
    raw_mqtt.py proxy-v2 HOST PORT SRC_IP SRC_PORT
        A PROXY protocol v2 header naming SRC_IP:SRC_PORT, then CONNECT;
        print the CONNACK as hex.

Exits 1 (printing "closed") when the broker closes without a CONNACK.
"""

import ipaddress
import socket
import struct
import sys

TIMEOUT = 10


def mqtt_string(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


def packet(first: int, body: bytes) -> bytes:
    out = bytearray([first])
    n = len(body)
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(out) + body


def connect(version: str, client_id: str, keep_alive: int) -> bytes:
    level = 5 if version == "v5" else 4
    body = mqtt_string(b"MQTT") + bytes([level, 0x02]) + struct.pack(">H", keep_alive)
    if level == 5:
        body += b"\x00"  # no properties
    body += mqtt_string(client_id.encode())
    return packet(0x10, body)


def proxy_v2(src_ip: str, src_port: int, dst: tuple) -> bytes:
    src = ipaddress.ip_address(src_ip)
    dst_ip = ipaddress.ip_address(dst[0])
    if src.version == 4 and dst_ip.version == 4:
        family, addrs = 0x11, src.packed + dst_ip.packed
    else:
        v6 = lambda a: a.packed if a.version == 6 else ipaddress.IPv6Address("::ffff:" + str(a)).packed
        family, addrs = 0x21, v6(src) + v6(dst_ip)
    body = addrs + struct.pack(">HH", src_port, dst[1])
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, family]) + struct.pack(">H", len(body)) + body


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    """n bytes, or exit printing "closed" if the broker closes first."""
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            print("closed")
            sys.exit(1)
        data += chunk
    return data


def read_connack(sock: socket.socket) -> bytes:
    head = recv_exactly(sock, 2)
    return head + recv_exactly(sock, head[1])


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "connack":
        host, port = sys.argv[2], int(sys.argv[3])
        version = sys.argv[4] if len(sys.argv) > 4 else "v5"
        keep_alive = int(sys.argv[5]) if len(sys.argv) > 5 else 60
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        sock.sendall(connect(version, "raw-connack", keep_alive))
    elif cmd == "connack-unix":
        version = sys.argv[3] if len(sys.argv) > 3 else "v5"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(sys.argv[2])
        sock.sendall(connect(version, "raw-unix", 60))
    elif cmd == "proxy-v2":
        host, port = sys.argv[2], int(sys.argv[3])
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        header = proxy_v2(sys.argv[4], int(sys.argv[5]), (host, port))
        sock.sendall(header + connect("v311", "raw-proxied", 60))
    else:
        sys.exit(f"unknown command {cmd}")
    print(read_connack(sock).hex())


if __name__ == "__main__":
    main()
