#!/usr/bin/env bash
# Idle connections (issue 16): ferrymq and Mosquitto in the same run, each
# at its defaults (a listener and anonymous access, nothing else), N idle
# clients each:
#   - time to accept them all and the connect rate,
#   - broker RSS per connection, plain; with three subscriptions each
#     (devices/%i/cmd, devices/%i/config, broadcast/#); over TLS; over
#     WebSocket (bench/ws_idle.py: the load generator has no WebSocket
#     byte stream),
#   - broker CPU while they idle (keep-alive traffic only) for IDLE_SECONDS.
#
#   bench/idle.sh [N]        (default 100000, capped by the open-file limit)
#
# Environment: FERRYMQ (binary, default target/release/ferrymq), MOSQUITTO
# (default /usr/sbin/mosquitto), KEEPALIVE (seconds, default 30),
# IDLE_SECONDS (default 60), VARIANTS (default "plain subscribed tls ws").
#
# Every client connects from 127.0.0.1; one source address has about 28,000
# ephemeral ports towards one broker port, so past that the run needs a
# wider net.ipv4.ip_local_port_range (or fails with EADDRNOTAVAIL).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
ferrymq=${FERRYMQ:-target/release/ferrymq}
mosquitto=${MOSQUITTO:-/usr/sbin/mosquitto}
keepalive=${KEEPALIVE:-30}
idle_seconds=${IDLE_SECONDS:-60}
variants=${VARIANTS:-plain subscribed tls ws}

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
limit=$(ulimit -n)
if [ "$limit" != unlimited ] && [ "$n" -gt $((limit - 200)) ]; then
  echo "open-file limit $limit: measuring $((limit - 200)) connections, not $n" >&2
  n=$((limit - 200))
fi
[ -x "$ferrymq" ] || cargo build --release --quiet
bench=$ferrymq
work=$(mktemp -d)
# Mosquitto started as root reads its files as the user `mosquitto`.
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
clk=$(getconf CLK_TCK)

# run BROKER VARIANT: one broker, N clients, one line of results.
run() {
  local broker=$1 variant=$2 port dir pid extra=() listener
  port=$(free_port)
  dir=$(mktemp -d -p "$work")
  chmod 755 "$dir"
  listener="listener $port 127.0.0.1"
  case $variant in
    tls) printf '%s\ncertfile %s\nkeyfile %s\n' "$listener" "$work/cert.pem" "$work/key.pem" >"$dir/c.conf"
         extra=(-S) ;;
    ws) printf '%s\nprotocol websockets\n' "$listener" >"$dir/c.conf" ;;
    *) printf '%s\n' "$listener" >"$dir/c.conf" ;;
  esac
  printf 'allow_anonymous true\n' >>"$dir/c.conf"
  [ "$variant" = subscribed ] &&
    extra=(--subscribe 'devices/%i/cmd' --subscribe 'devices/%i/config' --subscribe 'broadcast/#')
  case $broker in
    ferrymq) (cd "$dir" && exec "$OLDPWD/$ferrymq" broker -c c.conf) >"$dir/log" 2>&1 & ;;
    mosquitto) (cd "$dir" && exec "$mosquitto" -c c.conf) >"$dir/log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$broker $variant: the broker did not start:" >&2
      cat "$dir/log" >&2
      return 0
    fi
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
    sleep 0.1
  done
  if [ "$variant" = ws ]; then
    python3 bench/ws_idle.py "$port" "$n" "$pid" "$keepalive" $((idle_seconds + 10)) \
      >"$dir/out.json" 2>"$dir/bench.log" &
  else
    "$bench" bench conn -h 127.0.0.1 -p "$port" -c "$n" -k "$keepalive" \
      -d $((idle_seconds + 10)) --broker-pid "$pid" --json --quiet "${extra[@]}" \
      >"$dir/out.json" 2>"$dir/bench.log" &
  fi
  local bp=$!
  # Idle: every client connected (the broker holds a descriptor each).
  for _ in $(seq 600); do
    [ "$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)" -ge "$n" ] && break
    kill -0 "$bp" 2>/dev/null || break
    sleep 0.5
  done
  sleep 5
  local t0 t1
  t0=$(ticks "$pid")
  sleep "$idle_seconds"
  t1=$(ticks "$pid")
  wait "$bp" || true
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
  python3 - "$dir/out.json" "$broker" "$variant" "$t0" "$t1" "$clk" "$idle_seconds" <<'EOF'
import json, sys
path, broker, variant, t0, t1, clk, secs = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception as e:
    print(f"{broker:9} {variant:10} failed: {e}")
    sys.exit()
c = d.get("connect", {})
cpu = (int(t1) - int(t0)) / int(clk) / int(secs) * 100
print(f"{broker:9} {variant:10} {c.get('connected', 0):>7} conns "
      f"in {c.get('seconds', 0):6.2f} s ({c.get('per_second', 0):8.0f}/s)  "
      f"{d.get('broker_rss_per_connection_bytes') or 0:7.0f} B RSS/conn  "
      f"idle CPU {cpu:5.2f}%  errors {d.get('errors', 0)}")
for sample in (d.get("error_samples") or [])[:3]:
    print(f"    e.g. {sample}")
EOF
}

echo "N=$n keep-alive ${keepalive}s, idle CPU over ${idle_seconds}s"
for variant in $variants; do
  for broker in ferrymq mosquitto; do
    run "$broker" "$variant"
  done
done
