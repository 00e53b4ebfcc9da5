# Sourced by run.sh: tests/interop/sample/mosquitto.conf, a Mosquitto 2
# configuration with a plain, a TLS and a WebSocket listener, a password
# file (made here by mosquitto_passwd), an ACL file and allow_anonymous
# false, runs unchanged under the real `mosquitto -c` and under
# `ferrymq broker -c`; the same checks run against both.
#
# mosquitto.conf needs literal ports and paths, so the committed sample
# holds @PLAIN_PORT@, @TLS_PORT@, @WS_PORT@ and @DIR@, replaced by sed with
# free ports and this run's scratch directory; nothing else changes, and
# both brokers read the same generated file.
# Uses run.sh's pass/fail/wait_for, $FERRYMQ, $WORK; free_port from
# ferrymq_tools.sh.

SAMPLE_DIR="$WORK/sample"
mkdir -p "$SAMPLE_DIR"
# Mosquitto started as root drops to the `mosquitto` user before it reads
# the password, ACL and certificate files: let that user reach them.
chmod o+x "$WORK"
chmod 755 "$SAMPLE_DIR"

sample_setup() {
    (
        cd "$SAMPLE_DIR" || exit 1
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=ferrymq sample CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.pem
        openssl req "${ec[@]}" -subj "/CN=localhost" -keyout server.key -out server.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
            >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
        mosquitto_passwd -c -b passwd alice wonderland
        mosquitto_passwd -b passwd bob builder
        cp "$OLDPWD/tests/interop/sample/acl" acl
        chmod 644 ./*
    ) >"$WORK/sample-setup.log" 2>&1
}

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
    fail "sample mosquitto.conf" "mosquitto or mosquitto_passwd is not installed"
elif ! sample_setup; then
    fail "sample mosquitto.conf: certificates and password file" "$(cat "$WORK/sample-setup.log")"
else
    S_PLAIN=$(free_port)
    S_TLS=$(free_port)
    S_WS=$(free_port)
    sed -e "s|@PLAIN_PORT@|$S_PLAIN|" -e "s|@TLS_PORT@|$S_TLS|" -e "s|@WS_PORT@|$S_WS|" \
        -e "s|@DIR@|$SAMPLE_DIR|" tests/interop/sample/mosquitto.conf >"$SAMPLE_DIR/mosquitto.conf"
    chmod 644 "$SAMPLE_DIR/mosquitto.conf"
    echo "sample: plain $S_PLAIN, tls $S_TLS, ws $S_WS"

    # The same checks against whichever broker serves the sample's ports.
    sample_checks() { # broker-name
        local who=$1 got
        local P=(-h 127.0.0.1 -p "$S_PLAIN")
        local T=(-h 127.0.0.1 -p "$S_TLS" --cafile "$SAMPLE_DIR/ca.pem")
        local ALICE=(-u alice -P wonderland)
        local BOB=(-u bob -P builder)

        # Round trip as alice over plain MQTT and over TLS, v3.1.1 and v5.
        for transport in plain tls; do
            local A
            if [ "$transport" = plain ]; then A=("${P[@]}"); else A=("${T[@]}"); fi
            for version in mqttv311 mqttv5; do
                local name="sample-$who-$transport-$version"
                stdbuf -oL mosquitto_sub "${A[@]}" "${ALICE[@]}" -V "$version" -q 1 \
                    -t "sample/alice/$transport" -C 1 -W 10 -v -d -i "sub-$name" >"$WORK/$name.out" 2>&1 &
                local sub=$!
                if ! wait_for "$WORK/$name.out" "SUBACK"; then
                    kill "$sub" 2>/dev/null
                    fail "$who: sample $transport $version" "no SUBACK: $(cat "$WORK/$name.out")"
                    continue
                fi
                mosquitto_pub "${A[@]}" "${ALICE[@]}" -V "$version" -q 1 \
                    -t "sample/alice/$transport" -m "hello $transport" -i "pub-$name"
                wait "$sub" 2>/dev/null
                if grep -qx "sample/alice/$transport hello $transport" "$WORK/$name.out"; then
                    pass "$who: sample $transport pub/sub $version (password file)"
                else
                    fail "$who: sample $transport pub/sub $version (password file)" "$(cat "$WORK/$name.out")"
                fi
            done
        done

        # MQTT.js over the WebSocket listener, with alice's password.
        for version in 4 5; do
            local name="$who: sample WebSocket MQTT.js v$([ "$version" = 4 ] && echo 311 || echo 5)"
            if [ ! -d tests/interop/node/node_modules/mqtt ]; then
                fail "$name" "mqtt not installed (npm ci in tests/interop/node)"
            elif got=$(MQTT_USERNAME=alice MQTT_PASSWORD=wonderland timeout 30 \
                node tests/interop/node/roundtrip.js 127.0.0.1 "$S_WS" "$version" ws 2>&1); then
                pass "$name"
            else
                fail "$name" "$got"
            fi
        done

        # The ACL: bob may not write under sample/alice/, so alice's
        # subscriber gets the allowed message that follows, not his.
        local name="sample-$who-acl"
        stdbuf -oL mosquitto_sub "${P[@]}" "${ALICE[@]}" -q 1 -t 'sample/#' -C 1 -W 10 -v -d \
            -i "sub-$name" >"$WORK/$name.out" 2>&1 &
        local sub=$!
        if wait_for "$WORK/$name.out" "SUBACK"; then
            mosquitto_pub "${P[@]}" "${BOB[@]}" -q 1 -t sample/alice/x -m denied -i "bob-$name"
            mosquitto_pub "${P[@]}" "${ALICE[@]}" -q 1 -t sample/alice/x -m allowed -i "alice-$name"
            wait "$sub" 2>/dev/null
            got=$(grep -v -E '^Client |^Subscribed' "$WORK/$name.out")
            [ "$got" = "sample/alice/x allowed" ] && pass "$who: sample ACL-denied publish not delivered" \
                || fail "$who: sample ACL-denied publish not delivered" "got '$got'"
        else
            kill "$sub" 2>/dev/null
            fail "$who: sample ACL-denied publish not delivered" "no SUBACK: $(cat "$WORK/$name.out")"
        fi

        # A wrong password and an anonymous client are refused.
        if got=$(timeout 10 mosquitto_pub "${P[@]}" -u alice -P wrong -t sample/alice/x -m x 2>&1); then
            fail "$who: sample wrong password refused" "mosquitto_pub succeeded"
        else
            pass "$who: sample wrong password refused"
        fi
        if got=$(timeout 10 mosquitto_pub "${T[@]}" -t sample/alice/x -m x 2>&1); then
            fail "$who: sample anonymous client refused" "mosquitto_pub succeeded"
        else
            pass "$who: sample anonymous client refused"
        fi
    }

    # Bounded wait until both MQTT listeners answer (with a CONNACK of any
    # kind: anonymous clients are refused, which is an answer).
    sample_wait() {
        for _ in $(seq 1 100); do
            if timeout 2 mosquitto_pub -h 127.0.0.1 -p "$S_PLAIN" -u alice -P wonderland \
                -t sample/alice/probe -m probe 2>/dev/null; then
                return 0
            fi
            sleep 0.05
        done
        return 1
    }

    for who in mosquitto ferrymq; do
        mkdir -p "$WORK/sample-$who"
        if [ "$who" = mosquitto ]; then
            (cd "$WORK/sample-$who" && exec mosquitto -c "$SAMPLE_DIR/mosquitto.conf") \
                >"$WORK/sample-$who.log" 2>&1 &
        else
            (cd "$WORK/sample-$who" && exec "$FERRYMQ" broker -c "$SAMPLE_DIR/mosquitto.conf") \
                >"$WORK/sample-$who.log" 2>&1 &
        fi
        SAMPLE_BROKER=$!
        if sample_wait; then
            pass "$who: starts from the sample mosquitto.conf"
            sample_checks "$who"
        else
            fail "$who: starts from the sample mosquitto.conf" "$(cat "$WORK/sample-$who.log")"
        fi
        kill -TERM "$SAMPLE_BROKER" 2>/dev/null
        wait "$SAMPLE_BROKER" 2>/dev/null
    done
fi
