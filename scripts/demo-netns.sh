#!/usr/bin/env bash
# demo-netns.sh: the seed demo (docs: /work/shared/seed/ockam-demo.md) across
# three network namespaces. The application server and its sidecar live in
# one, the client and its sidecar in another, the relay node in a third; the
# client and server namespaces reach only the relay.
#
#   usage: scripts/demo-netns.sh [OCKAM_BIN]     (root; default bin/ockam, else built)
#
# Prints every command and its output. Exit status 0 when `curl --head` through
# the inlet gets 200, 1 on any failure, 2 when it cannot run here (not root);
# SKIP_OK=1 turns "cannot run" into a one-line skip message and exit 0.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# shellcheck source=netns.sh
. "$here/netns.sh"

netns_require_root

tmp=$(mktemp -d "/tmp/ockam-demo-netns.$$.XXXX")
export OCKAM_HOME=$tmp/home
ockam_bin=${1:-}

cleanup() {
	local rc=$?
	set +e
	if [[ -n $ockam_bin && -d $OCKAM_HOME ]]; then
		"$ockam_bin" node delete --all >/dev/null 2>&1
		# Backstop: the nodes' own PIDs, should delete have failed.
		local st pid
		for st in "$OCKAM_HOME"/nodes/*/state.json; do
			[[ -f $st ]] || continue
			pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$st")
			[[ -n $pid ]] && kill "$pid" 2>/dev/null
		done
	fi
	netns_kill
	netns_down
	if ((rc != 0)); then
		local l
		for l in "$OCKAM_HOME"/nodes/*/node.log; do
			[[ -f $l ]] && { echo "--- last lines of $l"; tail -5 "$l"; }
		done
		echo "FAIL (exit $rc)"
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z $ockam_bin ]]; then
	if [[ -x $root/bin/ockam ]]; then
		ockam_bin=$root/bin/ockam
	else
		(cd "$root" && GOFLAGS=${GOFLAGS:--buildvcs=false} go build -o "$tmp/ockam" ./cmd/ockam)
		ockam_bin=$tmp/ockam
	fi
fi
ockam_bin=$(realpath "$ockam_bin")

netns_up

# ns_name NS prints client, relay or server.
ns_name() {
	case $1 in
	"$NS_CLIENT") echo client ;;
	"$NS_RELAY") echo relay ;;
	*) echo server ;;
	esac
}

# ockam NS ARGS... runs the ockam command inside NS, shown with its output.
ockam() {
	local ns=$1
	shift
	printf '\n[%s] $ ockam %s\n' "$(ns_name "$ns")" "$*"
	in_ns "$ns" "$ockam_bin" "$@"
}

# -- RELAY (reachable from both private networks at RELAY_IP) --
ockam "$NS_RELAY" node create relay --tcp-listener-address "$RELAY_IP:4000"
wait_port "$NS_CLIENT" "$RELAY_IP" 4000 10
wait_port "$NS_SERVER" "$RELAY_IP" 4000 10

# -- APPLICATION SERVICE --
printf '\n[server] $ python3 -m http.server --bind 127.0.0.1 5000 &\n'
spawn "$NS_SERVER" "$tmp/http.log" python3 -m http.server --bind 127.0.0.1 5000
wait_port "$NS_SERVER" 127.0.0.1 5000 10

ockam "$NS_SERVER" node create server_sidecar
ockam "$NS_SERVER" tcp-outlet create --at /node/server_sidecar --from /service/outlet --to 127.0.0.1:5000
ockam "$NS_SERVER" relay create server_sidecar --at "/ip4/$RELAY_IP/tcp/4000" --to /node/server_sidecar

# -- APPLICATION CLIENT --
ockam "$NS_CLIENT" node create client_sidecar
route=/ip4/$RELAY_IP/tcp/4000/service/forward_to_server_sidecar/service/api
printf '\n[client] $ ockam secure-channel create --from /node/client_sidecar --to %s \\\n' "$route"
printf '    | ockam tcp-inlet create --at /node/client_sidecar --from 127.0.0.1:7000 --to -/service/outlet\n'
in_ns "$NS_CLIENT" "$ockam_bin" secure-channel create --from /node/client_sidecar --to "$route" |
	tee /dev/stderr |
	in_ns "$NS_CLIENT" "$ockam_bin" tcp-inlet create --at /node/client_sidecar --from 127.0.0.1:7000 --to -/service/outlet
wait_port "$NS_CLIENT" 127.0.0.1 7000 10

printf '\n[client] $ curl --head 127.0.0.1:7000\n'
out=$(in_ns "$NS_CLIENT" curl --silent --show-error --max-time 10 --head 127.0.0.1:7000)
printf '%s\n' "$out"
status=$(head -1 <<<"$out" | tr -d '\r')
if [[ $status != *" 200"* ]]; then
	echo "expected 200, got: $status" >&2
	exit 1
fi

# The server is not reachable from the client's namespace except through the tunnel.
printf '\n[client] $ curl --head %s:5000   # must fail: no route\n' "$SERVER_IP"
if in_ns "$NS_CLIENT" curl --silent --max-time 2 --head "$SERVER_IP:5000" >/dev/null 2>&1; then
	echo "the client reached the server directly" >&2
	exit 1
fi
echo "failed, as it should"

printf '\n[client] $ ockam node show client_sidecar\n'
"$ockam_bin" node show client_sidecar
echo
echo "PASS: curl --head through client_sidecar -> relay -> server_sidecar -> 127.0.0.1:5000 got 200"
