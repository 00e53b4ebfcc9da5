# Sourced by run.sh: `ferrymq pub` / `ferrymq sub` against the real
# Mosquitto broker, and `ferrymq sub -v` / `-F` output compared line for
# line with mosquitto_sub for the same messages (on the ferrymq broker).
# Uses run.sh's pass/fail/wait_for, $FERRYMQ, $WORK, $PORT.

# A free loopback port: bind port 0, read it, release it.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts a `ferrymq sub -d` in the background; returns once subscribed.
start_fsub() { # name port args...
    local name=$1 port=$2
    shift 2
    "$FERRYMQ" sub -h 127.0.0.1 -p "$port" -d "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    SUB_PID=$!
    wait_for "$WORK/$name.err" "received SUBACK"
}

if command -v mosquitto >/dev/null; then
    MPORT=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$MPORT" >"$WORK/mosquitto.conf"
    mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
    MOSQUITTO=$!
    for _ in $(seq 1 100); do
        mosquitto_sub -h 127.0.0.1 -p "$MPORT" -t probe -E >/dev/null 2>&1 && break
        sleep 0.05
    done
    echo "mosquitto broker on 127.0.0.1:$MPORT"
    M=(-h 127.0.0.1 -p "$MPORT")

    for version in mqttv311 mqttv5; do
        for qos in 0 1 2; do
            name="fm-$version-qos$qos"
            start_fsub "$name" "$MPORT" -V "$version" -q 2 -t "ferry/$name" -C 1 -W 10 -v
            "$FERRYMQ" pub "${M[@]}" -V "$version" -q "$qos" -t "ferry/$name" -m "via mosquitto $qos"
            wait "$SUB_PID" 2>/dev/null
            got=$(cat "$WORK/$name.out")
            [ "$got" = "ferry/$name via mosquitto $qos" ] && pass "ferrymq pub/sub via mosquitto $version QoS $qos" \
                || fail "ferrymq pub/sub via mosquitto $version QoS $qos" "got '$got' $(cat "$WORK/$name.err")"
        done
        name="fm-retained-$version"
        "$FERRYMQ" pub "${M[@]}" -V "$version" -q 1 -r -t "ferry/$name" -m kept
        got=$("$FERRYMQ" sub "${M[@]}" -V "$version" -t "ferry/$name" -C 1 -W 5 -v 2>&1)
        [ "$got" = "ferry/$name kept" ] && pass "ferrymq retained via mosquitto $version" \
            || fail "ferrymq retained via mosquitto $version" "got '$got'"
        "$FERRYMQ" pub "${M[@]}" -V "$version" -r -t "ferry/$name" -n
    done

    # Our v5 properties, read back by Mosquitto's own client.
    start_sub_on() { # name port args...
        local name=$1 port=$2
        shift 2
        stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" -d "$@" >"$WORK/$name.out" 2>&1 &
        SUB_PID=$!
        wait_for "$WORK/$name.out" "SUBACK"
    }
    start_sub_on props "$MPORT" -V mqttv5 -t ferry/props -C 1 -W 10 -F '%t %p %C %P'
    "$FERRYMQ" pub "${M[@]}" -V mqttv5 -t ferry/props -m hi -D publish content-type text/plain \
        -D publish user-property k v
    wait "$SUB_PID" 2>/dev/null
    got=$(received props)
    [ "$got" = "ferry/props hi text/plain k:v" ] && pass "ferrymq pub v5 properties read by mosquitto_sub" \
        || fail "ferrymq pub v5 properties read by mosquitto_sub" "got '$got'"

    # Will: a ferrymq sub killed with -9 leaves its will behind.
    start_fsub fm-watch "$MPORT" -t ferry/will -C 1 -W 10 -v
    watcher=$SUB_PID
    start_fsub fm-dies "$MPORT" -t ferry/none --will-topic ferry/will --will-payload gone --will-qos 1
    kill -9 "$SUB_PID"
    wait "$SUB_PID" 2>/dev/null
    wait "$watcher" 2>/dev/null
    got=$(cat "$WORK/fm-watch.out")
    [ "$got" = "ferry/will gone" ] && pass "ferrymq sub will via mosquitto" \
        || fail "ferrymq sub will via mosquitto" "got '$got'"

    kill -TERM "$MOSQUITTO"
    wait "$MOSQUITTO" 2>/dev/null
else
    fail "ferrymq pub/sub via mosquitto" "mosquitto (the broker) is not installed"
fi

# Output compared with mosquitto_sub, both subscribed on the ferrymq broker.
MESSAGES=(one "two words" "" "tab	and ünïcode" 42)
FORMAT='%t|%p|%q|%r|%l|%x|%X|[%-10t]|[%5l]|[%05l]|[%.2p]|%%|\t|@@'
for mode in verbose format; do
    case $mode in
        verbose) args=(-v) ;;
        format) args=(-F "$FORMAT") ;;
    esac
    count=${#MESSAGES[@]}
    start_fsub "cmp-ours-$mode" "$PORT" -q 1 -t 'cmp/#' -C "$count" -W 10 "${args[@]}"
    ours=$SUB_PID
    stdbuf -oL mosquitto_sub "${H[@]}" -q 1 -t 'cmp/#' -C "$count" -W 10 -d "${args[@]}" \
        >"$WORK/cmp-theirs-$mode.raw" 2>&1 &
    theirs=$!
    wait_for "$WORK/cmp-theirs-$mode.raw" "SUBACK"
    i=0
    for m in "${MESSAGES[@]}"; do
        i=$((i + 1))
        if [ -z "$m" ]; then
            mosquitto_pub "${H[@]}" -q 1 -t "cmp/$mode/$i" -n
        else
            mosquitto_pub "${H[@]}" -q $((i % 2)) -t "cmp/$mode/$i" -m "$m"
        fi
    done
    wait "$ours" 2>/dev/null
    wait "$theirs" 2>/dev/null
    grep -v -E '^Client |^Subscribed' "$WORK/cmp-theirs-$mode.raw" >"$WORK/cmp-theirs-$mode.out"
    if diff "$WORK/cmp-theirs-$mode.out" "$WORK/cmp-ours-$mode.out" >"$WORK/cmp-$mode.diff"; then
        pass "ferrymq sub ${args[0]} output identical to mosquitto_sub ($count messages)"
    else
        fail "ferrymq sub ${args[0]} output identical to mosquitto_sub" "$(cat "$WORK/cmp-$mode.diff")"
    fi
done
