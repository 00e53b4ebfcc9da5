# Sourced by run.sh: real-world mosquitto.conf shapes, each run unchanged
# under Debian's `mosquitto -c` and under ferrymq started through a link
# named `mosquitto` (what a user who swaps the binary gets), with the same
# checks against both; where both run, their MQTT 5 CONNACK bytes for the
# same CONNECT are compared.
#
# - Debian's own packaged /etc/mosquitto/mosquitto.conf, with its
#   include_dir holding a user's listener (only its paths are moved into
#   the scratch directory): persistence, pid_file, log_dest file;
# - legacy `port` + `bind_address`;
# - per_listener_settings with a password file on one listener;
# - a Unix-domain socket listener;
# - TLS with the intermediate CA in cafile (certfile: the server
#   certificate alone), client certificates and a CRL;
# - listener_allow_anonymous with accept_protocol_versions, and a PROXY
#   protocol v2 listener fed a real v2 header: Mosquitto 2.1 options the
#   Debian package (2.0) does not know, so only ferrymq runs them (the
#   result says so).
#
# Templates are tests/interop/configs/*.conf; @PORT@, @PORT2@ and @DIR@
# are replaced with free ports and the run's directory.
# Uses run.sh's pass/fail/wait_for, $FERRYMQ, $WORK; free_port from
# ferrymq_tools.sh.

CFG="$WORK/configs"
mkdir -p "$CFG" "$WORK/bin"
# Mosquitto started as root drops to the `mosquitto` user before it reads
# its files and binds its Unix socket.
chmod 777 "$CFG"
chmod o+x "$WORK"
ln -sf "$FERRYMQ" "$WORK/bin/mosquitto"
RAW=(python3 tests/interop/raw_mqtt.py)

# Bounded wait until 127.0.0.1:PORT accepts connections.
wait_tcp() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# cfg_start WHO DIR: the broker WHO on DIR/mosquitto.conf, from DIR.
cfg_start() {
    local who=$1 dir=$2 bin=mosquitto
    [ "$who" = ferrymq ] && bin="$WORK/bin/mosquitto"
    (cd "$dir" && exec "$bin" -c "$dir/mosquitto.conf") >>"$dir/stderr.log" 2>&1 &
    CFG_PID=$!
}

cfg_stop() {
    kill -TERM "$CFG_PID" 2>/dev/null
    wait "$CFG_PID" 2>/dev/null
}

# cfg_roundtrip LABEL ARGS...: a QoS 1 message from mosquitto_pub reaches
# mosquitto_sub, both connected with ARGS (host, port or --unix, auth).
cfg_roundtrip() {
    local label=$1 out="$WORK/cfg-$RANDOM.out"
    shift
    local topic="cfg/$RANDOM"
    stdbuf -oL mosquitto_sub "$@" -q 1 -t "$topic" -C 1 -W 10 -v -d >"$out" 2>&1 &
    local sub=$!
    if ! wait_for "$out" SUBACK; then
        kill "$sub" 2>/dev/null
        fail "$label" "no SUBACK: $(cat "$out")"
        return
    fi
    mosquitto_pub "$@" -q 1 -t "$topic" -m through
    wait "$sub" 2>/dev/null
    if grep -qx "$topic through" "$out"; then pass "$label"; else fail "$label" "$(cat "$out")"; fi
}

# cfg_refused LABEL ARGS...: mosquitto_pub with ARGS is refused.
cfg_refused() {
    local label=$1
    shift
    if timeout 10 mosquitto_pub "$@" -t cfg/refused -m x >/dev/null 2>&1; then
        fail "$label" "mosquitto_pub succeeded"
    else
        pass "$label"
    fi
}

# cfg_expect LABEL WANT GOT
cfg_expect() {
    if [ "$2" = "$3" ]; then pass "$1"; else fail "$1" "want '$2', got '$3'"; fi
}

# cfg_run NAME CHECKS WHO...: for each broker, a fresh directory, the
# template with its placeholders replaced, the broker started and awaited,
# CHECKS run as `CHECKS WHO DIR`, the broker stopped.
cfg_run() {
    local name=$1 checks=$2
    shift 2
    for who in "$@"; do
        local dir="$CFG/$name-$who"
        mkdir -p "$dir"
        chmod 777 "$dir"
        CFG_PORT=$(free_port)
        CFG_PORT2=$(free_port)
        cfg_prepare "$name" "$dir" || continue
        cfg_start "$who" "$dir"
        if wait_tcp "$CFG_PORT"; then
            pass "$who: starts from $name"
            "$checks" "$who" "$dir"
        else
            fail "$who: starts from $name" "$(cat "$dir/stderr.log")"
        fi
        cfg_stop
    done
}

# The scratch copy of a template (or, for debian, of the packaged file).
cfg_prepare() {
    local name=$1 dir=$2
    local subst=(-e "s|@PORT@|$CFG_PORT|" -e "s|@PORT2@|$CFG_PORT2|" -e "s|@DIR@|$dir|")
    case $name in
        debian)
            if [ ! -f /etc/mosquitto/mosquitto.conf ]; then
                fail "debian: /etc/mosquitto/mosquitto.conf" "the mosquitto package is not installed"
                return 1
            fi
            mkdir -p "$dir/conf.d" "$dir/lib"
            chmod 777 "$dir/lib"
            sed -e "s|/run/mosquitto/mosquitto.pid|$dir/mosquitto.pid|" \
                -e "s|/var/lib/mosquitto/|$dir/lib/|" \
                -e "s|/var/log/mosquitto/mosquitto.log|$dir/mosquitto.log|" \
                -e "s|/etc/mosquitto/conf.d|$dir/conf.d|" \
                /etc/mosquitto/mosquitto.conf >"$dir/mosquitto.conf"
            # Nothing but the paths differs from the packaged file.
            local changed
            changed=$(diff /etc/mosquitto/mosquitto.conf "$dir/mosquitto.conf" | grep '^>' | grep -vc "$dir")
            [ "$changed" -eq 0 ] || fail "debian: only paths moved" "$changed other lines differ"
            cp /etc/mosquitto/conf.d/README "$dir/conf.d/" 2>/dev/null
            sed "${subst[@]}" tests/interop/configs/debian_conf.d_listener.conf \
                >"$dir/conf.d/listener.conf"
            ;;
        *)
            sed "${subst[@]}" "tests/interop/configs/$name.conf" >"$dir/mosquitto.conf"
            ;;
    esac
    cp "$CFG/pki/"* "$CFG/passwd" "$dir/" 2>/dev/null
    chmod -R a+r "$dir"
}

# Files several configurations use: a password file, and a private PKI
# (root CA, intermediate CA, a server certificate without its chain, two
# client certificates, the intermediate's CRL revoking one of them).
cfg_files() {
    mosquitto_passwd -c -b "$CFG/passwd" alice wonderland || return 1
    mkdir -p "$CFG/pki"
    (
        cd "$CFG/pki" || exit 1
        ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
        ca_ext="basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=cfg root CA" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout root.key -out root.pem
        openssl req "${ec[@]}" -subj "/CN=cfg intermediate CA" -keyout int.key -out int.csr
        printf "$ca_ext" >int.ext
        openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -days 2 \
            -extfile int.ext -out int.pem
        leaf() { # name cn eku
            openssl req "${ec[@]}" -subj "/CN=$2" -keyout "$1.key" -out "$1.csr"
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' \
                "$3" >"$1.ext"
            openssl x509 -req -in "$1.csr" -CA int.pem -CAkey int.key -CAcreateserial -days 2 \
                -extfile "$1.ext" -out "$1.pem"
        }
        leaf server localhost serverAuth
        leaf good device-good clientAuth
        leaf revoked device-revoked clientAuth
        cat int.pem root.pem >cas.pem
        : >index.txt
        echo 1000 >crlnumber
        printf '[ca]\ndefault_ca=int\n[int]\ndatabase=index.txt\ncrlnumber=crlnumber\ndefault_md=sha256\ndefault_crl_days=2\n' \
            >ca.cnf
        openssl ca -batch -config ca.cnf -keyfile int.key -cert int.pem -revoke revoked.pem
        openssl ca -batch -config ca.cnf -keyfile int.key -cert int.pem -gencrl -out crl.pem
        rm -f ./*.csr ./*.ext ./*.cnf index.* crlnumber* ./*.srl
    ) >"$CFG/pki.log" 2>&1
}

CONNACK_ASKED="v5 CONNECT, keep-alive 60"
cfg_connack() { # WHO NAME: records the broker's v5 CONNACK for NAME
    local got
    got=$("${RAW[@]}" connack 127.0.0.1 "$CFG_PORT" v5 60 2>&1)
    printf '%s' "$got" >"$CFG/connack-$2-$1"
}

# Compares the CONNACK bytes both brokers sent for NAME.
cfg_compare_connack() {
    local name=$1 a b
    a=$(cat "$CFG/connack-$name-mosquitto" 2>/dev/null)
    b=$(cat "$CFG/connack-$name-ferrymq" 2>/dev/null)
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        pass "$name: same MQTT 5 CONNACK bytes from both ($CONNACK_ASKED): $a"
    else
        fail "$name: same MQTT 5 CONNACK bytes from both" "mosquitto '$a', ferrymq '$b'"
    fi
}

check_debian() {
    local who=$1 dir=$2 P=(-h 127.0.0.1 -p "$CFG_PORT")
    cfg_roundtrip "$who: debian round trip 3.1.1" "${P[@]}" -V mqttv311
    cfg_roundtrip "$who: debian round trip 5" "${P[@]}" -V mqttv5
    cfg_connack "$who" debian
    cfg_expect "$who: debian pid_file holds the broker's pid" "$CFG_PID" "$(tr -d '\n' <"$dir/mosquitto.pid" 2>/dev/null)"
    # `persistence true`: a retained message outlives a restart.
    mosquitto_pub "${P[@]}" -q 1 -r -t deb/kept -m kept
    cfg_stop
    cfg_start "$who" "$dir"
    wait_tcp "$CFG_PORT"
    cfg_expect "$who: debian retained message survives a restart (persistence true)" \
        "deb/kept kept" "$(mosquitto_sub "${P[@]}" -t deb/kept -C 1 -W 5 -v 2>&1)"
    if [ -s "$dir/mosquitto.log" ]; then
        pass "$who: debian log_dest file written"
    else
        fail "$who: debian log_dest file written" "empty $dir/mosquitto.log"
    fi
}

check_legacy() {
    local who=$1 P=(-h 127.0.0.1 -p "$CFG_PORT")
    cfg_roundtrip "$who: legacy port/bind_address round trip" "${P[@]}"
    cfg_connack "$who" legacy
}

check_per_listener() {
    local who=$1
    cfg_roundtrip "$who: per_listener open listener, anonymous" -h 127.0.0.1 -p "$CFG_PORT"
    cfg_refused "$who: per_listener closed listener refuses anonymous" -h 127.0.0.1 -p "$CFG_PORT2"
    cfg_roundtrip "$who: per_listener closed listener takes its password" \
        -h 127.0.0.1 -p "$CFG_PORT2" -u alice -P wonderland
}

check_unix() {
    local who=$1 dir=$2
    cfg_expect "$who: unix socket CONNACK" 20020000 "$("${RAW[@]}" connack-unix "$dir/mqtt.sock" v311 2>&1)"
    cfg_expect "$who: unix socket mode 0770" 770 "$(stat -c %a "$dir/mqtt.sock" 2>&1)"
    cfg_roundtrip "$who: unix socket round trip" --unix "$dir/mqtt.sock"
    # From TCP to the Unix socket.
    local out="$WORK/cfg-unix-$who.out"
    stdbuf -oL mosquitto_sub --unix "$dir/mqtt.sock" -t cfg/across -C 1 -W 10 -v -d >"$out" 2>&1 &
    local sub=$!
    if wait_for "$out" SUBACK; then
        mosquitto_pub -h 127.0.0.1 -p "$CFG_PORT" -t cfg/across -m tcp
        wait "$sub" 2>/dev/null
        if grep -qx "cfg/across tcp" "$out"; then pass "$who: TCP to unix socket"; else fail "$who: TCP to unix socket" "$(cat "$out")"; fi
    else
        kill "$sub" 2>/dev/null
        fail "$who: TCP to unix socket" "no SUBACK: $(cat "$out")"
    fi
}

check_tls() {
    local who=$1 dir=$2
    # The client trusts the root alone: the intermediate must come from
    # the broker.
    local T=(-h localhost -p "$CFG_PORT" --cafile "$dir/root.pem")
    cfg_roundtrip "$who: TLS chain completed from cafile, client certificate" \
        "${T[@]}" --cert "$dir/good.pem" --key "$dir/good.key"
    cfg_refused "$who: TLS client certificate revoked by crlfile" \
        "${T[@]}" --cert "$dir/revoked.pem" --key "$dir/revoked.key"
    cfg_refused "$who: TLS without a client certificate" "${T[@]}"
}

check_listener_allow_anonymous() {
    local who=$1
    cfg_roundtrip "$who: listener_allow_anonymous opens one listener" -h 127.0.0.1 -p "$CFG_PORT"
    cfg_expect "$who: accept_protocol_versions 5 refuses 3.1.1 (return code 1)" 20020001 \
        "$("${RAW[@]}" connack 127.0.0.1 "$CFG_PORT2" v311 2>&1)"
    cfg_roundtrip "$who: accept_protocol_versions 5 takes MQTT 5" -h 127.0.0.1 -p "$CFG_PORT2" -V mqttv5
}

check_proxy() {
    local who=$1 dir=$2
    cfg_expect "$who: PROXY v2 header then CONNECT" 20020000 \
        "$("${RAW[@]}" proxy-v2 127.0.0.1 "$CFG_PORT" 203.0.113.7 40001 2>&1)"
    if grep -q "203.0.113.7:40001" "$dir/stderr.log"; then
        pass "$who: PROXY v2 client address in the log"
    else
        fail "$who: PROXY v2 client address in the log" "$(tail -5 "$dir/stderr.log")"
    fi
    cfg_expect "$who: no PROXY header: closed" closed \
        "$("${RAW[@]}" connack 127.0.0.1 "$CFG_PORT" v311 2>&1)"
}

if ! command -v mosquitto >/dev/null || ! command -v mosquitto_passwd >/dev/null; then
    fail "configurations" "mosquitto or mosquitto_passwd is not installed"
elif ! cfg_files; then
    fail "configurations: password file and PKI" "$(cat "$CFG/pki.log")"
else
    cfg_run debian check_debian mosquitto ferrymq
    cfg_compare_connack debian
    cfg_run legacy check_legacy mosquitto ferrymq
    cfg_compare_connack legacy
    cfg_run per_listener check_per_listener mosquitto ferrymq
    cfg_run unix check_unix mosquitto ferrymq
    cfg_run tls_chain_crl check_tls mosquitto ferrymq
    # Mosquitto 2.1 options: the Debian package (2.0.11) refuses them.
    for name in listener_allow_anonymous proxy; do
        echo "note: $name uses Mosquitto 2.1 options; the reference broker here is $(mosquitto -h 2>&1 | head -1), so only ferrymq runs it"
    done
    cfg_run listener_allow_anonymous check_listener_allow_anonymous ferrymq
    cfg_run proxy check_proxy ferrymq
fi
