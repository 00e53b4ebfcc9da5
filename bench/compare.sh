#!/usr/bin/env bash
# ferrymq next to Mosquitto and rumqttd, measured by `ferrymq bench`.
#
# Each broker runs on loopback on a fresh port, pinned to one core
# (BROKER_CORE); the load generator runs on another (LOAD_CORE). Rounds are
# interleaved (ferrymq, Mosquitto, rumqttd, then again) so that drift in the
# machine hits every broker alike; the table gives medians, ranges, and the
# ratio of ferrymq to the better peer.
#
#   bash bench/compare.sh                 # 3 rounds, 5 s per measurement
#   ROUNDS=5 SECONDS_PER_RUN=10 bash bench/compare.sh
#   SETTINGS=defaults bash bench/compare.sh
#
# SETTINGS: `equal` (every broker with the same window and queue, below),
# `defaults` (each broker at its own defaults: a listener and anonymous
# access, no tuning line; the load is the same), or `both` (the default).
# Both report the acknowledged messages each broker lost.
#
# Installs the peers when absent: mosquitto from Debian's packages, rumqttd
# with `cargo install rumqttd` (without --locked: its lock file no longer
# builds on the current toolchain). Raw results go to $OUT/results.jsonl.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
WARMUP=${WARMUP:-1}
IDLE_CLIENTS=${IDLE_CLIENTS:-5000}
MAX_AHEAD=${MAX_AHEAD:-5000}
BROKER_CORE=${BROKER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
BROKERS=${BROKERS:-"ferrymq mosquitto rumqttd"}
SETTINGS=${SETTINGS:-both}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/ferrymq-compare.XXXXXX)}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"

log() { echo "compare: $*" >&2; }

install_peers() {
    if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]]; then
        log "installing mosquitto"
        local sudo=""
        [[ $(id -u) -ne 0 ]] && sudo=sudo
        $sudo apt-get update -qq && $sudo apt-get install -y -qq mosquitto >/dev/null
    fi
    if ! command -v rumqttd >/dev/null; then
        log "installing rumqttd (cargo install, a few minutes)"
        cargo install rumqttd >/dev/null
    fi
}

MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    local port=$1 pid=$2
    for _ in $(seq 1 200); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { log "broker exited; its log:"; cat "$OUT/broker.log" >&2; return 1; }
        sleep 0.05
    done
    log "nothing listens on $port"
    return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# start_broker NAME PORT CORES SETTINGS: starts it pinned, prints its pid.
start_broker() {
    local name=$1 port=$2 cores=$3 settings=$4 dir="$OUT/$1"
    mkdir -p "$dir"
    local tuning='persistence false\nmax_connections -1\nmax_inflight_messages 100\nmax_queued_messages 10000\n'
    # At their defaults: what a user who changes nothing gets.
    [[ $settings == defaults ]] && tuning=''
    # Every broker gets the same outbound window of 100 unacknowledged
    # QoS 1/2 messages per client (rumqttd's max_inflight_count below;
    # Mosquitto's and ferrymq's default is 20): with 20, a QoS 1 stream to
    # one subscriber is bounded by round trips, not by the broker. Queues
    # hold 10,000 messages, room for the publishers' run-ahead bound
    # (MAX_AHEAD, 5,000: rumqttd delivers in batches and is held back by
    # a bound of 1,000, which gave it 34k msg/s at QoS 0 instead of 390k).
    case $name in
        ferrymq)
            printf "listener %s 127.0.0.1\nallow_anonymous true\n$tuning" "$port" > "$dir/ferrymq.conf"
            (cd "$dir" && exec taskset -c "$cores" "$FERRYMQ" broker -c ferrymq.conf) > "$OUT/broker.log" 2>&1 &
            ;;
        mosquitto)
            printf "listener %s 127.0.0.1\nallow_anonymous true\n$tuning" "$port" > "$dir/mosquitto.conf"
            (cd "$dir" && exec taskset -c "$cores" "$MOSQUITTO" -c mosquitto.conf) > "$OUT/broker.log" 2>&1 &
            ;;
        rumqttd)
            # rumqttd's own sample settings, on our port; v4 (MQTT 3.1.1)
            # only. It has no defaults without a file: its sample is both.
            cat > "$dir/rumqttd.toml" <<EOF
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
            (cd "$dir" && exec taskset -c "$cores" rumqttd --config rumqttd.toml) > "$OUT/broker.log" 2>&1 &
            ;;
    esac
    local pid=$!
    wait_port "$port" "$pid"
    echo "$pid"
}

stop_broker() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
}

# bench BROKER ROUND SCENARIO CORES ARGS...: one run, its summary recorded.
bench() {
    local broker=$1 round=$2 scenario=$3 cores=$4
    shift 4
    local json
    if ! json=$(taskset -c "$cores" "$FERRYMQ" bench "$@" --json --quiet 2>>"$OUT/bench.log"); then
        log "$broker $scenario: the run failed (see $OUT/bench.log)"
        json='{"errors":1,"failed":true}'
    fi
    printf '{"broker":"%s","round":%s,"scenario":"%s","summary":%s}\n' \
        "$broker" "$round" "$scenario" "$json" >> "$RESULTS"
}

record() {
    printf '{"broker":"%s","round":%s,"scenario":"%s","summary":%s}\n' "$1" "$2" "$3" "$4" >> "$RESULTS"
}

# The scenarios of one broker in one round: all of them at equal settings
# (suffix ""), the throughput ones on two cores ("-2cores") or at the
# broker's defaults ("-defaults").
run_broker() {
    local broker=$1 round=$2 broker_cores=$3 load_cores=$4 suffix=$5 threads=$6
    local port pid common settings=equal
    [[ $suffix == -defaults ]] && settings=defaults
    port=$(free_port)
    pid=$(start_broker "$broker" "$port" "$broker_cores" "$settings")
    common=(-h 127.0.0.1 -p "$port" --threads "$threads")
    local flow=(--duration "$SECONDS_PER_RUN" --warmup "$WARMUP" --max-ahead "$MAX_AHEAD" -F 100)
    if [[ -z $suffix ]]; then
        # 1. Idle connections on a fresh broker.
        bench "$broker" "$round" idle "$load_cores" conn "${common[@]}" -c "$IDLE_CLIENTS" \
            --duration 0 --broker-pid "$pid"
    fi
    local start_kib
    start_kib=$(rss_kib "$pid")
    # 2. Fan-in, 4 publishers -> 1 subscriber on a wildcard.
    for qos in 0 1; do
        for size in 16 1024; do
            bench "$broker" "$round" "fanin-q$qos-${size}B$suffix" "$load_cores" pub "${common[@]}" \
                -c 4 -t 'fanin/%i' --subscribers 1 --sub-topic 'fanin/#' -q "$qos" -s "$size" "${flow[@]}"
        done
    done
    # 3. Fan-out, 1 publisher -> 50 subscribers.
    bench "$broker" "$round" "fanout-q0$suffix" "$load_cores" pub "${common[@]}" \
        -c 1 -t fanout --subscribers 50 -q 0 -s 16 "${flow[@]}"
    if [[ -z $suffix ]]; then
        # 4. Latency at a fixed 1,000 msg/s, QoS 1.
        bench "$broker" "$round" latency "$load_cores" pub "${common[@]}" \
            -c 1 -t latency --subscribers 1 -q 1 -s 64 --rate 1000 \
            --duration "$SECONDS_PER_RUN" --warmup "$WARMUP"
        # Memory once the load has ended: the broker's own idea of idle.
        local end_kib hwm
        end_kib=$(rss_kib "$pid")
        hwm=$(hwm_kib "$pid")
        record "$broker" "$round" memory \
            "{\"start_kib\":$start_kib,\"peak_kib\":$hwm,\"end_kib\":$end_kib}"
    fi
    stop_broker "$pid"
}

main() {
    install_peers
    log "building ferrymq (release)"
    (cd "$ROOT" && cargo build --release -q -p ferrymq)
    FERRYMQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrymq"
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    log "results in $OUT"
    for round in $(seq 1 "$ROUNDS"); do
        if [[ $SETTINGS != equal ]]; then
            for broker in $BROKERS; do
                log "round $round: $broker at its defaults"
                run_broker "$broker" "$round" "$BROKER_CORE" "$LOAD_CORE" "-defaults" 1
            done
        fi
        [[ $SETTINGS == defaults ]] && continue
        for broker in $BROKERS; do
            log "round $round: $broker"
            run_broker "$broker" "$round" "$BROKER_CORE" "$LOAD_CORE" "" 1
        done
        # 5. ferrymq with both cores (the load generator shares them).
        if [[ " $BROKERS " == *" ferrymq "* ]]; then
            log "round $round: ferrymq on both cores"
            run_broker ferrymq "$round" "$BROKER_CORE,$LOAD_CORE" "$BROKER_CORE,$LOAD_CORE" "-2cores" 2
        fi
    done
    python3 "$ROOT/bench/table.py" "$RESULTS"
}

main "$@"
