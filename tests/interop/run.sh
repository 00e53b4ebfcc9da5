#!/usr/bin/env bash
# Interop suite: third-party MQTT clients against a live `ferrymq broker`.
# Each check prints PASS or FAIL with its name; the last line is
# "N passed, M failed" and the exit status is non-zero on any failure.
#
# Needs: mosquitto and mosquitto-clients, paho-mqtt (pip), MQTT.js (npm ci
# in tests/interop/node), umqtt.simple2 (tests/interop/umqtt/fetch.py).
# .ci/run installs them. Usage: tests/interop/run.sh [path/to/ferrymq]
#
# Sections: Mosquitto's clients against ferrymq (here), ferrymq's own tools
# against the Mosquitto broker and next to mosquitto_sub
# (ferrymq_tools.sh), client libraries against ferrymq (libraries.sh), TLS
# and WebSocket listeners (transports.sh), one sample mosquitto.conf
# run unchanged under both mosquitto and ferrymq (sample.sh), and Debian's
# packaged mosquitto.conf with real-world configuration shapes under both,
# ferrymq started through a link named `mosquitto` (configs.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."

FERRYMQ=${1:-target/debug/ferrymq}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
passed=0
failed=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1${2:+: $2}"; failed=$((failed + 1)); }

# Waits (bounded) until FILE contains PATTERN.
wait_for() {
    local file=$1 pattern=$2
    for _ in $(seq 1 100); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Start the broker on a free loopback port (port 0), read the port it logs.
# It runs in the scratch directory, so its default store starts empty.
if [ ! -x "$FERRYMQ" ]; then echo "no ferrymq binary at $FERRYMQ"; exit 1; fi
FERRYMQ=$(realpath "$FERRYMQ")
(cd "$WORK" && exec env RUST_LOG=info "$FERRYMQ" broker -p 0) >"$WORK/broker.log" 2>&1 &
BROKER=$!
if ! wait_for "$WORK/broker.log" "listening for MQTT addr=127.0.0.1:"; then
    echo "broker did not start:"; cat "$WORK/broker.log"; exit 1
fi
PORT=$(grep -o 'addr=127.0.0.1:[0-9]*' "$WORK/broker.log" | head -1 | cut -d: -f2)
echo "ferrymq broker on 127.0.0.1:$PORT"
H=(-h 127.0.0.1 -p "$PORT")

# A live subscriber: starts mosquitto_sub in the background and returns
# once its SUBACK arrived (from -d output), so nothing is published early.
start_sub() { # name version qos topic count
    local name=$1 version=$2 qos=$3 topic=$4 count=$5
    stdbuf -oL mosquitto_sub "${H[@]}" -V "$version" -q "$qos" -t "$topic" -C "$count" -W 10 -v -d \
        -i "sub-$name" >"$WORK/$name.out" 2>&1 &
    SUB_PID=$!
    wait_for "$WORK/$name.out" "SUBACK"
}

# Prints the non-debug lines a subscriber received.
received() { grep -v -E '^Client |^Subscribed' "$WORK/$1.out"; }

for version in mqttv311 mqttv5; do
    for qos in 0 1 2; do
        name="pubsub-$version-qos$qos"
        start_sub "$name" "$version" 2 "interop/$name" 1
        mosquitto_pub "${H[@]}" -V "$version" -q "$qos" -t "interop/$name" -m "hello $qos"
        wait "$SUB_PID" 2>/dev/null
        got=$(received "$name")
        [ "$got" = "interop/$name hello $qos" ] && pass "mosquitto_pub/sub $version QoS $qos" \
            || fail "mosquitto_pub/sub $version QoS $qos" "got '$got'"
    done

    name="retained-$version"
    mosquitto_pub "${H[@]}" -V "$version" -q 1 -r -t "interop/$name" -m kept
    got=$(mosquitto_sub "${H[@]}" -V "$version" -t "interop/$name" -C 1 -W 5 -v 2>&1)
    [ "$got" = "interop/$name kept" ] && pass "retained message $version" \
        || fail "retained message $version" "got '$got'"
    mosquitto_pub "${H[@]}" -V "$version" -r -t "interop/$name" -n
    got=$(mosquitto_sub "${H[@]}" -V "$version" -t "interop/$name" -C 1 -W 1 -v 2>&1)
    [ -z "$got" ] || [[ "$got" == *"Timed out"* ]] && pass "retained message cleared $version" \
        || fail "retained message cleared $version" "got '$got'"

    name="will-$version"
    start_sub "$name" "$version" 1 "interop/will/$version" 1
    watcher=$SUB_PID
    stdbuf -oL mosquitto_sub "${H[@]}" -V "$version" -t "interop/none" -i "dies-$version" -d \
        --will-topic "interop/will/$version" --will-payload "gone" --will-qos 1 \
        >"$WORK/dies-$version.out" 2>&1 &
    dies=$!
    wait_for "$WORK/dies-$version.out" "SUBACK"
    kill -9 "$dies"
    wait "$dies" 2>/dev/null
    wait "$watcher" 2>/dev/null
    got=$(received "$name")
    [ "$got" = "interop/will/$version gone" ] && pass "will on abrupt disconnect $version" \
        || fail "will on abrupt disconnect $version" "got '$got'"

    # Persistent session: subscribe, leave, messages queue, come back.
    name="persist-$version"
    mosquitto_sub "${H[@]}" -V "$version" -c -i "$name" -q 2 -t "interop/$name" -E >/dev/null 2>&1
    mosquitto_pub "${H[@]}" -V "$version" -q 1 -t "interop/$name" -m one
    mosquitto_pub "${H[@]}" -V "$version" -q 2 -t "interop/$name" -m two
    got=$(mosquitto_sub "${H[@]}" -V "$version" -c -i "$name" -q 2 -t "interop/$name" -C 2 -W 5 2>&1 | tr '\n' ' ')
    [ "$got" = "one two " ] && pass "persistent session queue $version" \
        || fail "persistent session queue $version" "got '$got'"
done

got=$(mosquitto_sub "${H[@]}" -t '$SYS/broker/version' -C 1 -W 5 2>&1)
[[ "$got" == "ferrymq version "* ]] && pass "\$SYS/broker/version" || fail "\$SYS/broker/version" "got '$got'"

source tests/interop/ferrymq_tools.sh
source tests/interop/libraries.sh
source tests/interop/transports.sh
source tests/interop/sample.sh
source tests/interop/configs.sh

kill -TERM "$BROKER"
if wait "$BROKER"; then pass "broker exits 0 on SIGTERM"; else fail "broker exits 0 on SIGTERM"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
