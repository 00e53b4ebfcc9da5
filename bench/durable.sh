#!/usr/bin/env bash
# What durability costs: QoS 1 into a persistent session whose client is
# away, with ferrymq's store on and off, next to Mosquitto with
# `persistence true`; then ferrymq's restart time with the queue still
# full, and its disk use after messages were delivered.
#
#   bash bench/durable.sh                   # 3 rounds, 1,000,000 messages each
#   ROUNDS=5 MESSAGES=400000 bash bench/durable.sh
#   SCENARIOS="4x256" bash bench/durable.sh  # publishers x in-flight window
#
# Two load shapes by default: 4 fast publishers with a window of 256 each
# (1,024 messages in flight), and 100 device-like publishers with a window
# of 20 (2,000 in flight). A durable broker's rate follows how many
# messages are in flight while an fsync runs; an in-memory one's does not.
#
# Each broker is pinned to one core (BROKER_CORE), the load generator to
# another (LOAD_CORE), interleaved per round. The offline session is made
# by mosquitto_sub (-c, -E: subscribe, then leave). Needs mosquitto and
# mosquitto-clients (Debian's packages).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-1000000}
DELIVERED=${DELIVERED:-1000000}
SCENARIOS=${SCENARIOS:-"4x256 100x20"}
BROKER_CORE=${BROKER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/ferrymq-durable.XXXXXX)}
mkdir -p "$OUT"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
log() { echo "durable: $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Seconds from SINCE (Unix time, default now) until something accepts on
# PORT (fails if PID exits first).
wait_port() {
    local port=$1 pid=$2 since=${3:-}
    python3 - "$port" "$pid" "$since" <<'EOF'
import os, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
since = float(sys.argv[3]) if sys.argv[3] else time.time()
start = time.monotonic()
while time.monotonic() - start < 120:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        print(f"{time.time() - since:.3f}")
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("the broker exited")
        time.sleep(0.005)
sys.exit("nothing listens")
EOF
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -KILL "$1" 2>/dev/null || true
}

# start NAME DIR PORT: the broker in DIR, pinned; prints its pid.
start() {
    local name=$1 dir=$2 port=$3
    local common="listener $port 127.0.0.1
allow_anonymous true
max_queued_messages $((MESSAGES + DELIVERED))
max_inflight_messages 100"
    case $name in
        ferrymq-on | ferrymq-off)
            local persist=true
            [[ $name == ferrymq-off ]] && persist=false
            printf '%s\npersistence %s\npersistence_location %s/data\n' "$common" "$persist" "$dir" >"$dir/broker.conf"
            (cd "$dir" && exec taskset -c "$BROKER_CORE" "$FERRYMQ" broker -c broker.conf) >>"$dir/broker.log" 2>&1 &
            ;;
        mosquitto)
            printf '%s\npersistence true\npersistence_location %s/\n' "$common" "$dir" >"$dir/broker.conf"
            (cd "$dir" && exec taskset -c "$BROKER_CORE" "$MOSQUITTO" -c broker.conf) >>"$dir/broker.log" 2>&1 &
            ;;
    esac
    echo $!
}

# Jiffies the hypervisor gave to others (all CPUs): on a shared VM the
# host's other guests move both sides, so each run reports its share.
steal_jiffies() { awk '/^cpu /{print $9}' /proc/stat; }

acked_rate() {
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(round(s["acked"] / max(s["seconds"], 1e-9)) if s.get("lost_acked") is None and s["errors"] == 0 else "failed")'
}

main() {
    log "building ferrymq (release)"
    (cd "$ROOT" && cargo build --release -q -p ferrymq)
    FERRYMQ="${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrymq"
    log "results in $OUT"
    : >"$OUT/results.jsonl"
    local measured_restart=""
    for round in $(seq 1 "$ROUNDS"); do
        for scenario in $SCENARIOS; do
            local publishers=${scenario%x*} window=${scenario#*x}
            local per=$((MESSAGES / publishers))
            for name in ferrymq-on ferrymq-off mosquitto; do
                local dir="$OUT/$name-$scenario-$round" port pid rate
                rm -rf "$dir" && mkdir -p "$dir"
                port=$(free_port)
                pid=$(start "$name" "$dir" "$port")
                wait_port "$port" "$pid" >/dev/null
                mosquitto_sub -h 127.0.0.1 -p "$port" -i away -c -q 1 -t 'durable/#' -E
                local steal0 started steal
                steal0=$(steal_jiffies) started=$(date +%s.%N)
                # Every message is acknowledged only once stored (ferrymq-on):
                # -L with no --duration times the whole stream.
                rate=$(taskset -c "$LOAD_CORE" "$FERRYMQ" bench pub -h 127.0.0.1 -p "$port" --threads 1 \
                    -c "$publishers" -F "$window" -t 'durable/%i' -q 1 -s 16 -L "$per" --warmup 0 --json --quiet |
                    acked_rate)
                # Percent of the two cores' time stolen during the run.
                steal=$(python3 -c "import sys; print(round(($(steal_jiffies) - $steal0) / 100 / (2 * ($(date +%s.%N) - $started)) * 100, 1))")
                echo "{\"round\":$round,\"scenario\":\"$scenario\",\"broker\":\"$name\",\"acked_per_second\":\"$rate\",\"steal_percent\":$steal}" >>"$OUT/results.jsonl"
                log "round $round, $publishers publishers x $window in flight: $name: $rate acknowledged msg/s into an offline session (steal ${steal}%)"
                if [[ $name == ferrymq-on && -z $measured_restart ]]; then
                    measured_restart=1
                    # Restart with the queue full, then drain it and keep going.
                    stop "$pid"
                    local restart since
                    # From the launch: the broker may be up before python is.
                    since=$(date +%s.%N)
                    pid=$(start "$name" "$dir" "$port")
                    restart=$(wait_port "$port" "$pid" "$since")
                    log "restart with $MESSAGES queued messages: ${restart} s to accept connections"
                    echo "{\"restart_seconds\":$restart,\"queued\":$MESSAGES}" >>"$OUT/results.jsonl"
                    mosquitto_sub -h 127.0.0.1 -p "$port" -i away -c -q 1 -t 'durable/#' \
                        -C $((MESSAGES + DELIVERED)) -W 600 >/dev/null &
                    local sub=$!
                    taskset -c "$LOAD_CORE" "$FERRYMQ" bench pub -h 127.0.0.1 -p "$port" --threads 1 \
                        -c 4 -t 'durable/%i' -q 1 -s 16 -L $((DELIVERED / 4)) \
                        --warmup 0 --json --quiet >/dev/null
                    wait "$sub" || log "the subscriber did not get every message"
                    # Let the engine settle what it deletes before measuring.
                    stop "$pid"
                    local kib
                    kib=$(du -sk "$dir/data" | cut -f1)
                    log "disk after $((MESSAGES + DELIVERED)) delivered messages: ${kib} KiB"
                    echo "{\"disk_kib_after_delivery\":$kib,\"delivered\":$((MESSAGES + DELIVERED))}" >>"$OUT/results.jsonl"
                    continue
                fi
                stop "$pid"
            done
        done
    done
    python3 - "$OUT/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = {"ferrymq-on": "ferrymq, persistence true", "ferrymq-off": "ferrymq, persistence false",
         "mosquitto": "Mosquitto, persistence true"}
scenarios = []
for r in rows:
    if "scenario" in r and r["scenario"] not in scenarios:
        scenarios.append(r["scenario"])
for sc in scenarios:
    rates = {}
    for r in rows:
        if r.get("scenario") == sc and r["acked_per_second"] != "failed":
            rates.setdefault(r["broker"], []).append(int(r["acked_per_second"]))
    med = {k: statistics.median(v) for k, v in rates.items()}
    pubs, window = sc.split("x")
    print(f"\n{pubs} publishers x {window} in flight")
    print("| QoS 1 into an offline persistent session | acknowledged msg/s, median (range) |")
    print("|---|---|")
    for k in ("ferrymq-on", "ferrymq-off", "mosquitto"):
        if k in rates:
            print(f"| {names[k]} | {med[k]:,.0f} ({min(rates[k]):,}–{max(rates[k]):,}) |")
    if "ferrymq-on" in med and "ferrymq-off" in med:
        print(f"\ndurable ÷ in-memory: {med['ferrymq-on'] / med['ferrymq-off']:.2f}×")
        # Paired within a round (the runs minutes apart share the host's mood).
        by_round = {}
        for r in rows:
            if r.get("scenario") == sc and r["acked_per_second"] != "failed":
                by_round.setdefault(r["round"], {})[r["broker"]] = int(r["acked_per_second"])
        paired = [b["ferrymq-on"] / b["ferrymq-off"] for b in by_round.values()
                  if "ferrymq-on" in b and "ferrymq-off" in b]
        print("per round: " + ", ".join(f"{x:.2f}×" for x in paired))
    steals = [r["steal_percent"] for r in rows if r.get("scenario") == sc and "steal_percent" in r]
    if steals:
        print(f"CPU stolen by the host during the runs: {min(steals)}–{max(steals)}%")
    if "ferrymq-on" in med and "mosquitto" in med:
        print(f"ferrymq durable ÷ Mosquitto: {med['ferrymq-on'] / med['mosquitto']:.2f}×")
print()
for r in rows:
    if "restart_seconds" in r:
        print(f"restart with {r['queued']:,} queued messages: {r['restart_seconds']} s")
    if "disk_kib_after_delivery" in r:
        print(f"store on disk after {r['delivered']:,} delivered messages: {r['disk_kib_after_delivery']:,} KiB")
EOF
}

main "$@"
