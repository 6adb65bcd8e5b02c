//! A wrapper script written for the C++ reference, run against our binaries:
//! it starts both proxies on the local service, waits for the reference's
//! lifecycle lines with `grep -F` (as the reference's own UAT scripts do),
//! reads the ports the source picked from the reference's "New port
//! mapping" lines, moves data with bash's /dev/tcp, closes the tunnel and
//! checks the exits.
//! If a stable line were reworded, this script would time out.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const SCRIPT: &str = r#"
set -euo pipefail
LP=$1 SVC=$2 WORK=$3 ECHO=$4

# The reference's UAT helper: poll a log for a fixed string, with a deadline.
wait_for_log() {
  local file=$1 pattern=$2 deadline=$((SECONDS + ${3:-20}))
  until grep -qF -- "$pattern" "$file" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "TIMEOUT waiting for '$pattern' in $file:" >&2; cat "$file" >&2; exit 1
    fi
    sleep 0.05 # polling interval
  done
}

"$SVC" serve --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 >"$WORK/svc.out" 2>"$WORK/svc.err" &
SVC_PID=$!
trap 'kill $SVC_PID ${DST_PID:-} ${SRC_PID:-} 2>/dev/null || true' EXIT
wait_for_log "$WORK/svc.out" READY
ready=$(grep READY "$WORK/svc.out")
data=$(sed -n 's/.*data=\([^ ]*\).*/\1/p' <<<"$ready")
api=$(sed -n 's/.*api=\([^ ]*\).*/\1/p' <<<"$ready")
ca=$(sed -n 's/.*ca_dir=\([^ ]*\).*/\1/p' <<<"$ready")
eval "$("$SVC" open --api "$api" --services SSH1,WEB --format env)"

AWSIOT_TUNNEL_ACCESS_TOKEN=$DESTINATION_TOKEN "$LP" -e "$data" -c "$ca" -d "SSH1=$ECHO,WEB=$ECHO" \
  >"$WORK/dst.log" 2>&1 &
DST_PID=$!
AWSIOT_TUNNEL_ACCESS_TOKEN=$SOURCE_TOKEN "$LP" -e "$data" -c "$ca" -m source \
  >"$WORK/src.log" 2>&1 &
SRC_PID=$!
wait_for_log "$WORK/dst.log" "Starting proxy in destination mode"
wait_for_log "$WORK/dst.log" "Successfully established websocket connection with proxy server: wss://$data"
wait_for_log "$WORK/src.log" "Starting proxy in source mode"
wait_for_log "$WORK/src.log" "Successfully established websocket connection with proxy server: wss://$data"
wait_for_log "$WORK/src.log" "Use port mapping:"
wait_for_log "$WORK/src.log" "Listening for new connection on port "
# No -s: the port picked for each service, from the reference's own lines.
wait_for_log "$WORK/src.log" "Listen port assigned for service id SSH1. New port mapping:"
wait_for_log "$WORK/src.log" "Listen port assigned for service id WEB. New port mapping:"
port=$(grep -F "SSH1 = " "$WORK/src.log" | tail -n 1 | sed -n 's/.*SSH1 = \([0-9]*\)$/\1/p')
web=$(grep -F "WEB = " "$WORK/src.log" | tail -n 1 | sed -n 's/.*WEB = \([0-9]*\)$/\1/p')
[ -n "$port" ] && [ "$port" != 0 ] && [ -n "$web" ] && [ "$web" != "$port" ] \
  || { echo "no port mapping lines: ssh '$port' web '$web'" >&2; cat "$WORK/src.log" >&2; exit 1; }
grep -qF "Listening for new connection on port $port" "$WORK/src.log"

exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'hello through the tunnel' >&3
IFS= read -r -t 10 -N 24 reply <&3
[ "$reply" = "hello through the tunnel" ] || { echo "bad echo: '$reply'" >&2; exit 1; }
wait_for_log "$WORK/src.log" "Accepted tcp connection on port $port from 127.0.0.1:"
wait_for_log "$WORK/dst.log" "Connected to 127.0.0.1, port: $ECHO"
exec 3>&-
wait_for_log "$WORK/src.log" "Disconnected from: 127.0.0.1:"
wait_for_log "$WORK/dst.log" "Disconnected from: 127.0.0.1:$ECHO"

"$SVC" close --api "$api" --tunnel-id "$TUNNEL_ID" >/dev/null
wait_for_log "$WORK/dst.log" "Web socket close received. Code: 1000"
wait_for_log "$WORK/src.log" "Web socket close received. Code: 1000"
wait "$DST_PID" && echo "destination exit 0"
wait "$SRC_PID" && echo "source exit 0"
echo SCRIPT-OK
"#;

#[test]
fn a_script_written_for_the_reference_sees_its_lines() {
    let _w = watchdog("script_compat", Duration::from_secs(90));
    let work = temp_dir("script-compat");
    let echo = echo_server();
    let out = Command::new("bash")
        .arg("-c")
        .arg(SCRIPT)
        .arg("compat")
        .arg(localproxy_bin())
        .arg(service_bin())
        .arg(&work)
        .arg(echo.to_string())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("SCRIPT-OK"),
        "script failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("destination exit 0"), "{stdout}");
    assert!(stdout.contains("source exit 0"), "{stdout}");
}
