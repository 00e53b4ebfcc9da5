# Sourced by run.sh: client libraries against the ferrymq broker: paho-mqtt
# (Python), MQTT.js (Node), and umqtt.simple2 (MicroPython, under CPython
# with shims) running the seed document's echo example.
# Uses run.sh's pass/fail/wait_for, $FERRYMQ, $WORK, $PORT.
INTEROP=tests/interop

for version in 311 5; do
    name="paho-mqtt (Python) round trip v$version"
    if out=$(timeout 30 python3 "$INTEROP/paho_roundtrip.py" 127.0.0.1 "$PORT" "$version" 2>&1); then
        pass "$name"
    else
        fail "$name" "$out"
    fi
done

for version in 4 5; do
    name="MQTT.js round trip v$([ "$version" = 4 ] && echo 311 || echo 5)"
    if [ ! -d "$INTEROP/node/node_modules/mqtt" ]; then
        fail "$name" "mqtt not installed (npm ci in $INTEROP/node)"
    elif out=$(timeout 30 node "$INTEROP/node/roundtrip.js" 127.0.0.1 "$PORT" "$version" 2>&1); then
        pass "$name"
    else
        fail "$name" "$out"
    fi
done

name="umqtt.simple2 echo example"
if [ -f "$INTEROP/umqtt/lib/umqtt/simple2.py" ]; then
    # Listen on the device's output topic first, then start the device.
    start_fsub_on_ferrymq() {
        "$FERRYMQ" sub -h 127.0.0.1 -p "$PORT" -d -t ticle/demo/out -v -W 20 \
            >"$WORK/umqtt-out.out" 2>"$WORK/umqtt-out.err" &
        OUT_PID=$!
        wait_for "$WORK/umqtt-out.err" "received SUBACK"
    }
    start_fsub_on_ferrymq
    PYTHONPATH="$INTEROP/umqtt/shim:$INTEROP/umqtt/lib" timeout 30 \
        python3 "$INTEROP/umqtt/echo_device.py" 127.0.0.1 "$PORT" 4 >"$WORK/umqtt-device.log" 2>&1 &
    DEVICE=$!
    wait_for "$WORK/umqtt-out.out" "ticle/demo/out online"
    "$FERRYMQ" pub -h 127.0.0.1 -p "$PORT" -t ticle/demo/in -m "hello device"
    "$FERRYMQ" pub -h 127.0.0.1 -p "$PORT" -t ticle/demo/in -m "second"
    wait_for "$WORK/umqtt-out.out" "echo:second"
    wait_for "$WORK/umqtt-out.out" "heartbeat"
    wait "$DEVICE"
    device_status=$?
    kill "$OUT_PID" 2>/dev/null
    wait "$OUT_PID" 2>/dev/null
    got=$(cat "$WORK/umqtt-out.out")
    if [ "$device_status" -eq 0 ] \
        && grep -qx "ticle/demo/out online" <<<"$got" \
        && grep -qx "ticle/demo/out echo:hello device" <<<"$got" \
        && grep -qx "ticle/demo/out echo:second" <<<"$got" \
        && grep -qx "ticle/demo/out heartbeat" <<<"$got"; then
        pass "$name"
    else
        fail "$name" "device exit $device_status; output: $got; device log: $(cat "$WORK/umqtt-device.log")"
    fi
else
    fail "$name" "umqtt.simple2 not fetched (python3 $INTEROP/umqtt/fetch.py)"
fi
