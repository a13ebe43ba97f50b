#!/usr/bin/env bash
# The seed demo, command for command, on loopback and without root:
# an HTTP server, three nodes, an outlet, a forwarder, a secure channel piped
# into an inlet, and curl through it all. Everything it starts is removed on
# exit. Usage: scripts/demo.sh [path/to/ockam]
set -euo pipefail

OCKAM_BIN=${1:-$(dirname "$0")/../bin/ockam}
OCKAM_BIN=$(cd "$(dirname "$OCKAM_BIN")" && pwd)/$(basename "$OCKAM_BIN")
export PATH="$(dirname "$OCKAM_BIN"):$PATH"
export OCKAM_HOME=$(mktemp -d /tmp/ockam-demo.XXXXXX)
SERVER_PID=

cleanup() {
	ockam node delete --all >/dev/null 2>&1 || true
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$OCKAM_HOME"
}
trap cleanup EXIT

bold= reset=
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true); reset=$(tput sgr0 2>/dev/null || true); fi
show() { printf '\n%s$ %s%s\n' "$bold" "$*" "$reset"; }
run() { show "$*"; eval "$@"; }

# wait_port PORT: poll until something accepts on 127.0.0.1:PORT (10 s).
wait_port() {
	for _ in $(seq 1 200); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

for p in 5000 7000; do
	if (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
		echo "demo: port $p is in use on 127.0.0.1; free it and run again" >&2
		exit 1
	fi
done

run ockam node create relay

echo; echo "# -- APPLICATION SERVICE --"
show "python3 -m http.server --bind 127.0.0.1 5000 &"
python3 -m http.server --bind 127.0.0.1 5000 >/dev/null 2>&1 &
SERVER_PID=$!
wait_port 5000

run ockam node create server_sidecar
run ockam tcp-outlet create --at /node/server_sidecar --from /service/outlet --to 127.0.0.1:5000
run ockam forwarder create server_sidecar --at /node/relay --to /node/server_sidecar

echo; echo "# -- APPLICATION CLIENT --"
run ockam node create client_sidecar
run "ockam secure-channel create --from /node/client_sidecar --to /node/relay/service/forward_to_server_sidecar/service/api \\
    | ockam tcp-inlet create --at /node/client_sidecar --from 127.0.0.1:7000 --to -/service/outlet"

run curl --silent --show-error --head 127.0.0.1:7000

echo; echo "# The relay forwarded only ciphertext; here is what each node holds:"
run ockam secure-channel list --at /node/client_sidecar
run ockam tcp-inlet show 127.0.0.1:7000 --at /node/client_sidecar
run ockam relay list --at /node/relay
