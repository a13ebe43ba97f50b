#!/usr/bin/env bash
# bench.sh: side-by-side benchmarks of ways to reach a server through a relay,
# across three network namespaces (scripts/netns.sh). Entry point of `make bench`.
#
# Paths, measured in one run and interleaved (round 1: A B C ..., round 2: A B C ...):
#   direct  client in the relay ns -> server veth address (one hop, no relay process)
#   socat   plain TCP relay (socat -b 128K, fork per connection) in the relay ns
#   chain   three plain socat hops, client ns -> relay ns -> server ns: our topology (and ssh -J's:
#           a process at each end and one at the relay, four TCP connections) with no crypto
#           and no framing, the floor any sidecar design reaches on this machine
#   ssh     ssh -J relay -L ... server, aes128-gcm@openssh.com, sshd in relay and server ns
#   wg      wireguard-go client <-> server, the relay ns routes their UDP (and nothing else)
#   ockam   our seed demo: inlet (client ns) -> secure channel -> relay node -> outlet (server ns)
#   tun     our TUN path: client_sidecar's TUN + `tun map` (skipped when `ockam tun` is missing)
#
# UDP (direct, wg and tun, the paths that carry it): iperf3 -u at a fixed rate (--udp-rate;
# achieved rate, loss, jitter) and 64-byte datagram round trips (p50/p99, lost).
#
# Measures per path and round: iperf3 1 flow and 8 flows, 64-byte request/response
# on one connection (p50/p99), fresh connection per request (p50/p99), wrk with 32
# connections (and the CPU seconds per million requests of the path's processes), CPU
# s/GB of the path's processes (from the 1-flow run), PSS per idle
# flow with --idle-flows flows open.
#
# Output: bench/results/<stamp>-<mode>.json (raw samples + medians) and .svg (chart),
# docs/benchmarks.md (tables). Exit status: 0 all ran, 1 a measure or a path failed,
# 2 cannot run here (not root, tools missing; SKIP_OK=1 turns "not root" into exit 0).
set -uo pipefail

usage() {
	cat <<EOF
usage: ${0##*/} [--quick] [--rounds N] [--paths LIST] [--idle-flows N] [--ockam BIN | --ockam-rev REV]
                [--results DIR] [--docs FILE|-] [--keep] [--wan DELAY] [--wan-line packet|stream] [--wan-only]
                [--loss PCT] [--udp-rate RATE]

  --quick         brief measures, a smoke test (under 3 minutes)
  --rounds N      rounds of every path, interleaved (default 2, at least 2 is advised)
  --paths LIST    comma-separated subset of: direct,socat,chain,ssh,wg,ockam,tun (default all)
  --idle-flows N  idle flows for the memory measure, 0 to skip (default 10000, quick 500;
                  socat, which forks per flow, gets a tenth)
  --ockam BIN     ockam binary to use (default: build ./cmd/ockam of the working tree,
                  or of HEAD when the working tree does not build)
  --ockam-rev REV build ./cmd/ockam of commit REV (git archive, the tree is not touched)
  --results DIR   where the raw JSON and the chart go (default bench/results)
  --docs FILE     Markdown page to write (default docs/benchmarks.md; - for none)
  --keep          keep the temp dir (logs) after the run
  --wan DELAY     also measure every path over an Internet-like path: DELAY (e.g. 25ms) added
                  each way on the relay's legs, half per leg, so the round trip grows by
                  2 x DELAY; rows "PATH@wan", beside LAN
  --wan-line L    how: packet (default) a packet line per leg (netbench wan, a TUN the relay
                  routes the WAN addresses through): every kernel TCP sees the RTT and the loss;
                  stream: split-TCP delay lines (netbench delay), an upper bound for TCP paths
  --wan-only      with --wan, measure only the @wan rows (the LAN paths are set up, not measured)
  --loss PCT      also measure one flow of each tunnel path with PCT% packet loss: on LAN rows
                  the relay's veth packets dropped both ways (nftables); on @wan rows (packet
                  line) PCT% of the packets of each leg's line, each way
  --udp-rate RATE the iperf3 -u rate of the UDP measures (default 100M; 0 skips them)
  (NETNS_PREFIX and NETNS_IFPREFIX name the namespaces and interfaces; default ock, v;
   BENCH_NODE_FLAGS adds flags to the sidecars' node create, e.g. --window-budget-mib 64;
   BENCH_PROFILE=DIR saves CPU profiles and /metrics of the ockam nodes during wrk and iperf, BENCH_WRK_D=S sets wrk's seconds)
EOF
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# shellcheck source=../scripts/netns.sh
. "$root/scripts/netns.sh"

mode=full rounds=2 want_paths=direct,socat,chain,ssh,wg,ockam,tun idle_flows="" ockam_bin="" ockam_rev=""
results_dir="$root/bench/results" docs="$root/docs/benchmarks.md"  keep=0 wan="" wan_line=packet wan_only=0 loss="" udp_rate=100M
while (($#)); do
	case $1 in
	--quick) mode=quick ;;
	--rounds) rounds=$2; shift ;;
	--paths) want_paths=$2; shift ;;
	--idle-flows) idle_flows=$2; shift ;;
	--ockam) ockam_bin=$2; shift ;;
	--ockam-rev) ockam_rev=$2; shift ;;
	--results) results_dir=$2; shift ;;
	--docs) docs=$2; shift ;;
	--keep) keep=1 ;;
	--wan) wan=$2; shift ;;
	--wan-line) wan_line=$2; shift ;;
	--wan-only) wan_only=1 ;;
	--loss) loss=$2; shift ;;
	--udp-rate) udp_rate=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

if [[ $mode == quick ]]; then
	T=2 RR_N=2000 CRR_N=200 WRK_D=${BENCH_WRK_D:-2}
	: "${idle_flows:=500}"
else
	T=10 RR_N=10000 CRR_N=1000 WRK_D=${BENCH_WRK_D:-10}
	: "${idle_flows:=10000}"
fi
idle_socat=$((idle_flows / 10))
# The WAN profile: DELAY each way end to end, DELAY/2 on each relay leg.
# Round trips cost 2 x DELAY: fewer of them, and no idle-flow measure (the
# same code as on the LAN).
if [[ -n $wan ]]; then
	[[ $wan =~ ^([0-9]+)ms$ ]] || { echo "--wan wants a delay in ms, e.g. 25ms" >&2; exit 2; }
	WAN_MS=${BASH_REMATCH[1]}
	WAN_FULL=${WAN_MS}ms
	WAN_HALF=$((WAN_MS * 500))us
	if [[ $mode == quick ]]; then WAN_RR_N=50 WAN_CRR_N=20; else WAN_RR_N=200 WAN_CRR_N=100; fi
fi
[[ $wan_line == @(packet|stream) ]] || { echo "--wan-line is packet or stream" >&2; exit 2; }
((!wan_only)) || [[ -n $wan ]] || { echo "--wan-only needs --wan" >&2; exit 2; }
[[ -z $loss || $loss =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "--loss wants a percentage, e.g. 1" >&2; exit 2; }
((rounds >= 1)) || { echo "--rounds must be at least 1" >&2; exit 2; }
[[ $udp_rate =~ ^[0-9]+[KMG]?$ ]] || { echo "--udp-rate wants an iperf3 rate, e.g. 100M (0: no UDP measures)" >&2; exit 2; }
[[ $udp_rate == 0 ]] && udp_rate=""
# The UDP payload: within wireguard's 1420-byte MTU (1392), so no path fragments.
UDP_LEN=1350

netns_require_root

missing=()
for t in iperf3 socat ssh sshd ssh-keygen wg wrk curl python3 ss go; do
	command -v "$t" >/dev/null || [[ -x /usr/sbin/$t ]] || missing+=("$t")
done
if ((${#missing[@]})); then
	echo "${0##*/}: missing tools: ${missing[*]}" >&2
	echo "  apt-get install -y iperf3 socat openssh-server openssh-client wireguard-tools wrk curl python3 iproute2" >&2
	exit 2
fi

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }

tmp=$(mktemp -d "/tmp/ockbench.$$.XXXX")
export OCKAM_HOME=$tmp/home
made_run_sshd=0

cleanup() {
	local rc=$?
	set +e
	if [[ -n $ockam_bin && -d $OCKAM_HOME ]]; then
		local l
		for l in "$OCKAM_HOME"/nodes/*/node.log; do
			[[ -f $l ]] && cp "$l" "$tmp/node-$(basename "$(dirname "$l")").log"
		done
		"$ockam_bin" node delete --all >/dev/null 2>&1
		local st pid
		for st in "$OCKAM_HOME"/nodes/*/state.json; do
			[[ -f $st ]] || continue
			pid=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$st")
			[[ -n $pid ]] && kill "$pid" 2>/dev/null
		done
	fi
	[[ -n ${hold_fd:-} ]] && exec {hold_fd}>&-
	netns_kill
	netns_down
	local w
	for w in "${wg_socks[@]}"; do rm -f /var/run/wireguard/"$w".sock; done
	((made_run_sshd)) && rmdir /run/sshd 2>/dev/null
	if ((keep)); then log "kept $tmp"; else rm -rf "$tmp"; fi
	exit "$rc"
}
wg_socks=()
trap cleanup EXIT
trap 'exit 130' INT TERM

ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- build

log "building netbench, ockam, wireguard-go"
export GOFLAGS=${GOFLAGS:--buildvcs=false}
(cd "$root" && go build -o "$tmp/netbench" ./bench/netbench) || exit 1
NB=$tmp/netbench
build_rev() { # build ./cmd/ockam of commit $1 into $ockam_bin
	mkdir -p "$tmp/src" && git -C "$root" archive "$1" | tar -x -C "$tmp/src" || return 1
	(cd "$tmp/src" && go build -o "$ockam_bin" ./cmd/ockam)
}
ockam_src="--ockam $ockam_bin"
if [[ -n $ockam_rev ]]; then
	ockam_bin=$tmp/ockam
	build_rev "$ockam_rev" || exit 1
	ockam_src="commit $(git -C "$root" rev-parse --short "$ockam_rev")"
elif [[ -z $ockam_bin ]]; then
	ockam_bin=$tmp/ockam
	ockam_src="working tree at $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"
	git -C "$root" diff --quiet HEAD -- 2>/dev/null || ockam_src="$ockam_src + uncommitted changes"
	if ! (cd "$root" && go build -o "$ockam_bin" ./cmd/ockam) 2>"$tmp/ockam-build.log"; then
		# Others may be mid-edit: fall back to the last commit.
		log "the working tree does not build ($(head -2 "$tmp/ockam-build.log" | tail -1)); building HEAD"
		build_rev HEAD || exit 1
		ockam_src="commit $(git -C "$root" rev-parse --short HEAD)"
	fi
fi
WG_VERSION=v0.0.0-20260522210424-ecfc5a8d5446
wg_bin=""
if [[ ,$want_paths, == *,wg,* ]]; then
	if (cd "$tmp" && GOBIN=$tmp GOFLAGS= go install "golang.zx2c4.com/wireguard@$WG_VERSION") >"$tmp/wg-build.log" 2>&1; then
		wg_bin=$tmp/wireguard
	else
		log "building wireguard-go failed: $(tail -1 "$tmp/wg-build.log")"
	fi
fi

# ---------------------------------------------------------------- topology and servers

netns_up || exit 1
samples=$tmp/samples.jsonl
: >"$samples"
failed=0

# Servers live in the server namespace on every address: 127.0.0.1 for the
# tunnels' far ends, SERVER_IP for direct and socat, 10.99.0.2 for wireguard.
P_IPERF=5201 P_ECHO=5300 P_HTTP=5400

start_iperf_server() {
	spawn "$NS_SERVER" "$tmp/iperf3-server.log" iperf3 -s -p "$P_IPERF"
	IPERF_PID=$SPAWNED
	wait_listen "$NS_SERVER" "$P_IPERF" 10
}
start_iperf_server || exit 1
spawn "$NS_SERVER" "$tmp/netbench-serve.log" "$NB" serve -echo "0.0.0.0:$P_ECHO" -uecho "0.0.0.0:$P_ECHO" -http "0.0.0.0:$P_HTTP"
wait_port "$NS_SERVER" 127.0.0.1 "$P_HTTP" 10 || exit 1
wait_port "$NS_SERVER" 127.0.0.1 "$P_ECHO" 10 || exit 1

# Each path sets: EP_NS EP_HOST EP_IPERF EP_ECHO EP_HTTP (where the client
# connects) and ROLES ("client=PID,.. relay=PID,.. server=PID,.."), the
# processes whose CPU and memory the path costs.
declare -A EP_NS EP_HOST EP_IPERF EP_ECHO EP_HTTP ROLES IDLE_N UDP_OK

json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/ }
	s=${s//$'\t'/ }
	s=${s//$'\r'/ }
	printf '"%s"' "$s"
}

# emit PATH ROUND MEASURE DATA BEFORE AFTER ERROR
emit() {
	printf '{"path":"%s","round":%d,"measure":"%s","data":%s,"before":%s,"after":%s,"error":%s}\n' \
		"$1" "$2" "$3" "${4:-null}" "${5:-null}" "${6:-null}" "$(json_str "${7:-}")" >>"$samples"
	if [[ -n ${7:-} ]]; then
		failed=1
		log "FAIL $1 round $2 $3: $7"
	fi
}

skip_path() {
	printf '{"path":"%s","round":0,"measure":"setup","skipped":%s}\n' "$1" "$(json_str "$2")" >>"$samples"
	log "SKIP $1: $2"
}

stat_roles() {
	[[ -n ${ROLES[$1]:-} ]] || { echo null; return; }
	# shellcheck disable=SC2086
	"$NB" stat ${ROLES[$1]} 2>/dev/null || echo null
}

# ---------------------------------------------------------------- paths

setup_direct() {
	EP_NS[direct]=$NS_RELAY EP_HOST[direct]=$SERVER_IP
	EP_IPERF[direct]=$P_IPERF EP_ECHO[direct]=$P_ECHO EP_HTTP[direct]=$P_HTTP
	ROLES[direct]="" IDLE_N[direct]=0 UDP_OK[direct]=1
}

# socat_hop NS LOG ADDR:PORT TARGET: a plain TCP relay in NS from ADDR:PORT
# to TARGET (host:port), forking per connection; its PID in SPAWNED.
socat_hop() {
	spawn "$1" "$2" socat -b 131072 "TCP-LISTEN:${3##*:},bind=${3%:*},reuseaddr,fork,backlog=4096,nodelay" "TCP:$4,nodelay"
}

setup_socat() {
	local pids=() p
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		socat_hop "$NS_RELAY" "$tmp/socat-$p.log" "$RELAY_CIP:$((p + 1000))" "$SERVER_IP:$p"
		pids+=("$SPAWNED")
	done
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		wait_listen "$NS_RELAY" $((p + 1000)) 10 || return 1
	done
	EP_NS[socat]=$NS_CLIENT EP_HOST[socat]=$RELAY_CIP
	EP_IPERF[socat]=$((P_IPERF + 1000)) EP_ECHO[socat]=$((P_ECHO + 1000)) EP_HTTP[socat]=$((P_HTTP + 1000))
	ROLES[socat]="relay=$(IFS=,; echo "${pids[*]}")" IDLE_N[socat]=$idle_socat
}

# chain: socat in each namespace, each forking per connection, so a
# connection crosses three processes and four TCP connections as through
# the sidecars (client ns 127.0.0.1 -> relay -> server ns -> 127.0.0.1).
setup_chain() {
	local c=() r=() s=() p q
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		q=$((p + 6000))
		socat_hop "$NS_SERVER" "$tmp/chain-s-$p.log" "$SERVER_IP:$q" "127.0.0.1:$p"
		s+=("$SPAWNED")
		socat_hop "$NS_RELAY" "$tmp/chain-r-$p.log" "$RELAY_CIP:$q" "$SERVER_IP:$q"
		r+=("$SPAWNED")
		socat_hop "$NS_CLIENT" "$tmp/chain-c-$p.log" "127.0.0.1:$q" "$RELAY_CIP:$q"
		c+=("$SPAWNED")
	done
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		wait_listen "$NS_SERVER" $((p + 6000)) 10 || return 1
		wait_listen "$NS_RELAY" $((p + 6000)) 10 || return 1
		wait_listen "$NS_CLIENT" $((p + 6000)) 10 || return 1
	done
	EP_NS[chain]=$NS_CLIENT EP_HOST[chain]=127.0.0.1
	EP_IPERF[chain]=$((P_IPERF + 6000)) EP_ECHO[chain]=$((P_ECHO + 6000)) EP_HTTP[chain]=$((P_HTTP + 6000))
	ROLES[chain]="client=$(IFS=,; echo "${c[*]}") relay=$(IFS=,; echo "${r[*]}") server=$(IFS=,; echo "${s[*]}")"
	IDLE_N[chain]=0
}

setup_ssh() {
	local d=$tmp/ssh
	mkdir -m 700 "$d" || return 1
	if [[ ! -d /run/sshd ]]; then
		mkdir -p -m 755 /run/sshd && made_run_sshd=1
	fi
	ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$d/id" || return 1
	cp "$d/id.pub" "$d/authorized_keys"
	local side addr
	for side in relay server; do
		[[ $side == relay ]] && addr=0.0.0.0 || addr=$SERVER_IP
		ssh-keygen -q -t ed25519 -N '' -C "bench-$side" -f "$d/host_$side" || return 1
		cat >"$d/sshd_$side.conf" <<-EOF
			Port 2222
			ListenAddress $addr
			HostKey $d/host_$side
			PidFile none
			AuthorizedKeysFile $d/authorized_keys
			StrictModes no
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			UsePAM no
			AllowTcpForwarding yes
			X11Forwarding no
			UseDNS no
			Ciphers aes128-gcm@openssh.com
			LogLevel ERROR
		EOF
	done
	printf '[%s]:2222 %s\n' "$RELAY_CIP" "$(cut -d' ' -f1,2 "$d/host_relay.pub")" >"$d/known_hosts"
	printf '[%s]:2222 %s\n' "$SERVER_IP" "$(cut -d' ' -f1,2 "$d/host_server.pub")" >>"$d/known_hosts"
	cat >"$d/ssh_config" <<-EOF
		Host relay
		  HostName $RELAY_CIP
		Host server
		  HostName $SERVER_IP
		Host *
		  Port 2222
		  User root
		  IdentityFile $d/id
		  IdentitiesOnly yes
		  UserKnownHostsFile $d/known_hosts
		  GlobalKnownHostsFile /dev/null
		  StrictHostKeyChecking yes
		  Ciphers aes128-gcm@openssh.com
		  Compression no
		  BatchMode yes
		  ControlMaster no
		  ControlPath none
		  ExitOnForwardFailure yes
		  LogLevel ERROR
	EOF
	spawn "$NS_RELAY" "$tmp/sshd-relay.log" /usr/sbin/sshd -D -e -f "$d/sshd_relay.conf"
	local sshd_relay=$SPAWNED
	spawn "$NS_SERVER" "$tmp/sshd-server.log" /usr/sbin/sshd -D -e -f "$d/sshd_server.conf"
	local sshd_server=$SPAWNED
	wait_port "$NS_CLIENT" "$RELAY_CIP" 2222 10 || return 1
	wait_port "$NS_RELAY" "$SERVER_IP" 2222 10 || return 1
	# The command of the brief, with one -L per server.
	local cmd=(ssh -F "$d/ssh_config" -c aes128-gcm@openssh.com -J relay -N
		-L "127.0.0.1:$((P_IPERF + 2000)):127.0.0.1:$P_IPERF"
		-L "127.0.0.1:$((P_ECHO + 2000)):127.0.0.1:$P_ECHO"
		-L "127.0.0.1:$((P_HTTP + 2000)):127.0.0.1:$P_HTTP" server)
	log "ssh: ${cmd[*]}"
	spawn "$NS_CLIENT" "$tmp/ssh-client.log" "${cmd[@]}"
	local ssh_pid=$SPAWNED
	if ! wait_port "$NS_CLIENT" 127.0.0.1 $((P_HTTP + 2000)) 15; then
		log "ssh log: $(tail -3 "$tmp/ssh-client.log")"
		return 1
	fi
	# The forward listens before the session is up: prove it end to end.
	wait_until 15 "HTTP through ssh" in_ns "$NS_CLIENT" curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$((P_HTTP + 2000))/" || return 1
	EP_NS[ssh]=$NS_CLIENT EP_HOST[ssh]=127.0.0.1
	EP_IPERF[ssh]=$((P_IPERF + 2000)) EP_ECHO[ssh]=$((P_ECHO + 2000)) EP_HTTP[ssh]=$((P_HTTP + 2000))
	ROLES[ssh]="client=$ssh_pid relay=$sshd_relay server=$sshd_server" IDLE_N[ssh]=$idle_flows
}

WG_PORT=51820 WG_CIP=10.99.0.1 WG_SIP=10.99.0.2
# wg_pair TAG PORT CIP SIP CLIENT_ENDPOINT: a wireguard-go interface in the
# client ns and one in the server ns (names ending in TAG, UDP port PORT,
# addresses CIP and SIP); the client sends to CLIENT_ENDPOINT, the server
# answers wherever the client's packets came from (wireguard roaming).
# Sets WG_PIDS.
wg_pair() {
	local tag=$1 port=$2 cip=$3 sip=$4 ep=$5 d=$tmp/wg$1 t=${NETNS_TAG: -6} c s
	mkdir -m 700 "$d"
	c=wgc$tag$t s=wgs$tag$t # distinct names: the UAPI sockets share /var/run/wireguard
	[[ ${NETNS_PREFIX:-ock} != ock ]] && c=${NETNS_PREFIX}gc$tag$t s=${NETNS_PREFIX}gs$tag$t
	wg_socks+=("$c" "$s")
	wg genkey >"$d/c.key" && wg pubkey <"$d/c.key" >"$d/c.pub" || return 1
	wg genkey >"$d/s.key" && wg pubkey <"$d/s.key" >"$d/s.pub" || return 1
	spawn "$NS_CLIENT" "$tmp/wg$tag-client.log" env WG_PROCESS_FOREGROUND=1 "$wg_bin" -f "$c"
	local pc=$SPAWNED
	spawn "$NS_SERVER" "$tmp/wg$tag-server.log" env WG_PROCESS_FOREGROUND=1 "$wg_bin" -f "$s"
	local ps=$SPAWNED
	wait_until 10 "wireguard-go client socket" test -S "/var/run/wireguard/$c.sock" || return 1
	wait_until 10 "wireguard-go server socket" test -S "/var/run/wireguard/$s.sock" || return 1
	in_ns "$NS_CLIENT" wg set "$c" private-key "$d/c.key" listen-port "$port" \
		peer "$(cat "$d/s.pub")" endpoint "$ep" allowed-ips "$sip/32" || return 1
	in_ns "$NS_SERVER" wg set "$s" private-key "$d/s.key" listen-port "$port" \
		peer "$(cat "$d/c.pub")" allowed-ips "$cip/32" || return 1
	in_ns "$NS_CLIENT" ip addr add "$cip/24" dev "$c" || return 1
	in_ns "$NS_SERVER" ip addr add "$sip/24" dev "$s" || return 1
	in_ns "$NS_CLIENT" ip link set "$c" mtu 1420 up || return 1
	in_ns "$NS_SERVER" ip link set "$s" mtu 1420 up || return 1
	wait_until 10 "ping through wireguard" in_ns "$NS_CLIENT" ping -c1 -W1 -q "$sip" >/dev/null || return 1
	WG_PIDS="client=$pc server=$ps"
}

setup_wg() {
	[[ -n $wg_bin ]] || { echo "wireguard-go did not build (see $tmp/wg-build.log)"; return 1; }
	# The relay routes the wireguard UDP and nothing else: policy rules give
	# each end a route to the other's veth address for UDP to port 51820 only.
	in_ns "$NS_RELAY" sysctl -qw net.ipv4.ip_forward=1
	in_ns "$NS_CLIENT" ip route add "$SERVER_IP/32" via "$RELAY_CIP" table 177 || return 1
	in_ns "$NS_CLIENT" ip rule add to "$SERVER_IP/32" ipproto udp dport $WG_PORT table 177 || return 1
	in_ns "$NS_SERVER" ip route add "$CLIENT_IP/32" via "$RELAY_SIP" table 177 || return 1
	in_ns "$NS_SERVER" ip rule add to "$CLIENT_IP/32" ipproto udp dport $WG_PORT table 177 || return 1
	if in_ns "$NS_CLIENT" timeout 2 bash -c "exec 3<>/dev/tcp/$SERVER_IP/$P_HTTP" 2>/dev/null; then
		echo "client reaches the server's veth over TCP: the relay routes more than wireguard"
		return 1
	fi
	wg_pair "" $WG_PORT $WG_CIP $WG_SIP "$SERVER_IP:$WG_PORT" || return 1
	EP_NS[wg]=$NS_CLIENT EP_HOST[wg]=$WG_SIP
	EP_IPERF[wg]=$P_IPERF EP_ECHO[wg]=$P_ECHO EP_HTTP[wg]=$P_HTTP
	ROLES[wg]=$WG_PIDS IDLE_N[wg]=$idle_flows UDP_OK[wg]=1
}

# wg@wan: a second wireguard pair whose UDP goes through a packet delay line
# in the relay ns (netbench delay -udp, the full DELAY each way), so its
# round trip grows by 2 x DELAY like every other @wan path.
WG_WAN_PORT=51821 WG_WAN_CIP=10.98.0.1 WG_WAN_SIP=10.98.0.2
setup_wg_wan_stream() {
	[[ -n $wg_bin ]] || { echo "wireguard-go did not build (see $tmp/wg-build.log)"; return 1; }
	spawn "$NS_RELAY" "$tmp/delay-wg-wan.log" "$NB" delay -udp -listen "$RELAY_CIP:$WG_WAN_PORT" \
		-to "$SERVER_IP:$WG_WAN_PORT" -delay "$WAN_FULL"
	local dl=$SPAWNED
	wg_pair w $WG_WAN_PORT $WG_WAN_CIP $WG_WAN_SIP "$RELAY_CIP:$WG_WAN_PORT" || return 1
	EP_NS[wg@wan]=$NS_CLIENT EP_HOST[wg@wan]=$WG_WAN_SIP
	EP_IPERF[wg@wan]=$P_IPERF EP_ECHO[wg@wan]=$P_ECHO EP_HTTP[wg@wan]=$P_HTTP
	ROLES[wg@wan]="$WG_PIDS relay=$dl" IDLE_N[wg@wan]=0
}

# ockam runs ockam ARGS in namespace NS, printing the command and its output.
ockam() {
	local ns=$1
	shift
	local where=client
	[[ $ns == "$NS_RELAY" ]] && where=relay
	[[ $ns == "$NS_SERVER" ]] && where=server
	printf '  [%s] $ ockam %s\n' "$where" "$*" >&2
	in_ns "$ns" "$ockam_bin" "$@"
}

node_pid() { sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$OCKAM_HOME/nodes/$1/state.json"; }

# ockam_nodes starts the seed's three nodes once, for the inlet and TUN paths:
# relay in the relay ns, server_sidecar registered at it, client_sidecar.
ockam_nodes_up=0
ockam_nodes() {
	((ockam_nodes_up)) && return 0
	mkdir -p "$OCKAM_HOME"
	ockam "$NS_RELAY" node create relay --tcp-listener-address "$RELAY_IP:4000" >&2 || return 1
	wait_port "$NS_SERVER" "$RELAY_IP" 4000 10 || return 1
	wait_port "$NS_CLIENT" "$RELAY_IP" 4000 10 || return 1
	# shellcheck disable=SC2086 # BENCH_NODE_FLAGS is a list of flags
	ockam "$NS_SERVER" node create server_sidecar ${BENCH_NODE_FLAGS:-} >&2 || return 1
	ockam "$NS_SERVER" relay create server_sidecar --at "/ip4/$RELAY_IP/tcp/4000" --to /node/server_sidecar >&2 || return 1
	# shellcheck disable=SC2086
	ockam "$NS_CLIENT" node create client_sidecar ${BENCH_NODE_FLAGS:-} >&2 || return 1
	ockam_nodes_up=1
}

ockam_roles() {
	echo "client=$(node_pid client_sidecar) relay=$(node_pid relay) server=$(node_pid server_sidecar)"
}

SC_ROUTE=/ip4/$RELAY_IP/tcp/4000/service/forward_to_server_sidecar/service/api

setup_ockam() {
	ockam_nodes || return 1
	local svc port
	for svc in iperf:$P_IPERF echo:$P_ECHO http:$P_HTTP; do
		ockam "$NS_SERVER" tcp-outlet create --at /node/server_sidecar --from "/service/outlet_${svc%%:*}" --to "127.0.0.1:${svc#*:}" >&2 || return 1
	done
	for svc in iperf:$P_IPERF echo:$P_ECHO http:$P_HTTP; do
		port=$((${svc#*:} + 3000))
		# The seed's pipe: one secure channel per inlet.
		ockam "$NS_CLIENT" secure-channel create --from /node/client_sidecar --to "$SC_ROUTE" |
			ockam "$NS_CLIENT" tcp-inlet create --at /node/client_sidecar --from "127.0.0.1:$port" \
				--to "-/service/outlet_${svc%%:*}" >&2 || return 1
		wait_port "$NS_CLIENT" 127.0.0.1 "$port" 10 || return 1
	done
	wait_until 15 "HTTP through ockam" in_ns "$NS_CLIENT" curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$((P_HTTP + 3000))/" || return 1
	EP_NS[ockam]=$NS_CLIENT EP_HOST[ockam]=127.0.0.1
	EP_IPERF[ockam]=$((P_IPERF + 3000)) EP_ECHO[ockam]=$((P_ECHO + 3000)) EP_HTTP[ockam]=$((P_HTTP + 3000))
	ROLES[ockam]=$(ockam_roles) IDLE_N[ockam]=$idle_flows
}

setup_tun() {
	# ================= HOOK: ockam TUN path =================
	# The client sidecar owns a TUN in the client ns; `tun map` gives the
	# server's outlet a virtual address; the benchmark clients connect to that
	# address on the servers' own ports. Skipped (exit status 3) when this
	# ockam has no `tun` command.
	if ! "$ockam_bin" tun --help >/dev/null 2>&1; then
		echo "\`ockam tun\` does not exist in this build"
		return 3
	fi
	ockam_nodes || return 1
	# The outlet carries UDP too where this build can (tcp-outlet --udp).
	local udp=()
	"$ockam_bin" tcp-outlet create --help 2>&1 | grep -q -- --udp && udp=(--udp)
	ockam "$NS_SERVER" tcp-outlet create --at /node/server_sidecar --from /service/outlet_tun \
		--to 127.0.0.1 --ports "$P_IPERF,$P_ECHO,$P_HTTP" "${udp[@]}" >&2 || return 1
	# --udp-rate well above the UDP measures' rate: they measure the path, not the default shaping.
	local rate=()
	"$ockam_bin" tun create --help 2>&1 | grep -q -- --udp-rate && rate=(--udp-rate 1G)
	ockam "$NS_CLIENT" tun create --at /node/client_sidecar --name "${NETNS_PREFIX:-ock}t${NETNS_TAG: -6}" "${rate[@]}" >&2 || return 1
	local addr
	addr=$(ockam "$NS_CLIENT" secure-channel create --from /node/client_sidecar --to "$SC_ROUTE" |
		ockam "$NS_CLIENT" tun map --at /node/client_sidecar --to -/service/outlet_tun --name bench.ockam) || return 1
	addr=${addr%%[[:space:]]*}
	echo "  tun map: $addr" >&2
	[[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "tun map printed '$addr', not an IPv4 address"; return 1; }
	wait_until 15 "HTTP through ockam tun" in_ns "$NS_CLIENT" curl -sf -o /dev/null --max-time 2 "http://$addr:$P_HTTP/" || return 1
	EP_NS[tun]=$NS_CLIENT EP_HOST[tun]=$addr
	EP_IPERF[tun]=$P_IPERF EP_ECHO[tun]=$P_ECHO EP_HTTP[tun]=$P_HTTP
	ROLES[tun]=$(ockam_roles) IDLE_N[tun]=$idle_flows
	((${#udp[@]})) && UDP_OK[tun]=1
	# ================= END HOOK =================
}

# ---------------------------------------------------------------- WAN, stream lines (--wan-line stream)

# delay NS LISTEN TO DELAY starts a delay line (bench/netbench/delay.go).
delay() {
	spawn "$1" "$tmp/delay-${2//[:\/]/_}.log" "$NB" delay -listen "$2" -to "$3" -delay "$4"
	local port=${2##*:}
	wait_listen "$1" "$port" 10
}

# direct@wan: the client in the relay ns, one delay line (the full DELAY
# each way) in front of the servers.
setup_direct_wan_stream() {
	local p
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		delay "$NS_RELAY" "127.0.0.1:$((p + 4000))" "$SERVER_IP:$p" "$WAN_FULL" || return 1
	done
	EP_NS[direct@wan]=$NS_RELAY EP_HOST[direct@wan]=127.0.0.1
	EP_IPERF[direct@wan]=$((P_IPERF + 4000)) EP_ECHO[direct@wan]=$((P_ECHO + 4000)) EP_HTTP[direct@wan]=$((P_HTTP + 4000))
	ROLES[direct@wan]="" IDLE_N[direct@wan]=0
}

# socat@wan: client -> delay -> socat -> delay -> server.
setup_socat_wan_stream() {
	local pids=() p
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		delay "$NS_RELAY" "$RELAY_CIP:$((p + 5000))" "127.0.0.1:$((p + 5000))" "$WAN_HALF" || return 1
		delay "$NS_RELAY" "127.0.0.1:$((p + 5500))" "$SERVER_IP:$p" "$WAN_HALF" || return 1
		socat_hop "$NS_RELAY" "$tmp/socat-wan-$p.log" "127.0.0.1:$((p + 5000))" "127.0.0.1:$((p + 5500))"
		pids+=("$SPAWNED")
		wait_listen "$NS_RELAY" $((p + 5000)) 10 || return 1
	done
	socat_wan_endpoints "$RELAY_CIP" "${pids[@]}"
}

# socat_wan_endpoints HOST PID...: socat@wan's endpoints on HOST, its relay processes.
socat_wan_endpoints() {
	local host=$1
	shift
	EP_NS[socat@wan]=$NS_CLIENT EP_HOST[socat@wan]=$host
	EP_IPERF[socat@wan]=$((P_IPERF + 5000)) EP_ECHO[socat@wan]=$((P_ECHO + 5000)) EP_HTTP[socat@wan]=$((P_HTTP + 5000))
	ROLES[socat@wan]="relay=$(IFS=,; echo "$*")" IDLE_N[socat@wan]=0
}

# ssh@wan: the same sshds; the client reaches the relay's through a delay
# line, and the relay's sshd reaches the server's through another.
setup_ssh_wan_stream() {
	local d=$tmp/ssh
	[[ -f $d/ssh_config ]] || { echo "needs the ssh path"; return 1; }
	delay "$NS_RELAY" "$RELAY_CIP:2322" "127.0.0.1:2222" "$WAN_HALF" || return 1
	delay "$NS_RELAY" "127.0.0.1:2324" "$SERVER_IP:2222" "$WAN_HALF" || return 1
	{
		printf 'Host relaywan\n  HostName %s\n  Port 2322\nHost serverwan\n  HostName 127.0.0.1\n  Port 2324\n' "$RELAY_CIP"
		cat "$d/ssh_config"
	} >"$d/ssh_config_wan"
	printf '[%s]:2322 %s\n' "$RELAY_CIP" "$(cut -d' ' -f1,2 "$d/host_relay.pub")" >>"$d/known_hosts"
	printf '[127.0.0.1]:2324 %s\n' "$(cut -d' ' -f1,2 "$d/host_server.pub")" >>"$d/known_hosts"
	ssh_wan_client || return 1
	ROLES[ssh@wan]="client=$SSH_WAN_PID ${ROLES[ssh]#client=* }" IDLE_N[ssh@wan]=0
}

# ssh_wan_client: `ssh -J relaywan serverwan` of ssh_config_wan, with the
# forwards of ssh@wan, proven end to end. Sets SSH_WAN_PID and the endpoints.
ssh_wan_client() {
	local d=$tmp/ssh
	local cmd=(ssh -F "$d/ssh_config_wan" -c aes128-gcm@openssh.com -J relaywan -N
		-L "127.0.0.1:$((P_IPERF + 7000)):127.0.0.1:$P_IPERF"
		-L "127.0.0.1:$((P_ECHO + 7000)):127.0.0.1:$P_ECHO"
		-L "127.0.0.1:$((P_HTTP + 7000)):127.0.0.1:$P_HTTP" serverwan)
	spawn "$NS_CLIENT" "$tmp/ssh-client-wan.log" "${cmd[@]}"
	SSH_WAN_PID=$SPAWNED
	wait_port "$NS_CLIENT" 127.0.0.1 $((P_HTTP + 7000)) 15 || { tail -3 "$tmp/ssh-client-wan.log"; return 1; }
	wait_until 15 "HTTP through ssh@wan" in_ns "$NS_CLIENT" curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$((P_HTTP + 7000))/" || return 1
	EP_NS[ssh@wan]=$NS_CLIENT EP_HOST[ssh@wan]=127.0.0.1
	EP_IPERF[ssh@wan]=$((P_IPERF + 7000)) EP_ECHO[ssh@wan]=$((P_ECHO + 7000)) EP_HTTP[ssh@wan]=$((P_HTTP + 7000))
}

# ockam@wan: the same nodes and outlets; the server sidecar registers a
# second relay name and the client opens a second channel, both through a
# delay line in front of the relay node's listener.
ockam_wan_up=0
ockam_wan_stream() {
	((ockam_wan_up)) && return 0
	ockam_nodes || return 1
	delay "$NS_RELAY" "$RELAY_IP:4100" "$RELAY_IP:4000" "$WAN_HALF" || return 1
	ockam "$NS_SERVER" relay create server_wan --at "/ip4/$RELAY_IP/tcp/4100" --to /node/server_sidecar >&2 || return 1
	ockam_wan_up=1
}

_ockam_wan_inlets() {
	[[ -n ${EP_NS[ockam]:-} ]] || { echo "needs the ockam path"; return 1; }
	ockam_wan || return 1
	local svc port
	for svc in iperf:$P_IPERF echo:$P_ECHO http:$P_HTTP; do
		port=$((${svc#*:} + 8000))
		ockam "$NS_CLIENT" secure-channel create --from /node/client_sidecar --to "$SC_ROUTE_WAN" |
			ockam "$NS_CLIENT" tcp-inlet create --at /node/client_sidecar --from "127.0.0.1:$port" \
				--to "-/service/outlet_${svc%%:*}" >&2 || return 1
		wait_port "$NS_CLIENT" 127.0.0.1 "$port" 10 || return 1
	done
	wait_until 15 "HTTP through ockam@wan" in_ns "$NS_CLIENT" curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$((P_HTTP + 8000))/" || return 1
	EP_NS[ockam@wan]=$NS_CLIENT EP_HOST[ockam@wan]=127.0.0.1
	EP_IPERF[ockam@wan]=$((P_IPERF + 8000)) EP_ECHO[ockam@wan]=$((P_ECHO + 8000)) EP_HTTP[ockam@wan]=$((P_HTTP + 8000))
	ROLES[ockam@wan]=$(ockam_roles) IDLE_N[ockam@wan]=0
}

setup_tun_wan_stream() {
	[[ -n ${EP_NS[tun]:-} ]] || { echo "needs the tun path"; return 3; }
	ockam_wan || return 1
	local addr
	addr=$(ockam "$NS_CLIENT" secure-channel create --from /node/client_sidecar --to "$SC_ROUTE_WAN" |
		ockam "$NS_CLIENT" tun map --at /node/client_sidecar --to -/service/outlet_tun --name benchwan.ockam) || return 1
	addr=${addr%%[[:space:]]*}
	[[ $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "tun map printed '$addr', not an IPv4 address"; return 1; }
	wait_until 15 "HTTP through ockam tun@wan" in_ns "$NS_CLIENT" curl -sf -o /dev/null --max-time 2 "http://$addr:$P_HTTP/" || return 1
	EP_NS[tun@wan]=$NS_CLIENT EP_HOST[tun@wan]=$addr
	EP_IPERF[tun@wan]=$P_IPERF EP_ECHO[tun@wan]=$P_ECHO EP_HTTP[tun@wan]=$P_HTTP
	ROLES[tun@wan]=$(ockam_roles) IDLE_N[tun@wan]=0
}


# ---------------------------------------------------------------- WAN, packet line (default)
#
# Two packet lines (netbench wan, bench/netbench/wan.go) in the relay ns, one
# per relay leg, DELAY/2 each: TUN "A" on the client leg, TUN "B" on the
# server leg. Policy rules (above the `local` rule) send them the packets of
# the WAN addresses only, so LAN paths and WAN paths share the namespaces
# but not the delay:
#   W_RC  the relay, client side (secondary on the client veth): socat, sshd
#   W_RS  the relay, server side (secondary on the server veth): relay node
#   W_S   the server (secondary on its veth): the relay's connections to the
#         server, and direct@wan and wg@wan, which the relay forwards
# A packet from the client crosses A (and B too if forwarded to W_S); one from
# the server crosses B (and A if forwarded to the client); the relay's own
# packets cross the leg they leave by. Every kernel TCP on a WAN path sees
# the full round trip: 2 x DELAY end to end, DELAY to the relay.
W_RC=10.77.0.11 W_RS=10.77.1.11 W_S=10.77.1.12
WAN_LINE_PIDS=() WAN_LINE_SOCKS=()

# wan_line_up starts the lines and the rules, once, and checks the RTT.
wan_line_up_done=0
wan_line_up() {
	((wan_line_up_done)) && return 0
	local t=${NETNS_TAG: -6} i=${NETNS_IFPREFIX:0:4} leg la lb rn=(in_ns "$NS_RELAY")
	la=${i}la$t lb=${i}lb$t
	for leg in "$la" "$lb"; do
		spawn "$NS_RELAY" "$tmp/wan-$leg.log" "$NB" wan -tun "$leg" -delay "$WAN_HALF" -control "$tmp/wan-$leg.sock"
		WAN_LINE_PIDS+=("$SPAWNED") WAN_LINE_SOCKS+=("$tmp/wan-$leg.sock")
	done
	for leg in "$la" "$lb"; do
		wait_until 10 "packet line $leg" test -S "$tmp/wan-$leg.sock" || return 1
	done
	local rc=$NETNS_IF_RELAY_C rs=$NETNS_IF_RELAY_S k
	# Early demux attaches a local socket to a packet before its route is
	# known, and the kernel drops a forwarded packet that has one: off, in
	# the relay ns only (it saves a route lookup per packet, no more).
	"${rn[@]}" sysctl -qw net.ipv4.tcp_early_demux=0 net.ipv4.udp_early_demux=0 || return 1
	for k in all "$rc" "$rs" "$la" "$lb"; do
		"${rn[@]}" sysctl -qw "net.ipv4.conf.$k.rp_filter=0" "net.ipv4.conf.$k.send_redirects=0" || return 1
	done
	for k in "$rc" "$rs" "$la" "$lb"; do
		"${rn[@]}" sysctl -qw "net.ipv4.conf.$k.forwarding=1" || return 1
	done
	for k in "$la" "$lb"; do
		# The relay's own packets come back from the TUN with its addresses.
		"${rn[@]}" sysctl -qw "net.ipv4.conf.$k.accept_local=1" "net.ipv6.conf.$k.disable_ipv6=1" || return 1
		"${rn[@]}" ip link set "$k" mtu 1500 txqueuelen 10000 up || return 1
	done
	for k in "$rc" "$rs"; do
		# ARP for a WAN address routes to a TUN, not to the relay: answer it.
		"${rn[@]}" sysctl -qw "net.ipv4.conf.$k.proxy_arp=1" "net.ipv4.neigh.$k.proxy_delay=0" || return 1
	done
	"${rn[@]}" ip addr add "$W_RC/24" dev "$rc" || return 1
	"${rn[@]}" ip addr add "$W_RS/24" dev "$rs" || return 1
	in_ns "$NS_SERVER" ip addr add "$W_S/24" dev "$NETNS_IF_SERVER" || return 1
	"${rn[@]}" ip route add default dev "$la" table 201 || return 1
	"${rn[@]}" ip route add default dev "$lb" src "$W_RS" table 202 || return 1
	local rules=(
		"iif $rc to $W_RC lookup 201" "iif $rc to $W_RS lookup 201" "iif $rc to $W_S lookup 201"
		"iif $la to $W_S lookup 202"
		"iif $rs to $W_RS lookup 202" "iif $rs from $W_S lookup 202"
		"iif $lb to $CLIENT_IP lookup 201"
		"iif lo from $W_RC to $CLIENT_IP lookup 201" "iif lo from $W_RS to $CLIENT_IP lookup 201"
		"iif lo from $W_RS to $SERVER_IP lookup 202" "iif lo to $W_S lookup 202"
	) pref=100 r
	for r in "${rules[@]}"; do
		# shellcheck disable=SC2086 # a rule is a list of words
		"${rn[@]}" ip rule add pref $((pref++)) $r || return 1
	done
	"${rn[@]}" ip rule add pref 1000 lookup local && "${rn[@]}" ip rule del pref 0 lookup local || return 1
	# The ends: the client reaches W_RS and W_S through the relay; the
	# server answers the client (forwarded paths) from W_S.
	in_ns "$NS_CLIENT" ip route add "$W_RS/32" via "$RELAY_CIP" || return 1
	in_ns "$NS_CLIENT" ip route add "$W_S/32" via "$RELAY_CIP" || return 1
	in_ns "$NS_SERVER" ip route add "$CLIENT_IP/32" via "$RELAY_SIP" src "$W_S" table 178 || return 1
	in_ns "$NS_SERVER" ip rule add from "$W_S" lookup 178 || return 1
	in_ns "$NS_SERVER" ip rule add to "$CLIENT_IP" ipproto udp dport $WG_WAN_PORT lookup 178 || return 1
	wan_line_up_done=1
	wan_line_check || return 1
	[[ -z $loss ]] || wan_line_loss_check
}

# wan_line_loss_check: with --loss, 1000 pings client -> server (each
# crosses both lines both ways, four chances to be dropped) and the lines'
# own count of drops, against what was asked.
WAN_LOSS_CHECK=""
wan_line_loss_check() {
	local before after got
	before=$(wan_line_stats)
	wan_line_loss "$loss" || return 1
	got=$(in_ns "$NS_CLIENT" ping -n -q -c 1000 -i 0.005 -W 1 "$W_S" 2>/dev/null | sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p')
	wan_line_loss 0 || return 1
	after=$(wan_line_stats)
	WAN_LOSS_CHECK=$(python3 - "$loss" "$got" "$before" "$after" <<-'PY'
		import json, sys
		p, got = float(sys.argv[1]) / 100, sys.argv[2]
		def counts(s):
		    d = [json.loads(l) for l in s.splitlines() if l.startswith('{"packets"')]
		    return sum(x["packets"] for x in d), sum(x["loss_drops"] for x in d)
		(p0, l0), (p1, l1) = counts(sys.argv[3]), counts(sys.argv[4])
		line = 100 * (l1 - l0) / max(1, p1 - p0)
		print(f"asked {100*p:g}% per leg each way; the lines dropped {line:.2f}% of {p1-p0} packets; "
		      f"ping client→server lost {got or '?'}% (expected {100*(1-(1-p)**4):.2f}%: four crossings)")
	PY
	)
	log "packet line: $WAN_LOSS_CHECK"
}

# wan_line_cost: what the lines carried and the CPU they used, per GB.
wan_line_cost() {
	((${#WAN_LINE_PIDS[@]})) || return 0
	wan_line_stats | python3 -c '
import json, sys
b = cpu = 0
for l in sys.stdin:
    d = json.loads(l)
    if "packets" in d:
        b += d["bytes"]
    else:
        cpu += sum(v["cpu_s"] for v in d.values()) if isinstance(d, dict) else 0
print(f"{b/1e9:.1f} GB through both lines, {cpu:.1f} CPU s, {cpu/max(b/1e9, 1e-9):.2f} CPU s/GB")'
}

# wan_line_check: ping through the lines (client -> relay crosses one leg
# each way, client -> server two), the medians against what was asked.
WAN_CHECK=""
wan_line_check() {
	local a b
	a=$(_ping_median "$W_RC" 20) b=$(_ping_median "$W_S" 20)
	WAN_CHECK="ping p50 client→relay $a ms (asked $WAN_MS), client→server $b ms (asked $((2 * WAN_MS)))"
	log "packet line: $WAN_CHECK"
	[[ -n $a && -n $b ]]
}

# _ping_median HOST N: the median RTT in ms of N pings from the client ns.
_ping_median() {
	in_ns "$NS_CLIENT" ping -n -c "$2" -i 0.05 -W 2 "$1" 2>/dev/null |
		sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]}'
}

# wan_line_loss PCT sets the loss of both lines (offloads off when > 0).
wan_line_loss() {
	local s p
	p=$(awk -v p="$1" 'BEGIN {printf "%g", p / 100}')
	for s in "${WAN_LINE_SOCKS[@]}"; do
		"$NB" wanctl -control "$s" loss "$p" >/dev/null || return 1
	done
}

# wan_line_offloads on|off: the lines' offloads, without loss (the baseline of
# a lossy measure, which the lines run without them).
wan_line_offloads() {
	local s
	for s in "${WAN_LINE_SOCKS[@]}"; do
		"$NB" wanctl -control "$s" offloads "$1" >/dev/null || return 1
	done
}

# wan_line_stats: counters of both lines and their CPU seconds, one line.
wan_line_stats() {
	local s
	for s in "${WAN_LINE_SOCKS[@]}"; do "$NB" wanctl -control "$s" stats; done
	"$NB" stat "line=$(IFS=,; echo "${WAN_LINE_PIDS[*]}")"
}

setup_direct_wan_packet() {
	wan_line_up || return 1
	EP_NS[direct@wan]=$NS_CLIENT EP_HOST[direct@wan]=$W_S
	EP_IPERF[direct@wan]=$P_IPERF EP_ECHO[direct@wan]=$P_ECHO EP_HTTP[direct@wan]=$P_HTTP
	ROLES[direct@wan]="" IDLE_N[direct@wan]=0
}

setup_socat_wan_packet() {
	wan_line_up || return 1
	local pids=() p
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		socat_hop "$NS_RELAY" "$tmp/socat-wan-$p.log" "$W_RC:$((p + 5000))" "$W_S:$p"
		pids+=("$SPAWNED")
	done
	for p in "$P_IPERF" "$P_ECHO" "$P_HTTP"; do
		wait_listen "$NS_RELAY" $((p + 5000)) 10 || return 1
	done
	socat_wan_endpoints "$W_RC" "${pids[@]}"
}

# ssh@wan: the relay's sshd on W_RC, and a second sshd of the server on W_S.
setup_ssh_wan_packet() {
	local d=$tmp/ssh
	[[ -f $d/ssh_config ]] || { echo "needs the ssh path"; return 1; }
	wan_line_up || return 1
	sed "s/^ListenAddress .*/ListenAddress $W_S/" "$d/sshd_server.conf" >"$d/sshd_serverwan.conf"
	spawn "$NS_SERVER" "$tmp/sshd-serverwan.log" /usr/sbin/sshd -D -e -f "$d/sshd_serverwan.conf"
	local sshd_server=$SPAWNED
	wait_port "$NS_RELAY" "$W_S" 2222 10 || return 1
	{
		printf 'Host relaywan\n  HostName %s\nHost serverwan\n  HostName %s\n' "$W_RC" "$W_S"
		cat "$d/ssh_config"
	} >"$d/ssh_config_wan"
	printf '[%s]:2222 %s\n' "$W_RC" "$(cut -d' ' -f1,2 "$d/host_relay.pub")" >>"$d/known_hosts"
	printf '[%s]:2222 %s\n' "$W_S" "$(cut -d' ' -f1,2 "$d/host_server.pub")" >>"$d/known_hosts"
	ssh_wan_client || return 1
	local relay=${ROLES[ssh]#*relay=}
	ROLES[ssh@wan]="client=$SSH_WAN_PID relay=${relay%% *} server=$sshd_server" IDLE_N[ssh@wan]=0
}

# wg@wan: a second wireguard pair whose UDP the relay forwards through both
# lines (client -> W_S, and back).
setup_wg_wan_packet() {
	[[ -n $wg_bin ]] || { echo "wireguard-go did not build (see $tmp/wg-build.log)"; return 1; }
	wan_line_up || return 1
	wg_pair w $WG_WAN_PORT $WG_WAN_CIP $WG_WAN_SIP "$W_S:$WG_WAN_PORT" || return 1
	EP_NS[wg@wan]=$NS_CLIENT EP_HOST[wg@wan]=$WG_WAN_SIP
	EP_IPERF[wg@wan]=$P_IPERF EP_ECHO[wg@wan]=$P_ECHO EP_HTTP[wg@wan]=$P_HTTP
	ROLES[wg@wan]=$WG_PIDS IDLE_N[wg@wan]=0
}

# ockam@wan and tun@wan: the same sidecars and outlets, a second relay node
# (the same binary) listening on W_RS, a relay name registered there.
ockam_wan_packet() {
	((ockam_wan_up)) && return 0
	ockam_nodes || return 1
	wan_line_up || return 1
	ockam "$NS_RELAY" node create relaywan --tcp-listener-address "$W_RS:4000" >&2 || return 1
	wait_port "$NS_SERVER" "$W_RS" 4000 10 || return 1
	ockam "$NS_SERVER" relay create server_wan --at "/ip4/$W_RS/tcp/4000" --to /node/server_sidecar >&2 || return 1
	ockam_wan_up=1
}

ockam_wan() { "ockam_wan_$wan_line"; }

# The @wan setups of the chosen line (--wan-line).
for _p in direct socat ssh wg ockam tun; do
	eval "setup_${_p}_wan() { setup_${_p}_wan_\$wan_line; }"
done
setup_ockam_wan_stream() { _ockam_wan_inlets; }
setup_ockam_wan_packet() {
	_ockam_wan_inlets || return 1
	ROLES[ockam@wan]="client=$(node_pid client_sidecar) relay=$(node_pid relaywan) server=$(node_pid server_sidecar)"
}
setup_tun_wan_packet() {
	setup_tun_wan_stream || return
	ROLES[tun@wan]=${ROLES[ockam@wan]:-"client=$(node_pid client_sidecar) relay=$(node_pid relaywan) server=$(node_pid server_sidecar)"}
}
if [[ $wan_line == stream ]]; then
	SC_ROUTE_WAN=/ip4/$RELAY_IP/tcp/4100/service/forward_to_server_wan/service/api
else
	SC_ROUTE_WAN=/ip4/$W_RS/tcp/4000/service/forward_to_server_wan/service/api
fi

# ---------------------------------------------------------------- measures

run_iperf() { # PATH ROUND FLOWS [SUFFIX]
	local p=$1 r=$2 n=$3 m=iperf$3${4:-} f=$tmp/iperf-$1-$2-$3${4:-}.json before after data err=""
	# Through a delay line the server may still be finishing the last
	# test when the next one starts ("the server is busy"): wait for its
	# connections to drain.
	wait_until 30 "iperf3 server idle" _iperf_idle
	profile_nodes "$p" "$r" $((T > 2 ? T - 1 : 1)) "$m"
	before=$(stat_roles "$p")
	if ! in_ns "${EP_NS[$p]}" timeout $((T + 30)) iperf3 -c "${EP_HOST[$p]}" -p "${EP_IPERF[$p]}" \
		-t "$T" -P "$n" -J --connect-timeout 5000 >"$f" 2>"$f.err"; then
		err="iperf3 failed: $("$NB" iperf "$f" 2>&1 | tail -1) $(tail -1 "$f.err")"
	fi
	after=$(stat_roles "$p")
	((${#PROF_PIDS[@]})) && wait "${PROF_PIDS[@]}"
	metrics_nodes "$p" "$r" "$m" 1
	if [[ -z $err ]] && ! data=$("$NB" iperf "$f" 2>&1); then
		err=$data data=""
	fi
	emit "$p" "$r" "$m" "${data:-}" "$before" "$after" "$err"
	if [[ -n $err ]]; then
		# A failed test can leave the server busy: restart it.
		kill "$IPERF_PID" 2>/dev/null
		wait "$IPERF_PID" 2>/dev/null
		start_iperf_server
	fi
}

# run_iperf_udp PATH ROUND: iperf3 -u at the fixed rate, one stream; the
# 2 MiB socket buffers keep iperf3's own bursts from overflowing the server
# socket (the loss figure is the path's).
run_iperf_udp() {
	local p=$1 r=$2 f=$tmp/iperfu-$1-$2.json before after data err=""
	wait_until 30 "iperf3 server idle" _iperf_idle
	before=$(stat_roles "$p")
	if ! in_ns "${EP_NS[$p]}" timeout $((T + 30)) iperf3 -c "${EP_HOST[$p]}" -p "${EP_IPERF[$p]}" \
		-u -b "$udp_rate" -l "$UDP_LEN" -w 2M -t "$T" -J --connect-timeout 5000 >"$f" 2>"$f.err"; then
		err="iperf3 -u failed: $("$NB" iperf "$f" 2>&1 | tail -1) $(tail -1 "$f.err")"
	fi
	after=$(stat_roles "$p")
	if [[ -z $err ]] && ! data=$("$NB" iperf "$f" 2>&1); then
		err=$data data=""
	fi
	emit "$p" "$r" udp "${data:-}" "$before" "$after" "$err"
	if [[ -n $err ]]; then
		kill "$IPERF_PID" 2>/dev/null
		wait "$IPERF_PID" 2>/dev/null
		start_iperf_server
	fi
}

# run_rr_bulk PATH ROUND: rr on its own connection while one iperf3 flow
# fills the same path (a shell or an API call beside a download), for up to
# T-1 s; the flow runs T s. On paths that multiplex connections over one
# (ssh -J, our secure channel) the small messages can wait behind the bulk.
run_rr_bulk() {
	local p=$1 r=$2 f=$tmp/iperfb-$1-$2.json ipid data err=""
	wait_until 30 "iperf3 server idle" _iperf_idle
	in_ns "${EP_NS[$p]}" timeout $((T + 30)) iperf3 -c "${EP_HOST[$p]}" -p "${EP_IPERF[$p]}" \
		-t "$T" -P 1 -J --connect-timeout 5000 >"$f" 2>"$f.err" &
	ipid=$!
	if ! data=$(in_ns "${EP_NS[$p]}" timeout 120 "$NB" rr -addr "${EP_HOST[$p]}:${EP_ECHO[$p]}" \
		-warmup 50 -n "$RR_N" -for "$((T > 2 ? T - 1 : 1))s" 2>&1); then
		err=$data data=""
	fi
	if ! wait "$ipid"; then
		err="${err:+$err; }iperf3 beside rr failed: $(tail -1 "$f.err")"
	fi
	emit "$p" "$r" rrbulk "${data:-}" "" "" "$err"
	if [[ -n $err ]]; then
		kill "$IPERF_PID" 2>/dev/null
		wait "$IPERF_PID" 2>/dev/null
		start_iperf_server
	fi
}

run_latency() { # PATH ROUND rr|crr|urr
	local p=$1 r=$2 k=$3 n data
	[[ $k == crr ]] && n=$CRR_N || n=$RR_N
	if [[ $p == *@wan ]]; then [[ $k == crr ]] && n=$WAN_CRR_N || n=$WAN_RR_N; fi
	if data=$(in_ns "${EP_NS[$p]}" timeout 120 "$NB" "$k" -addr "${EP_HOST[$p]}:${EP_ECHO[$p]}" -n "$n" 2>&1); then
		emit "$p" "$r" "$k" "$data"
	else
		emit "$p" "$r" "$k" "" "" "" "$data"
	fi
}


# profile_nodes PATH ROUND SECONDS MEASURE: with BENCH_PROFILE=DIR, CPU
# profiles of the three ockam nodes while MEASURE (wrk, iperf8, ...) runs, to
# DIR/PATH-rROUND-MEASURE-NODE.pprof (`go tool pprof -top
# DIR/ockam-r1-wrk-relay.pprof`), and their /metrics before, to
# DIR/PATH-rROUND-MEASURE-NODE.metrics0 (metrics_nodes writes .metrics1
# after). Backgrounded; the caller waits for PROF_PIDS.
PROF_PIDS=()
profile_nodes() {
	PROF_PIDS=()
	[[ -n ${BENCH_PROFILE:-} && ${1%@wan} == @(ockam|tun) ]] || return 0
	mkdir -p "$BENCH_PROFILE"
	metrics_nodes "$1" "$2" "$4" 0
	local n
	for n in $(profiled_nodes "$1"); do
		curl -sf --unix-socket "$OCKAM_HOME/run/$n.sock" -o "$BENCH_PROFILE/$1-r$2-$4-$n.pprof" \
			"http://node/debug/pprof/profile?seconds=$3" &
		PROF_PIDS+=($!)
	done
}

# profiled_nodes PATH: the names of PATH's three nodes (the packet line's
# @wan paths have their own relay node).
profiled_nodes() {
	if [[ $1 == *@wan && $wan_line == packet ]]; then
		echo client_sidecar relaywan server_sidecar
	else
		echo client_sidecar relay server_sidecar
	fi
}

# metrics_nodes PATH ROUND MEASURE N: with BENCH_PROFILE=DIR, the three
# nodes' /metrics to DIR/PATH-rROUND-MEASURE-NODE.metricsN.
metrics_nodes() {
	[[ -n ${BENCH_PROFILE:-} && ${1%@wan} == @(ockam|tun) ]] || return 0
	local n
	for n in $(profiled_nodes "$1"); do
		curl -sf --unix-socket "$OCKAM_HOME/run/$n.sock" -o "$BENCH_PROFILE/$1-r$2-$3-$n.metrics$4" \
			"http://node/metrics"
	done
}

# run_wrk PATH ROUND: wrk -t2 -c32 against the HTTP server; the path's
# processes' CPU (utime+stime, netbench stat) before and after, for the CPU
# seconds per million requests (profiling, when on, is in that figure).
run_wrk() {
	local p=$1 r=$2 out rps reqs errs before after
	profile_nodes "$p" "$r" $((WRK_D > 2 ? WRK_D - 1 : 1)) wrk
	before=$(stat_roles "$p")
	out=$(in_ns "${EP_NS[$p]}" timeout $((WRK_D + 30)) wrk -t2 -c32 -d"${WRK_D}s" --timeout 5s \
		"http://${EP_HOST[$p]}:${EP_HTTP[$p]}/" 2>&1)
	after=$(stat_roles "$p")
	((${#PROF_PIDS[@]})) && wait "${PROF_PIDS[@]}"
	metrics_nodes "$p" "$r" wrk 1
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	reqs=$(awk '/ requests in / {print $1}' <<<"$out")
	errs=$(awk '/Socket errors|Non-2xx/ {printf "%s ", $0}' <<<"$out")
	if [[ -n $rps && -n $reqs && -z $errs ]]; then
		emit "$p" "$r" wrk "{\"rps\":$rps,\"requests\":$reqs}" "$before" "$after"
	else
		emit "$p" "$r" wrk "${rps:+{\"rps\":$rps\}}" "" "" "wrk: ${errs:-$(tail -2 <<<"$out")}"
	fi
}

# run_idle PATH ROUND measures the memory of idle flows twice: with a tenth
# of them first ("idle_small"), then with all ("idle"). The small figure is
# what the report shows for a path that cannot hold them all; it comes first
# because a failed large attempt leaves freed heap behind that would hide the
# growth of the small one.
run_idle() {
	local p=$1 r=$2 n=${IDLE_N[$1]}
	((n > 0)) || return 0
	if ((n >= 1000)); then
		hold_flows "$p" "$r" idle_small $((n / 10))
	fi
	hold_flows "$p" "$r" idle "$n"
}

hold_flows() { # PATH ROUND MEASURE N
	local p=$1 r=$2 m=$3 n=$4 before after out=$tmp/hold-$1-$2-$4.out fifo pid
	fifo=$out.in
	mkfifo "$fifo"
	before=$(stat_roles "$p")
	in_ns "${EP_NS[$p]}" "$NB" hold -addr "${EP_HOST[$p]}:${EP_ECHO[$p]}" -n "$n" <"$fifo" >"$out" 2>&1 &
	pid=$!
	exec {hold_fd}>"$fifo"
	wait_until 300 "$n idle flows over $p" _hold_done "$out" "$pid"
	if grep -q '^ready' "$out"; then
		after=$(stat_roles "$p")
		emit "$p" "$r" "$m" "{\"flows\":$n}" "$before" "$after"
	else
		emit "$p" "$r" "$m" "{\"flows\":$n}" "" "" "$n idle flows: $(tail -1 "$out")"
	fi
	exec {hold_fd}>&-
	unset hold_fd
	wait "$pid" 2>/dev/null
	rm -f "$fifo"
	# Let the path tear the flows down before the next measure.
	wait_until 120 "idle flows of $p closed" _echo_conns_below 10
}

_iperf_idle() {
	[[ -z $(in_ns "$NS_SERVER" ss -Htn state established "( sport = :$P_IPERF )" 2>/dev/null) ]]
}

_hold_done() {
	grep -q '^ready' "$1" || ! kill -0 "$2" 2>/dev/null
}

_echo_conns_below() {
	(($(in_ns "$NS_SERVER" ss -Htn state established "( sport = :$P_ECHO )" | wc -l) < $1))
}

# loss_on PCT drops that share of the packets on the relay's two veths, both
# ways (as scripts/faults.sh does, but not the relay's loopback, where the
# delay lines talk to socat and to the relay node).
# On a @wan path with the packet line, the lines drop instead (loss_on PCT PATH).
loss_on() {
	if [[ ${2:-} == *@wan && $wan_line == packet ]]; then
		wan_line_loss "$1"
		return
	fi
	local rn=(in_ns "$NS_RELAY" nft) ifs="{ $NETNS_IF_RELAY_C, $NETNS_IF_RELAY_S }"
	"${rn[@]}" add table inet benchloss &&
		"${rn[@]}" add chain inet benchloss in '{ type filter hook input priority 0; }' &&
		"${rn[@]}" add chain inet benchloss out '{ type filter hook output priority 0; }' &&
		"${rn[@]}" add rule inet benchloss in iifname "$ifs" numgen random mod 100 '<' "$1" drop &&
		"${rn[@]}" add rule inet benchloss out oifname "$ifs" numgen random mod 100 '<' "$1" drop
}
loss_off() {
	if [[ ${1:-} == *@wan && $wan_line == packet ]]; then
		wan_line_loss 0
		return
	fi
	in_ns "$NS_RELAY" nft delete table inet benchloss 2>/dev/null
}

measure_path() {
	local p=$1 r=$2
	log "round $r: $p"
	run_iperf "$p" "$r" 1
	run_iperf "$p" "$r" 8
	# direct has no relay to drop on, but direct@wan crosses the packet lines.
	if [[ -n $loss && ( $p != direct* || ($p == direct@wan && $wan_line == packet) ) ]]; then
		# On the packet lines, the lossy flow's baseline: no loss, and the
		# offloads off as loss turns them off (the lines' CPU per byte is
		# not the loss's doing).
		if [[ $p == *@wan && $wan_line == packet ]]; then
			if wan_line_offloads off; then
				run_iperf "$p" "$r" 1 nooff
			else
				emit "$p" "$r" iperf1nooff "" "" "" "cannot turn the offloads off"
			fi
			wan_line_offloads on
		fi
		if loss_on "$loss" "$p"; then
			run_iperf "$p" "$r" 1 loss
		else
			emit "$p" "$r" iperf1loss "" "" "" "cannot turn the loss on"
		fi
		loss_off "$p"
	fi
	run_latency "$p" "$r" rr
	[[ $p == *@wan ]] || run_rr_bulk "$p" "$r"
	run_latency "$p" "$r" crr
	run_wrk "$p" "$r"
	if [[ -n $udp_rate && -n ${UDP_OK[$p]:-} ]]; then
		run_iperf_udp "$p" "$r"
		run_latency "$p" "$r" urr
	fi
}

# ---------------------------------------------------------------- run

active=()
for p in direct socat chain ssh wg ockam tun; do
	[[ ,$want_paths, == *,$p,* ]] || continue
	log "setting up $p"
	setup_$p >"$tmp/setup-$p.out" 2>"$tmp/setup-$p.err"
	rc=$?
	msg=$(cat "$tmp/setup-$p.out" "$tmp/setup-$p.err" | grep -v '^ *\[.*\] \$ ' | tail -3)
	if ((rc == 0)); then
		active+=("$p")
		echo "path_$p=1" >>"$tmp/meta"
	elif ((rc == 3)); then
		skip_path "$p" "$(cat "$tmp/setup-$p.out")"
	else
		emit "$p" 0 setup "" "" "" "setup failed: $msg"
	fi
done
if [[ -n $wan ]]; then
	for p in direct socat ssh wg ockam tun; do
		[[ ,$want_paths, == *,$p,* ]] || continue
		log "setting up $p@wan"
		setup_${p}_wan >"$tmp/setup-$p-wan.out" 2>"$tmp/setup-$p-wan.err"
		rc=$?
		msg=$(cat "$tmp/setup-$p-wan.out" "$tmp/setup-$p-wan.err" | grep -v '^ *\[.*\] \$ ' | tail -3)
		if ((rc == 0)); then
			active+=("$p@wan")
			echo "path_$p@wan=1" >>"$tmp/meta"
		elif ((rc == 3)); then
			skip_path "$p@wan" "$(cat "$tmp/setup-$p-wan.out")"
		else
			emit "$p@wan" 0 setup "" "" "" "setup failed: $msg"
		fi
	done
fi
if ((wan_only)); then
	wan_active=()
	for p in "${active[@]}"; do [[ $p == *@wan ]] && wan_active+=("$p"); done
	active=("${wan_active[@]}")
fi
log "paths: ${active[*]}"
((${#active[@]})) || exit 1

for ((r = 1; r <= rounds; r++)); do
	for p in "${active[@]}"; do
		measure_path "$p" "$r"
	done
done
# Idle flows last, after every round: holding thousands of flows leaves some
# processes slower for good (OpenSSH's channel table never shrinks: ssh -J's
# HTTP req/s fell from 23.7K to 16-17K after 10,000 of them, rr p50 from 370
# to 540 us), which would skew every measure after it. The cost: Go
# processes' heaps have grown by then, so their figures are lower bounds.
for ((r = 1; r <= rounds; r++)); do
	for p in "${active[@]}"; do
		((${IDLE_N[$p]:-0} > 0)) && log "round $r: $p idle flows"
		run_idle "$p" "$r"
	done
done

# ---------------------------------------------------------------- report

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$results_dir"
json=$results_dir/$stamp-$mode.json svg=$results_dir/$stamp-$mode.svg
ver() { "$@" 2>&1 | head -1; }
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "mode=$mode (iperf3 ${T}s, rr ${RR_N}, crr ${CRR_N}, wrk ${WRK_D}s)"
	echo "rounds=$rounds"
	echo "rrbulk=rr (up to ${RR_N}, for up to $((T > 2 ? T - 1 : 1)) s) on its own connection while one iperf3 flow fills the same path, LAN only"
	echo "machine=$(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"
	echo "ockam=$ockam_src"
	echo "go=$(go version | cut -d' ' -f3)"
	echo "wireguard-go=$WG_VERSION (userspace, TUN MTU 1420)"
	echo "openssh=$(ver ssh -V)"
	echo "iperf3=$(ver iperf3 --version)"
	echo "wrk=$(ver wrk --version | cut -d' ' -f1-2)"
	echo "socat=$(socat -V 2>&1 | sed -n 's/^socat version \([^ ]*\).*/\1/p')"
	echo "idle_flows=$idle_flows"
	echo "idle_flows_socat=$idle_socat"
	[[ -n $udp_rate ]] && echo "udp=iperf3 -u -b $udp_rate -l $UDP_LEN -w 2M, ${T}s, 1 stream; urr ${RR_N} datagrams of 64 B, one at a time, lost after 1 s"
	if [[ -n $loss ]]; then
		if [[ -n $wan && $wan_line == packet ]]; then
			echo "loss=$loss%, 1 flow: LAN, of the relay's veth packets both ways (nftables); WAN, of each leg's packets each way (the packet lines, offloads off)"
		else
			echo "loss=$loss% of the relay's veth packets, both ways (nftables), 1 flow"
		fi
	fi
	if [[ -n $wan && $wan_line == packet ]]; then
		echo "wan=$WAN_FULL added each way ($WAN_HALF per relay leg, packet lines: netbench wan on a TUN), rr ${WAN_RR_N}, crr ${WAN_CRR_N}"
		echo "wan_line=packet"
		echo "tcp=$(in_ns "$NS_RELAY" sysctl -n net.ipv4.tcp_congestion_control), tcp_rmem $(in_ns "$NS_RELAY" sysctl -n net.ipv4.tcp_rmem | tr '\t' ' '), tcp_wmem $(in_ns "$NS_RELAY" sysctl -n net.ipv4.tcp_wmem | tr '\t' ' ')"
		echo "wan_check=$WAN_CHECK"
		[[ -n $WAN_LOSS_CHECK ]] && echo "wan_loss_check=$WAN_LOSS_CHECK"
		echo "wan_line_cost=$(wan_line_cost)"
	elif [[ -n $wan ]]; then
		echo "wan=$WAN_FULL added each way ($WAN_HALF per relay leg, userspace delay lines), rr ${WAN_RR_N}, crr ${WAN_CRR_N}"
		echo "wan_line=stream"
	fi
	echo "results=${json#"$root"/}"
	cat "$tmp/meta" 2>/dev/null
} >"$tmp/meta.all"
rargs=(-meta "$tmp/meta.all" -samples "$samples" -json "$json" -svg "$svg")
if [[ $docs != - ]]; then
	rargs+=(-md "$docs" -svg-ref "$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], os.path.dirname(os.path.abspath(sys.argv[2]))))' "$svg" "$docs")")
fi
"$NB" report "${rargs[@]}" || exit 1
log "wrote $json $svg ${docs/#-/}"
[[ $docs != - ]] && sed -n '/^## Results/,/^## Relative to ssh/p' "$docs" | head -n -1
exit "$failed"
