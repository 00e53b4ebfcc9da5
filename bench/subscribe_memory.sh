#!/usr/bin/env bash
# One maximum-size SUBSCRIBE against 1,000 retained messages, ferrymq next
# to Mosquitto, each at its defaults (issue 20, item 2): the broker's peak
# RSS before and after, how long until the SUBACK, how many retained
# messages the subscriber gets.
#
#   bash bench/subscribe_memory.sh            # 1,000 retained, a 1,999,000-byte SUBSCRIBE
#   RETAINED=200 PACKET=80000 bash bench/subscribe_memory.sh
#   FILTERS=distinct bash bench/subscribe_memory.sh   # +/0, +/1, ... instead of # repeated
#
# Mosquitto 2.0.11 at its defaults (no max_packet_size) was killed by the
# kernel's OOM killer at 24 GB on a 24 GB machine with the default shape.
set -euo pipefail

RETAINED=${RETAINED:-1000}
PACKET=${PACKET:-1999000}
BOUND=${BOUND:-120}
FILTERS=${FILTERS:-same}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mktemp -d /tmp/ferrymq-submem.XXXXXX)
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 1 200); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

(cd "$ROOT" && cargo build --release -q -p ferrymq)
FERRYMQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrymq"

for broker in ${BROKERS:-ferrymq mosquitto}; do
    port=$(free_port)
    dir="$OUT/$broker"
    mkdir -p "$dir"
    # Each at its defaults: a listener, anonymous clients, nothing else.
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$dir/broker.conf"
    case $broker in
        ferrymq) (cd "$dir" && exec "$FERRYMQ" broker -c broker.conf) > "$dir/log" 2>&1 & ;;
        mosquitto) (cd "$dir" && exec "$MOSQUITTO" -c broker.conf) > "$dir/log" 2>&1 & ;;
    esac
    pid=$!
    wait_port "$port"
    printf '%s ' "$broker"
    python3 "$ROOT/bench/subscribe_memory.py" 127.0.0.1 "$port" "$pid" "$RETAINED" "$PACKET" "$BOUND" "$FILTERS" \
        || echo "{\"failed\": true, \"broker_alive\": $(kill -0 "$pid" 2>/dev/null && echo true || echo false)}"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
