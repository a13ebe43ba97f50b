# shellcheck shell=bash
# netns.sh: three network namespaces, client, relay and server, for demos and
# benchmarks. Source it; do not run it.
#
#   client (CLIENT_IP) ──veth── (RELAY_CIP) relay (RELAY_SIP) ──veth── (SERVER_IP) server
#
# The client and the server each reach only the relay: the relay does not
# forward, and neither end has a route to the other's subnet. netns_up checks
# that with a ping and a TCP connect that must fail. RELAY_IP (the relay's
# server-side veth address) is reachable from both ends, through a host route
# on the client, so one listener address serves both: the relay's "public"
# address.
#
# Functions:
#   netns_up               create the namespaces and links (sets NS_CLIENT NS_RELAY NS_SERVER)
#   netns_down             delete them (idempotent)
#   in_ns NS CMD...        run CMD inside NS
#   wait_port NS HOST PORT TIMEOUT
#                          poll until a TCP connect from NS to HOST:PORT succeeds,
#                          or fail after TIMEOUT seconds
#   wait_until TIMEOUT DESC CMD...
#                          poll CMD until it succeeds, or fail after TIMEOUT seconds
#   spawn NS LOG CMD...    start CMD in NS in the background; its PID is appended
#                          to NETNS_PIDS (killed by netns_kill) and left in SPAWNED
#   netns_kill             end the processes started by spawn, by PID
#   netns_require_root     exit 2 (or 0 with SKIP_OK=1) unless we can create namespaces
#
# Callers own the trap:   trap cleanup EXIT; cleanup() { netns_kill; netns_down; }

# Addresses. 10.77.0.0/24 is the client link, 10.77.1.0/24 the server link.
: "${CLIENT_IP:=10.77.0.2}"
: "${RELAY_CIP:=10.77.0.1}"
: "${RELAY_SIP:=10.77.1.1}"
: "${SERVER_IP:=10.77.1.2}"
: "${RELAY_IP:=$RELAY_SIP}"

NETNS_TAG="${NETNS_TAG:-$$}"
# Prefixes of the namespaces' and interfaces' names (a caller sharing the
# machine may want its own).
NETNS_PREFIX="${NETNS_PREFIX:-ock}"
NETNS_IFPREFIX="${NETNS_IFPREFIX:-v}"
NS_CLIENT="$NETNS_PREFIX-c-$NETNS_TAG"
NS_RELAY="$NETNS_PREFIX-r-$NETNS_TAG"
NS_SERVER="$NETNS_PREFIX-s-$NETNS_TAG"
NETNS_PIDS=()
NETNS_CREATED=()

netns_log() { printf '[netns] %s\n' "$*" >&2; }

# netns_require_root exits unless this shell can create namespaces: 2, or 0
# with a one-line skip message when SKIP_OK=1.
netns_require_root() {
	local why=""
	if [[ $EUID -ne 0 ]]; then
		why="needs root"
	elif ! command -v ip >/dev/null; then
		why="needs ip (iproute2)"
	fi
	if [[ -n $why ]]; then
		if [[ ${SKIP_OK:-0} == 1 ]]; then
			echo "SKIP: ${0##*/} $why (network namespaces)"
			exit 0
		fi
		echo "${0##*/}: $why (network namespaces); set SKIP_OK=1 to skip" >&2
		exit 2
	fi
}

in_ns() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

netns_up() {
	local ns
	for ns in "$NS_CLIENT" "$NS_RELAY" "$NS_SERVER"; do
		ip netns add "$ns" || return 1
		NETNS_CREATED+=("$ns")
		in_ns "$ns" ip link set lo up || return 1
	done
	# Interface names are at most 15 bytes: keep the tag short.
	local t=${NETNS_TAG: -6} i=${NETNS_IFPREFIX:0:4}
	ip link add "${i}c$t" netns "$NS_CLIENT" type veth peer name "${i}rc$t" netns "$NS_RELAY" || return 1
	ip link add "${i}s$t" netns "$NS_SERVER" type veth peer name "${i}rs$t" netns "$NS_RELAY" || return 1
	in_ns "$NS_CLIENT" ip addr add "$CLIENT_IP/24" dev "${i}c$t"
	in_ns "$NS_RELAY" ip addr add "$RELAY_CIP/24" dev "${i}rc$t"
	in_ns "$NS_RELAY" ip addr add "$RELAY_SIP/24" dev "${i}rs$t"
	in_ns "$NS_SERVER" ip addr add "$SERVER_IP/24" dev "${i}s$t"
	in_ns "$NS_CLIENT" ip link set "${i}c$t" up
	in_ns "$NS_RELAY" ip link set "${i}rc$t" up
	in_ns "$NS_RELAY" ip link set "${i}rs$t" up
	in_ns "$NS_SERVER" ip link set "${i}s$t" up
	in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=0
	# The relay's other address is local to it: reachable without forwarding.
	in_ns "$NS_CLIENT" ip route add "$RELAY_SIP/32" via "$RELAY_CIP" || return 1
	in_ns "$NS_SERVER" ip route add "$RELAY_CIP/32" via "$RELAY_SIP" || return 1
	NETNS_IF_CLIENT="${i}c$t" NETNS_IF_SERVER="${i}s$t"
	NETNS_IF_RELAY_C="${i}rc$t" NETNS_IF_RELAY_S="${i}rs$t"

	# Each end reaches the relay ...
	wait_until 5 "client reaches relay" in_ns "$NS_CLIENT" ping -c1 -W1 -q "$RELAY_CIP" >/dev/null || return 1
	wait_until 5 "server reaches relay" in_ns "$NS_SERVER" ping -c1 -W1 -q "$RELAY_SIP" >/dev/null || return 1
	wait_until 5 "client reaches relay address $RELAY_IP" in_ns "$NS_CLIENT" ping -c1 -W1 -q "$RELAY_IP" >/dev/null || return 1
	# ... and not each other.
	if in_ns "$NS_CLIENT" ping -c1 -W1 -q "$SERVER_IP" >/dev/null 2>&1; then
		netns_log "client can ping the server: the namespaces are not isolated"
		return 1
	fi
	if in_ns "$NS_SERVER" ping -c1 -W1 -q "$CLIENT_IP" >/dev/null 2>&1; then
		netns_log "server can ping the client: the namespaces are not isolated"
		return 1
	fi
	if in_ns "$NS_CLIENT" timeout 2 bash -c "exec 3<>/dev/tcp/$SERVER_IP/22" 2>/dev/null; then
		netns_log "client can connect to the server: the namespaces are not isolated"
		return 1
	fi
	netns_log "up: $NS_CLIENT($CLIENT_IP) <-> $NS_RELAY($RELAY_CIP,$RELAY_SIP) <-> $NS_SERVER($SERVER_IP); relay at $RELAY_IP; client <-> server: unreachable (checked)"
}

netns_down() {
	local ns
	for ns in "${NETNS_CREATED[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
	done
	NETNS_CREATED=()
}

# spawn NS LOG CMD... runs CMD in NS in the background, output to LOG.
spawn() {
	local ns=$1 log=$2
	shift 2
	ip netns exec "$ns" "$@" >"$log" 2>&1 &
	SPAWNED=$!
	NETNS_PIDS+=("$SPAWNED")
}

# netns_kill ends the processes started by spawn: TERM, then KILL after 3 s.
netns_kill() {
	local pid deadline
	for pid in "${NETNS_PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	deadline=$((SECONDS + 3))
	for pid in "${NETNS_PIDS[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
			sleep 0.05
		done
		kill -9 "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	NETNS_PIDS=()
}

# wait_until TIMEOUT DESC CMD... polls CMD every 50 ms.
wait_until() {
	local timeout=$1 desc=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			netns_log "timeout after ${timeout}s: $desc"
			return 1
		fi
		sleep 0.05
	done
}

_connect_once() {
	ip netns exec "$1" timeout 1 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

# wait_port NS HOST PORT TIMEOUT: a TCP connect from NS to HOST:PORT succeeds.
wait_port() {
	wait_until "$4" "$1 -> $2:$3 accepting" _connect_once "$1" "$2" "$3"
}

# wait_listen NS PORT TIMEOUT: something listens on TCP PORT in NS (no
# connection is made, for servers that dislike probes).
wait_listen() {
	wait_until "$3" "$1 listening on :$2" _listening "$1" "$2"
}

_listening() {
	[[ -n $(ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null) ]]
}
