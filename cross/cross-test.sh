#!/usr/bin/env bash
# cross/cross-test.sh: the ARM build end to end under qemu-user.
#
#   cross/cross-test.sh TARGET
#
# 1. the library's unit tests, cross-built and run under qemu (UNIT_TESTS=0 skips);
# 2. the x86 tunnel-service on 127.0.0.1, a tunnel opened through its API, a
#    python3 echo server, the ARM localproxy as destination (-d SSH1=echo) and
#    as source under qemu-user, SIZE_MIB MiB of random data through the tunnel
#    and back; the sha256 of what the echo server received and of what came
#    back must both equal the sha256 of what was sent.
#
# Every foreground step runs under `timeout`, every background process under
# `timeout` too (a watchdog for the whole run), and the EXIT trap kills each
# process this script started, by pid. Only 127.0.0.1 is used.
set -euo pipefail
. "$(dirname "$0")/common.sh"

target=${1:?usage: cross-test.sh TARGET}
SIZE_MIB=${SIZE_MIB:-8}
STEP_TIMEOUT=${STEP_TIMEOUT:-60}
RUN_LIMIT=${RUN_LIMIT:-600}
UNIT_TESTS=${UNIT_TESTS:-1}

qemu=$(qemu_bin "$target")
libdir=$(sysroot_libdir "$target")
arm_out="$ROOT_DIR/target/$target/release"
host_out="$ROOT_DIR/target/release"

work=$(mktemp -d)
pids=()
cleanup() {
    local status=$?
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # `timeout` forwards TERM to its child; give it a moment, then KILL.
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" != 0 ]; then
        echo "cross-test.sh: FAILED ($target); logs:" >&2
        for f in "$work"/*.log "$work"/*.out; do
            [ -e "$f" ] || continue
            echo "--- $(basename "$f")" >&2
            sed -e 's/\(TOKEN=\).*/\1<redacted>/' "$f" | tail -n 30 >&2
        done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { echo "cross-test.sh [$target]: $*"; }

# Polls FILE for a line matching REGEX until LIMIT seconds have passed; prints it.
wait_for_line() {
    local file=$1 regex=$2 limit=$3 what=$4 line deadline
    deadline=$((SECONDS + limit))
    while [ "$SECONDS" -lt "$deadline" ]; do
        line=$(grep -m1 -E "$regex" "$file" 2>/dev/null || true)
        if [ -n "$line" ]; then
            printf '%s\n' "$line"
            return 0
        fi
        # A process that died will never print it: fail now, not at the deadline.
        if [ -n "${5:-}" ] && ! kill -0 "$5" 2>/dev/null; then
            echo "cross-test.sh: $what exited before logging /$regex/" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "cross-test.sh: no /$regex/ from $what within ${limit}s" >&2
    return 1
}

# Starts a background process under the run watchdog; sets LAST_PID.
start_bg() {
    local log=$1
    shift
    timeout -k 5 "$RUN_LIMIT" "$@" > "$log.out" 2> "$log.log" &
    LAST_PID=$!
    pids+=("$LAST_PID")
}

step "building (ARM release on the target's OpenSSL; x86 tunnel-service)"
"$CROSS_DIR/build.sh" "$target" >/dev/null
(cd "$ROOT_DIR" && "$CARGO" build --release --locked --bins -q)
"$CROSS_DIR/unit-check.sh"

if [ "$UNIT_TESTS" = 1 ]; then
    step "library unit tests under $qemu"
    cross_env "$target"
    (cd "$ROOT_DIR" && timeout -k 10 1200 "$CARGO" test --locked --target "$target" --lib -q)
fi

step "starting the x86 tunnel-service"
start_bg "$work/service" "$host_out/tunnel-service" serve --listen 127.0.0.1:0 --api-listen 127.0.0.1:0
service_pid=$LAST_PID
ready=$(wait_for_line "$work/service.out" '^READY ' "$STEP_TIMEOUT" tunnel-service "$service_pid")
data=$(sed -n 's/.* data=\([^ ]*\).*/\1/p' <<<"$ready")
api=$(sed -n 's/.* api=\([^ ]*\).*/\1/p' <<<"$ready")
ca_dir=$(sed -n 's/.* ca_dir=\([^ ]*\).*/\1/p' <<<"$ready")
[ -n "$data" ] && [ -n "$api" ] && [ -d "$ca_dir" ] || { echo "cross-test.sh: bad READY line: $ready" >&2; exit 1; }
case "$data$api" in 127.0.0.1:*127.0.0.1:*) ;; *) echo "cross-test.sh: service not on 127.0.0.1: $ready" >&2; exit 1 ;; esac

step "opening a tunnel with service SSH1"
timeout "$STEP_TIMEOUT" "$host_out/tunnel-service" open --api "$api" --services SSH1 --format env > "$work/tunnel.env"
get() { sed -n "s/^$1=['\"]\{0,1\}\([^'\"]*\)['\"]\{0,1\}\$/\1/p" "$work/tunnel.env" | sed -n 1p; }
src_token=$(get SOURCE_TOKEN)
dst_token=$(get DESTINATION_TOKEN)
[ -n "$src_token" ] && [ -n "$dst_token" ] || { echo "cross-test.sh: no tokens from 'tunnel-service open'" >&2; exit 1; }
step "tunnel $(get TUNNEL_ID)"

step "starting the echo server"
start_bg "$work/echo" python3 "$CROSS_DIR/e2e.py" echo "$work/echo-received.txt"
echo_line=$(wait_for_line "$work/echo.out" '^PORT [0-9]+' "$STEP_TIMEOUT" "echo server" "$LAST_PID")
echo_port=${echo_line#PORT }

# The ARM proxies under qemu-user, the token in the environment (never argv).
arm_proxy() {
    local log=$1 token=$2
    shift 2
    AWSIOT_TUNNEL_ACCESS_TOKEN=$token start_bg "$log" \
        "$qemu" -E "LD_LIBRARY_PATH=$libdir" "$arm_out/localproxy" \
        -e "$data" -c "$ca_dir" "$@"
}

step "ARM destination: -d SSH1=$echo_port"
arm_proxy "$work/destination" "$dst_token" -d "SSH1=$echo_port"
wait_for_line "$work/destination.log" 'Successfully established websocket connection with proxy server' "$STEP_TIMEOUT" "destination proxy" "$LAST_PID" >/dev/null

step "ARM source"
arm_proxy "$work/source" "$src_token" -m source
listening=$(wait_for_line "$work/source.log" 'Listening for new connection on port [0-9]+ for service SSH1' "$STEP_TIMEOUT" "source proxy" "$LAST_PID")
src_port=$(sed -n 's/.*on port \([0-9]*\) for service SSH1.*/\1/p' <<<"$listening")
[ -n "$src_port" ] || { echo "cross-test.sh: no port in: $listening" >&2; exit 1; }

step "sending $SIZE_MIB MiB through source :$src_port -> tunnel -> destination -> echo and back"
start=$SECONDS
timeout "$((STEP_TIMEOUT * 3))" python3 "$CROSS_DIR/e2e.py" transfer "$src_port" "$SIZE_MIB" 6 > "$work/transfer.out"
cat "$work/transfer.out"
sent=$(sed -n 's/^sent=[0-9]* sha256=//p' "$work/transfer.out")
received=$(sed -n 's/^received=[0-9]* sha256=//p' "$work/transfer.out")
[ "$sent" = "$received" ] || { echo "cross-test.sh: round trip hash differs" >&2; exit 1; }
# The echo server logs its side when the connection closes: poll for it.
at_echo=$(wait_for_line "$work/echo-received.txt" '^conn=1 ' "$STEP_TIMEOUT" "echo server log")
echo "echo server: $at_echo"
[ "${at_echo##*sha256=}" = "$sent" ] || { echo "cross-test.sh: the echo server received other bytes than were sent" >&2; exit 1; }
[ "$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$at_echo")" = "$((SIZE_MIB * 1024 * 1024))" ] || { echo "cross-test.sh: byte count at the echo server differs" >&2; exit 1; }

step "PASSED: $SIZE_MIB MiB each way, sha256 $sent, $((SECONDS - start))s (ARM source and destination under $qemu, x86 service)"
