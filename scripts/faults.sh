#!/usr/bin/env bash
# Faults on the relay's links, across three network namespaces (root):
#   1. 1% random packet loss on every packet the relay sends or receives;
#   2. a 10 s blackhole of the relay mid-transfer.
# For each, a file of FAULT_SIZE_MB (default 1024) is downloaded through the
# per-port inlet and, when the interface is available, through the TUN. Each
# transfer must end with the sha256 of the original, or fail with a clear
# error before its timeout: never silent corruption, never a hang.
#
# The kernel here has no sch_netem (no delay emulation); loss and blackholes
# are made with nftables in the relay's namespace.
# Usage: scripts/faults.sh [path/to/ockam]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
. "$here/netns.sh"
netns_require_root
command -v nft >/dev/null || { echo "faults: needs nft (nftables)" >&2; exit 2; }

SIZE_MB=${FAULT_SIZE_MB:-1024}
tmp=$(mktemp -d "/tmp/ockam-faults.$$.XXXX")
export OCKAM_HOME=$tmp/home
ockam_bin=${1:-$root/bin/ockam}
ockam_bin=$(realpath "$ockam_bin")
failures=0

cleanup() {
	local rc=$?
	set +e
	if [[ -n ${FAULT_KEEP_LOGS:-} ]]; then
		mkdir -p "$FAULT_KEEP_LOGS" && cp "$OCKAM_HOME"/nodes/*/node.log "$FAULT_KEEP_LOGS"/ 2>/dev/null
		for n in "$OCKAM_HOME"/nodes/*; do cp "$n/node.log" "$FAULT_KEEP_LOGS/$(basename "$n").log" 2>/dev/null; done
	fi
	"$ockam_bin" node delete --all >/dev/null 2>&1
	netns_kill
	netns_down
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

netns_up
ockam() { local ns=$1; shift; in_ns "$ns" "$ockam_bin" "$@"; }

head -c $((SIZE_MB << 20)) /dev/urandom >"$tmp/blob"
want=$(sha256sum "$tmp/blob" | cut -d' ' -f1)
# Not in a subshell: spawn records the PID for netns_kill in this shell.
spawn "$NS_SERVER" "$tmp/http.log" python3 -m http.server --bind 127.0.0.1 5000 --directory "$tmp"
wait_port "$NS_SERVER" 127.0.0.1 5000 10

ockam "$NS_RELAY" node create relay --tcp-listener-address "$RELAY_IP:4000" >/dev/null
wait_port "$NS_CLIENT" "$RELAY_IP" 4000 10
ockam "$NS_SERVER" node create server_sidecar >/dev/null
ockam "$NS_SERVER" tcp-outlet create --at /node/server_sidecar --from /service/outlet --to 127.0.0.1:5000 >/dev/null
ockam "$NS_SERVER" tcp-outlet create --at /node/server_sidecar --from /service/ports --to 127.0.0.1 --ports 5000 >/dev/null
ockam "$NS_SERVER" relay create server_sidecar --at "/ip4/$RELAY_IP/tcp/4000" --to /node/server_sidecar >/dev/null
ockam "$NS_CLIENT" node create client_sidecar >/dev/null
ch=$(ockam "$NS_CLIENT" secure-channel create --from /node/client_sidecar --to "/ip4/$RELAY_IP/tcp/4000/service/forward_to_server_sidecar/service/api")
echo "$ch" | ockam "$NS_CLIENT" tcp-inlet create --at /node/client_sidecar --from 127.0.0.1:7000 --to -/service/outlet >/dev/null
paths=("inlet http://127.0.0.1:7000/blob")
if ockam "$NS_CLIENT" tun create --at /node/client_sidecar >/dev/null 2>&1; then
	ip=$(echo "$ch" | ockam "$NS_CLIENT" tun map --at /node/client_sidecar --to -/service/ports)
	paths+=("tun http://$ip:5000/blob")
fi

relay_nft() { in_ns "$NS_RELAY" nft "$@"; }
faults_table() {
	relay_nft add table inet faults
	relay_nft add chain inet faults in '{ type filter hook input priority 0; }'
	relay_nft add chain inet faults out '{ type filter hook output priority 0; }'
}
# loss_on PERCENT drops that share of the relay's TCP packets, both ways.
loss_on() {
	faults_table
	relay_nft add rule inet faults in meta l4proto tcp numgen random mod 100 '<' "$1" drop
	relay_nft add rule inet faults out meta l4proto tcp numgen random mod 100 '<' "$1" drop
}
blackhole_on() {
	faults_table
	relay_nft add rule inet faults in meta l4proto tcp drop
	relay_nft add rule inet faults out meta l4proto tcp drop
}
faults_off() { relay_nft delete table inet faults 2>/dev/null || true; }

# fetch NAME URL: download through the tunnel, check the sha256, report.
fetch() {
	local name=$1 url=$2 start end rc got
	start=$(date +%s.%N)
	set +e
	in_ns "$NS_CLIENT" curl --silent --show-error --max-time 300 -o "$tmp/got" "$url" 2>"$tmp/curl.err"
	rc=$?
	set -e
	end=$(date +%s.%N)
	local secs
	secs=$(echo "$end - $start" | bc -l)
	if ((rc != 0)); then
		printf '%-34s failed cleanly after %.1f s: %s\n' "$name" "$secs" "$(tr -d '\n' <"$tmp/curl.err")"
		return 0
	fi
	got=$(sha256sum "$tmp/got" | cut -d' ' -f1)
	if [[ $got != "$want" ]]; then
		printf '%-34s CORRUPTED: sha256 %s, want %s\n' "$name" "$got" "$want"
		failures=$((failures + 1))
		return 0
	fi
	printf '%-34s %d MiB intact (sha256 equal) in %.1f s, %.0f Mbit/s\n' "$name" "$SIZE_MB" "$secs" "$(echo "$SIZE_MB * 8.388608 / $secs" | bc -l)"
}

for p in "${paths[@]}"; do
	set -- $p
	name=$1 url=$2
	faults_off
	fetch "$name, clean" "$url"

	loss_on 1
	fetch "$name, 1% loss at the relay" "$url"
	faults_off

	# A 10 s blackhole of the relay, 1 s into the transfer.
	(
		sleep 1
		blackhole_on
		sleep 10
		faults_off
	) &
	bh=$!
	fetch "$name, 10 s relay blackhole" "$url"
	wait "$bh" 2>/dev/null || true
	faults_off
	# The path works again afterwards, without any command.
	fetch "$name, after the blackhole" "$url"
done

if ((failures > 0)); then
	echo "FAIL: $failures corrupted transfer(s)"
	exit 1
fi
echo "PASS: no corruption, no hang"
