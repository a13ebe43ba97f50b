#!/usr/bin/env bash
# The seed demo through a virtual interface (root): the server and its
# sidecar, and the relay, run on this host; the client and its sidecar run in
# a network namespace whose only link reaches the relay's listener. The
# client sidecar owns a TUN; `tun map` gives the remote service a virtual
# address and a name, and plain curl reaches the server through them.
# Everything it starts is removed on exit. Usage: scripts/demo-tun.sh [path/to/ockam]
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "demo-tun: needs root (network namespaces and a TUN device); try: sudo make demo-tun" >&2
	exit 2
fi

OCKAM_BIN=${1:-$(dirname "$0")/../bin/ockam}
OCKAM_BIN=$(cd "$(dirname "$OCKAM_BIN")" && pwd)/$(basename "$OCKAM_BIN")
export PATH="$(dirname "$OCKAM_BIN"):$PATH"
export OCKAM_HOME=$(mktemp -d /tmp/ockam-demo-tun.XXXXXX)
NS=ockc-$$
VETH=ockv$$
HOST_IP=10.201.$(($$ % 200)).1
CLIENT_IP=10.201.$(($$ % 200)).2
SERVER_PID=

cleanup() {
	ockam node delete --all >/dev/null 2>&1 || true
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	ip link del "$VETH" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "/etc/netns/$NS" "$OCKAM_HOME"
}
trap cleanup EXIT

bold= reset=
if [ -t 1 ]; then bold=$(tput bold 2>/dev/null || true); reset=$(tput sgr0 2>/dev/null || true); fi
show() { printf '\n%s$ %s%s\n' "$bold" "$*" "$reset"; }
run() { show "$*"; eval "$@"; }
in_client() { ip netns exec "$NS" "$@"; }

# wait_port PORT: poll until something accepts on 127.0.0.1:PORT (10 s).
wait_port() {
	for _ in $(seq 1 200); do
		(exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
		sleep 0.05
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

if (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null; then
	echo "demo-tun: port 5000 is in use on 127.0.0.1; free it and run again" >&2
	exit 1
fi

echo "# -- NETWORK: a client namespace that reaches only the relay's listener --"
mkdir -p "/etc/netns/$NS"
echo "nameserver 100.100.100.100" >"/etc/netns/$NS/resolv.conf" # the TUN answers for mapped names
ip netns add "$NS"
ip link add "$VETH" type veth peer name eth0 netns "$NS"
ip addr add "$HOST_IP/30" dev "$VETH"
ip link set "$VETH" up
in_client ip link set lo up
in_client ip addr add "$CLIENT_IP/30" dev eth0
in_client ip link set eth0 up

run ockam node create relay --tcp-listener-address "$HOST_IP:4000"

echo; echo "# -- APPLICATION SERVICE (on this host, 127.0.0.1:5000) --"
show "python3 -m http.server --bind 127.0.0.1 5000 &"
python3 -m http.server --bind 127.0.0.1 5000 >/dev/null 2>&1 &
SERVER_PID=$!
wait_port 5000

run ockam node create server_sidecar
run ockam tcp-outlet create --at /node/server_sidecar --from /service/outlet --to 127.0.0.1 --ports 5000
run ockam forwarder create server_sidecar --at /node/relay --to /node/server_sidecar

echo; echo "# -- APPLICATION CLIENT (namespace $NS) --"
run ip netns exec "$NS" ockam node create client_sidecar
run ockam tun create --at /node/client_sidecar
run "ockam secure-channel create --from /node/client_sidecar --to /ip4/$HOST_IP/tcp/4000/service/forward_to_server_sidecar/service/api \\
    | ockam tun map --at /node/client_sidecar --to -/service/outlet --name api.ockam"
run ip netns exec "$NS" curl --silent --show-error --max-time 10 --head http://100.64.0.2:5000/
run ip netns exec "$NS" curl --silent --show-error --max-time 10 --head http://api.ockam:5000/
echo; echo "# Ports the outlet does not allow are refused at once:"
run "ip netns exec $NS curl --silent --show-error --max-time 10 http://api.ockam:22/ 2>&1 || true"

run ockam tun show --at /node/client_sidecar
run ockam tun delete --at /node/client_sidecar
echo; echo "# The interface and its routes are gone; the namespace keeps only its link to the relay:"
run "ip netns exec $NS ip -br link show; ip netns exec $NS ip route"
