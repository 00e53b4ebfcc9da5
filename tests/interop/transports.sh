# Sourced by run.sh: TLS and WebSocket listeners. A second ferrymq broker
# starts from a mosquitto.conf with a WebSocket listener, a TLS listener and
# a TLS listener that requires client certificates (certificates made here
# with openssl) and a secure WebSocket listener; MQTT.js connects over
# ws:// from Node and over ws:// and wss:// from headless Chromium,
# mosquitto_pub/sub over TLS.
# Uses run.sh's pass/fail/wait_for, $FERRYMQ, $WORK.
TLSDIR="$WORK/tls"
mkdir -p "$TLSDIR"
(
    cd "$TLSDIR" || exit 1
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=ferrymq interop CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.pem
    for who in server:localhost:serverAuth client:interop-device:clientAuth; do
        IFS=: read -r name cn usage <<<"$who"
        openssl req "${ec[@]}" -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr"
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' \
            "$usage" >"$name.ext"
        openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$name.ext" -out "$name.pem"
    done
) >"$WORK/openssl.log" 2>&1 || fail "openssl certificates" "$(cat "$WORK/openssl.log")"

cat >"$WORK/transports.conf" <<CONF
persistence false
allow_anonymous true
sys_interval 0

listener 0 127.0.0.1
protocol websockets

listener 0 127.0.0.1
certfile $TLSDIR/server.pem
keyfile $TLSDIR/server.key

listener 0 127.0.0.1
certfile $TLSDIR/server.pem
keyfile $TLSDIR/server.key
cafile $TLSDIR/ca.pem
require_certificate true
use_identity_as_username true
tls_version tlsv1.3

listener 0 127.0.0.1
protocol websockets
certfile $TLSDIR/server.pem
keyfile $TLSDIR/server.key
CONF

if out=$("$FERRYMQ" broker --test-config -c "$WORK/transports.conf" 2>&1); then
    pass "TLS/WebSocket config passes --test-config"
else
    fail "TLS/WebSocket config passes --test-config" "$out"
fi

sed "s|$TLSDIR/server.key|$TLSDIR/missing.key|" "$WORK/transports.conf" >"$WORK/broken.conf"
if out=$("$FERRYMQ" broker --test-config -c "$WORK/broken.conf" 2>&1); then
    fail "--test-config refuses a missing keyfile" "accepted: $out"
elif [[ "$out" == *"missing.key"* ]]; then
    pass "--test-config refuses a missing keyfile, naming it"
else
    fail "--test-config refuses a missing keyfile, naming it" "$out"
fi

mkdir -p "$WORK/transports"
(cd "$WORK/transports" && exec env RUST_LOG=info "$FERRYMQ" broker -c "$WORK/transports.conf") \
    >"$WORK/transports.log" 2>&1 &
TRANSPORTS=$!
# Bounded wait for the four listeners' log lines.
listening=0
for _ in $(seq 1 100); do
    listening=$(grep -c 'listening for MQTT over' "$WORK/transports.log" 2>/dev/null)
    [ "$listening" = 4 ] && break
    sleep 0.05
done
if [ "$listening" = 4 ]; then
    WS_PORT=$(grep -o 'MQTT over WebSocket addr=127.0.0.1:[0-9]*' "$WORK/transports.log" | head -1 | cut -d: -f2)
    TLS_PORT=$(grep -o 'MQTT over TLS addr=127.0.0.1:[0-9]*' "$WORK/transports.log" | sed -n 1p | cut -d: -f2)
    MTLS_PORT=$(grep -o 'MQTT over TLS addr=127.0.0.1:[0-9]*' "$WORK/transports.log" | sed -n 2p | cut -d: -f2)
    WSS_PORT=$(grep -o 'MQTT over secure WebSocket addr=127.0.0.1:[0-9]*' "$WORK/transports.log" | head -1 | cut -d: -f2)
    echo "ferrymq transports: ws $WS_PORT, tls $TLS_PORT, tls+client cert $MTLS_PORT, wss $WSS_PORT"

    for version in 4 5; do
        name="MQTT.js over WebSocket v$([ "$version" = 4 ] && echo 311 || echo 5)"
        if [ ! -d tests/interop/node/node_modules/mqtt ]; then
            fail "$name" "mqtt not installed (npm ci in tests/interop/node)"
        elif out=$(timeout 30 node tests/interop/node/roundtrip.js 127.0.0.1 "$WS_PORT" "$version" ws 2>&1); then
            pass "$name"
        else
            fail "$name" "$out"
        fi
    done

    # MQTT.js's browser bundle in headless Chromium (Debian's package,
    # installed by .ci/run), over ws:// and wss://.
    for scheme in ws wss; do
        port=$WS_PORT
        [ "$scheme" = wss ] && port=$WSS_PORT
        name="MQTT.js in Chromium over $scheme://"
        if ! command -v chromium >/dev/null; then
            fail "$name" "chromium is not installed"
        elif out=$(timeout 90 node tests/interop/node/browser.js "$scheme://127.0.0.1:$port/mqtt" \
            "$(command -v chromium)" 2>&1); then
            pass "$name"
            echo "$out"
        else
            fail "$name" "$out"
        fi
    done

    # mosquitto_pub/sub over TLS, trusting the CA; then with a client
    # certificate where one is required.
    tls_round_trip() { # name port extra-args...
        local name=$1 port=$2
        shift 2
        stdbuf -oL mosquitto_sub -h 127.0.0.1 -p "$port" --cafile "$TLSDIR/ca.pem" "$@" \
            -t "interop/tls" -C 1 -W 10 -v -d -i "sub-$port" >"$WORK/tls-$port.out" 2>&1 &
        local sub=$!
        if ! wait_for "$WORK/tls-$port.out" "SUBACK"; then
            kill "$sub" 2>/dev/null
            fail "$name" "no SUBACK: $(cat "$WORK/tls-$port.out")"
            return
        fi
        mosquitto_pub -h 127.0.0.1 -p "$port" --cafile "$TLSDIR/ca.pem" "$@" -q 1 \
            -t "interop/tls" -m "over tls" -i "pub-$port"
        wait "$sub" 2>/dev/null
        if grep -qx "interop/tls over tls" "$WORK/tls-$port.out"; then
            pass "$name"
        else
            fail "$name" "got '$(cat "$WORK/tls-$port.out")'"
        fi
    }
    tls_round_trip "mosquitto_pub/sub over TLS (--cafile)" "$TLS_PORT"
    tls_round_trip "mosquitto_pub/sub over TLS 1.3 with a client certificate" "$MTLS_PORT" \
        --cert "$TLSDIR/client.pem" --key "$TLSDIR/client.key"
    if out=$(timeout 10 mosquitto_pub -h 127.0.0.1 -p "$MTLS_PORT" --cafile "$TLSDIR/ca.pem" \
        -t interop/tls -m refused 2>&1); then
        fail "TLS without the required client certificate is refused" "mosquitto_pub succeeded"
    else
        pass "TLS without the required client certificate is refused"
    fi
    if out=$(timeout 10 mosquitto_pub -h 127.0.0.1 -p "$TLS_PORT" -t interop/tls -m plain 2>&1); then
        fail "plain MQTT to a TLS port is refused" "mosquitto_pub succeeded"
    else
        pass "plain MQTT to a TLS port is refused"
    fi

    kill -HUP "$TRANSPORTS"
    if wait_for "$WORK/transports.log" "TLS files of 3 listener(s) reloaded"; then
        tls_round_trip "SIGHUP reloads TLS files; mosquitto_pub/sub over TLS after it" "$TLS_PORT"
    else
        fail "SIGHUP reloads TLS files" "$(tail -5 "$WORK/transports.log")"
    fi
else
    fail "ferrymq starts with TLS and WebSocket listeners" "$(cat "$WORK/transports.log")"
fi
kill -TERM "$TRANSPORTS" 2>/dev/null
wait "$TRANSPORTS" 2>/dev/null
