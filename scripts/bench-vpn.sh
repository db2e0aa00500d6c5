#!/usr/bin/env bash
# bench-vpn.sh: tariq's WireGuard endpoint against plain upstream wireguard-go
# and against no tunnel at all, side by side, on one namespace topology.
#
#   sudo scripts/bench-vpn.sh [--runs N] [--duration S] [--voip-pps P]
#        [--tests "tcp udp ping voice outline"] [--cap RATE] [--perf] [--tariq-extra-port]
#        [--out FILE]
#
#   --runs 3, --duration 5 (s per iperf3 test), --voip-pps 5000 (defaults)
#   --tests: a subset, e.g. --tests ping --runs 20, --tests voice, --tests outline
#   --cap 4mbit: the member's rate cap in the voice test
#   --perf: afterwards, one more TCP-up test per tunnel under `perf record` of
#           the server process; the top symbols of both, side by side
#   --tariq-extra-port: give tariq vpn.extra_ports [51840], so its bind runs
#           with several sockets (endpoints wrapped per socket)
#   --out FILE: keep the per-run samples (TSV: path, metric, run, value)
# (If sudo's secure_path hides go: sudo env "PATH=$PATH" scripts/bench-vpn.sh)
#
# Topology, made fresh per run (names carry a random id) and torn down by a trap:
#
#   device ns --10.20.1.0/24-- server ns --10.20.2.0/24-- internet ns (iperf3 -s)
#
# Paths from the device to the internet host, all live at once and
# selected by the device's routing (wg-quick style policy routing: fwmark
# 51820, table 51820, suppress_prefixlength 0):
#   raw     table 51820 empty: plain routing through the server ns, no tunnel;
#   wg-go   upstream wireguard-go server (wg setconf, nft masquerade in a table
#           of this script's own) <- upstream wireguard-go client;
#   tariq   `tariq serve` (built from this checkout, relay and web off) with a
#           peer added by `tariq peer add`, <- the same upstream wireguard-go
#           client configured from the exported config; its member has no
#           limits;
#   tq+lim  the same tunnel, its member given a data limit (1000GiB) and a
#           rate cap far above what the path carries (10gbit) with
#           `tariq peer set`: every packet is counted against the budget and
#           goes through the token bucket, which never holds it back. The
#           CPU per MB against tariq's is what limits cost (target: 5 %).
# Both tunnels: same client binary, same topology, MTU 1420 inside.
#
# Per run and path (the path order rotates between runs): iperf3 TCP device ->
# internet and reverse (-R); UDP with 200-byte datagrams at VOIP_PPS packets/s
# (VoIP-like: delivered pps, loss, jitter) and unlimited (-b 0: delivered
# pps, loss); busybox ping -s 172 (200-byte IP packets) rtt median/avg; the
# CPU-seconds (utime+stime from /proc/PID/stat) the server and client
# processes spent during each TCP test. The table shows medians over runs and
# the ratios tariq / wg-go, tariq / raw and tq+lim / tariq.
#
# voice (tariq only): a call beside a bulk download in the same tunnel, the
# member capped at --cap (4mbit) and uncapped: iperf3 -R TCP fills the
# downlink while a voice-like stream comes down beside it (iperf3 -u -R,
# 160-byte datagrams at 50/s: 64 kbit/s) and busybox ping measures the
# round trip (160-byte IP packets, 50/s); each also without the download.
# The table shows the download's rate, the stream's loss and jitter, and
# the ping's loss and RTT (median, 95th percentile, max): the cap's token
# bucket lets small packets go ahead of the member's own bulk traffic, so
# a call stays usable at a low cap.
#
# outline: the Outline path (Shadowsocks over WebSocket over TLS on tariq's
# HTTPS port, 10.20.1.1:443, its certificate from a CA of this run's own,
# tls.mode files) against stock WireGuard (wg-go) and tariq's WireGuard, all
# three measured by one client, scripts/pathbench (for Outline it follows
# the Outline app's code path, outline-sdk, from the member's ssconf://
# key; for WireGuard it uses plain sockets the device's routing sends into
# the tunnel), against pathbench serve on the internet host: TCP up and
# down for --duration s, with the server process's CPU-seconds (tariq for
# Outline, wireguard-go for wg-go; the kernel's forwarding and NAT behind a
# WireGuard server are counted nowhere, Outline's TCP to the target is in
# tariq's own time), and the voice stream (160 B UDP at 50/s for
# --duration s, echoed: loss, round trip median, p95, p99, max), alone and
# beside a TCP download through the same path. The table shows medians
# over runs and the ratios outline / wg-go and outline / tariq.
#
# Everything is namespace-local (veth only; nothing touches the host's own
# network) and every client command is bounded by `timeout`.
# Note: the veth "wire" carries GSO/GRO superpackets, so raw is far above any
# real link; compare the two tunnels with each other.
set -euo pipefail

RUNS=3
DURATION=5
VOIP_PPS=5000
PING_COUNT=200
OUT=""
PERF=0
TQ_EXTRA_PORT=0
TESTS="tcp udp ping voice outline"
CAP=4mbit

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}
while (($#)); do
	case $1 in
	--runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
	--duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
	--voip-pps) VOIP_PPS=${2:?--voip-pps needs a value}; shift 2 ;;
	--out) OUT=${2:?--out needs a file}; shift 2 ;;
	--perf) PERF=1; shift ;;
	--tariq-extra-port) TQ_EXTRA_PORT=1; shift ;;
	--tests) TESTS=${2:?--tests needs a list}; shift 2 ;;
	--cap) CAP=${2:?--cap needs a rate}; shift 2 ;;
	-h | --help) usage 0 ;;
	*) echo "bench: unknown argument $1" >&2; usage 2 ;;
	esac
done
for v in RUNS DURATION VOIP_PPS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: $v must be a positive integer" >&2; exit 2; }
done
for t in $TESTS; do
	[[ $t == tcp || $t == udp || $t == ping || $t == voice || $t == outline ]] || { echo "bench: unknown test $t (tcp, udp, ping, voice, outline)" >&2; exit 2; }
done
((RUNS <= 50 && DURATION <= 120)) || { echo "bench: at most 50 runs of 120 s" >&2; exit 2; }

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (network namespaces)"
GO=${GO:-$(command -v go || true)}
[[ -n $GO ]] || die "go not found (sudo env \"PATH=\$PATH\" $0)"
for b in ip nft wg iperf3 busybox python3 timeout od ss; do
	command -v "$b" >/dev/null || die "$b not found"
done
((!PERF)) || command -v perf >/dev/null || die "--perf: perf not found"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rid=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
tmp=$(mktemp -d "/tmp/bench-vpn.$rid.XXXXXX")
NS_DEV=tqb-$rid-dev
NS_SRV=tqb-$rid-srv
NS_NET=tqb-$rid-net
IF_WGS=wgs$rid # plain wireguard-go server
IF_TQ=tqb$rid  # tariq's vpn.interface
IF_CW=wgc$rid  # client towards wireguard-go
IF_CT=wgt$rid  # client towards tariq
NFT_TABLE=benchvpn_$rid
DEV_IP=10.20.1.2 SRV_IP=10.20.1.1 UP_IP=10.20.2.1 NET_IP=10.20.2.2
WG_PORT=51830 TQ_PORT=51820 # 51821 is tariq's default vpn.obfuscation.listen_port
RESULTS=$tmp/results.tsv
: >"$RESULTS"

declare -A LIVE=() # PID -> what
NAMESPACES=()
IPERF_PID=""

nsx() {
	local ns=$1
	shift
	ip netns exec "$ns" "$@"
}

# spawn NS LOG CMD...: start CMD in NS in the background; its PID in $PID
# (ip netns exec execs in place, so the PID is CMD's own).
spawn() {
	local ns=$1 out=$2
	shift 2
	ip netns exec "$ns" "$@" >"$out" 2>&1 &
	PID=$!
	LIVE[$PID]=$1
}

# reap PID: TERM, KILL after 5 s, wait.
reap() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "LIVE[$pid]"
}

cleanup() {
	local rc=$? pid ns i
	trap - EXIT INT TERM
	for pid in "${!LIVE[@]}"; do
		reap "$pid"
	done
	if [[ " ${NAMESPACES[*]} " == *" $NS_SRV "* ]]; then
		nsx "$NS_SRV" nft delete table inet "$NFT_TABLE" 2>/dev/null || true
	fi
	for ns in "${NAMESPACES[@]}"; do
		for ((i = 0; i < 50; i++)); do
			ip netns del "$ns" 2>/dev/null && break
			sleep 0.1
		done
		[[ ! -e /run/netns/$ns ]] || log "could not delete namespace $ns"
	done
	for i in "$IF_WGS" "$IF_TQ" "$IF_CW" "$IF_CT"; do
		rm -f "/var/run/wireguard/$i.sock"
	done
	if [[ -n $OUT && -s $RESULTS ]]; then
		cp "$RESULTS" "$OUT" || true
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- environment
wgver=$(awk '$1 == "golang.zx2c4.com/wireguard" {print $2}' "$repo/go.mod")
echo "== bench-vpn $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "kernel:        $(uname -sr)"
echo "cpus:          $(nproc) x $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
echo "go:            $("$GO" version | cut -d' ' -f3-)"
echo "wireguard-go:  ${wgver:-?} (go.mod; both servers and the client)"
echo "tariq:         $(git -C "$repo" describe --always --dirty 2>/dev/null || echo '?')"
echo "iperf3:        $(iperf3 --version | awk 'NR == 1 { print $2 }')"
((TQ_EXTRA_PORT)) && echo "tariq config:  vpn.extra_ports: [51840] (multi-socket bind)"
echo "tests:         $TESTS"
echo "runs:          $RUNS x ${DURATION}s per iperf3 test; VoIP UDP 200 B at $VOIP_PPS pkt/s; ping -s 172 x $PING_COUNT"
[[ " $TESTS " != *" voice "* ]] || echo "voice:         160 B UDP at 50/s and ping -s 132 at 50/s beside a TCP download, capped at $CAP and uncapped"
[[ " $TESTS " != *" outline "* ]] || echo "outline:       pathbench over Outline (WebSocket, TLS 443), wg-go and tariq: TCP up/down ${DURATION}s, voice 160 B at 50/s ${DURATION}s alone and beside a download"
echo

# ---------------------------------------------------------------- build
log "building tariq and wireguard-go ($tmp)"
(cd "$repo" && "$GO" build -o "$tmp/tariq" ./cmd/tariq) || die "go build ./cmd/tariq failed"
(cd "$repo" && "$GO" build -o "$tmp/wireguard-go" golang.zx2c4.com/wireguard) || die "go build golang.zx2c4.com/wireguard failed"
OUTLINE=0
if [[ " $TESTS " == *" outline "* ]]; then
	OUTLINE=1
	(cd "$repo" && "$GO" build -o "$tmp/pathbench" ./scripts/pathbench) || die "go build ./scripts/pathbench failed"
fi

# ---------------------------------------------------------------- topology
for ns in "$NS_DEV" "$NS_SRV" "$NS_NET"; do
	ip netns add "$ns" || die "ip netns add $ns failed"
	NAMESPACES+=("$ns")
	ip -n "$ns" link set lo up
done
ip link add eth0 netns "$NS_DEV" type veth peer name dev0 netns "$NS_SRV"
ip link add up0 netns "$NS_SRV" type veth peer name inet0 netns "$NS_NET"
ip -n "$NS_DEV" addr add "$DEV_IP/24" dev eth0
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev dev0
ip -n "$NS_SRV" addr add "$UP_IP/24" dev up0
ip -n "$NS_NET" addr add "$NET_IP/24" dev inet0
ip -n "$NS_DEV" link set eth0 up
ip -n "$NS_SRV" link set dev0 up
ip -n "$NS_SRV" link set up0 up
ip -n "$NS_NET" link set inet0 up
ip -n "$NS_DEV" route add default via "$SRV_IP"
ip -n "$NS_SRV" route add default via "$NET_IP"
ip -n "$NS_NET" route add 10.20.1.0/24 via "$UP_IP" # raw path: routed, not NATed
nsx "$NS_SRV" sysctl -qw net.ipv4.ip_forward=1
nsx "$NS_DEV" sysctl -qw net.ipv4.conf.all.src_valid_mark=1 # as wg-quick does

# wait_sock IFNAME: wait for wireguard-go's UAPI socket.
wait_sock() {
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -S /var/run/wireguard/$1.sock ]] && return 0
		sleep 0.1
	done
	die "no UAPI socket for $1"
}

# cpu_ticks PID: utime+stime in clock ticks.
cpu_ticks() {
	local s f
	s=$(<"/proc/$1/stat") || { echo 0; return; }
	s=${s##*) }
	read -ra f <<<"$s"
	echo $((f[11] + f[12]))
}
HZ=$(getconf CLK_TCK)

# ---------------------------------------------------------------- plain wireguard-go server
srv_priv=$(wg genkey)
srv_pub=$(wg pubkey <<<"$srv_priv")
cli_priv=$(wg genkey)
cli_pub=$(wg pubkey <<<"$cli_priv")
psk=$(wg genpsk)
umask 077
cat >"$tmp/wgs.conf" <<EOF
[Interface]
PrivateKey = $srv_priv
ListenPort = $WG_PORT

[Peer]
PublicKey = $cli_pub
PresharedKey = $psk
AllowedIPs = 10.78.0.2/32
EOF
cat >"$tmp/wg-client.conf" <<EOF
[Interface]
PrivateKey = $cli_priv
Address = 10.78.0.2/32
MTU = 1420

[Peer]
PublicKey = $srv_pub
PresharedKey = $psk
Endpoint = $SRV_IP:$WG_PORT
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
EOF
umask 022
rm -f "/var/run/wireguard/$IF_WGS.sock"
spawn "$NS_SRV" "$tmp/wgs.log" "$tmp/wireguard-go" -f "$IF_WGS"
WGS_PID=$PID
wait_sock "$IF_WGS"
nsx "$NS_SRV" wg setconf "$IF_WGS" "$tmp/wgs.conf"
ip -n "$NS_SRV" addr add 10.78.0.1/24 dev "$IF_WGS"
ip -n "$NS_SRV" link set "$IF_WGS" mtu 1420 up
nsx "$NS_SRV" nft -f - <<EOF
table inet $NFT_TABLE {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "up0" ip saddr 10.78.0.0/24 counter masquerade
	}
}
EOF

# ---------------------------------------------------------------- tariq
# The internet host has a private address, which members may not reach by
# default (vpn.allow_destinations). With the outline test, the Outline path
# on the HTTPS port, with a certificate from a CA of this run's own.
((!OUTLINE)) || "$tmp/pathbench" cert -ip "$SRV_IP" -dir "$tmp" || die "pathbench cert failed"
cat >"$tmp/tariq.yaml" <<EOF
server:
  public_host: $SRV_IP
  data_dir: $tmp/data
  admin_socket: $tmp/admin.sock
vpn:
  interface: $IF_TQ
  listen_port: $TQ_PORT
  mtu: 1420
  allow_destinations: [10.20.2.0/24]
$( ((TQ_EXTRA_PORT)) && echo "  extra_ports: [51840]")
$( ((OUTLINE)) && echo "  outline: {enabled: true}")
relay:
  enabled: false
$( if ((OUTLINE)); then
	printf 'tls:\n  mode: files\n  cert_file: %s\n  key_file: %s\n' "$tmp/cert.pem" "$tmp/key.pem"
	printf 'web:\n  enabled: true\n  listen: ["%s:443"]\n' "$SRV_IP"
else
	printf 'web:\n  enabled: false\n'
fi)
EOF
spawn "$NS_SRV" "$tmp/tariq.log" "$tmp/tariq" serve --config "$tmp/tariq.yaml"
TQ_PID=$PID
for ((i = 0; ; i++)); do
	if "$tmp/tariq" status --config "$tmp/tariq.yaml" >/dev/null 2>&1; then
		break
	fi
	if ! kill -0 "$TQ_PID" 2>/dev/null || ((i > 200)); then
		cat "$tmp/tariq.log" >&2
		die "tariq serve did not come up"
	fi
	sleep 0.1
done
timeout 30 "$tmp/tariq" peer add bench --config "$tmp/tariq.yaml" >"$tmp/tariq-client.conf" ||
	die "tariq peer add failed"
OL_KEY=""
if ((OUTLINE)); then
	OL_KEY=$(timeout 30 "$tmp/tariq" peer add olbench --outline --config "$tmp/tariq.yaml") ||
		die "tariq peer add olbench --outline failed: $OL_KEY"
fi

# ---------------------------------------------------------------- clients (wg-quick style)
# client_up IFNAME CONF: upstream wireguard-go in the device ns, configured
# from a wg-quick config: wg-quick-only keys stripped, `wg setconf`, fwmark,
# addresses, MTU. The routes are set per path by use_path.
client_up() {
	local ifname=$1 conf=$2 a mtu
	rm -f "/var/run/wireguard/$ifname.sock"
	spawn "$NS_DEV" "$tmp/$ifname.log" "$tmp/wireguard-go" -f "$ifname"
	wait_sock "$ifname"
	awk '
		/^[[:space:]]*\[/ { sec = $0; gsub(/[[:space:]]/, "", sec); print; next }
		{ k = $0; sub(/=.*/, "", k); gsub(/[[:space:]]/, "", k) }
		sec == "[Interface]" && k ~ /^(Address|DNS|MTU|Table|PreUp|PostUp|PreDown|PostDown|SaveConfig)$/ { next }
		{ print }' "$conf" >"$conf.stripped"
	nsx "$NS_DEV" wg setconf "$ifname" "$conf.stripped"
	nsx "$NS_DEV" wg set "$ifname" fwmark 51820
	while read -r a; do
		[[ -n $a ]] || continue
		if [[ $a == *:* ]]; then
			ip -n "$NS_DEV" -6 addr add "$a" dev "$ifname" nodad
		else
			ip -n "$NS_DEV" addr add "$a" dev "$ifname"
		fi
	done < <(sed -n 's/^[[:space:]]*Address[[:space:]]*=[[:space:]]*//p' "$conf" | tr ',' '\n' | tr -d ' ')
	mtu=$(awk -F'=' '$1 ~ /^[[:space:]]*MTU[[:space:]]*$/ { gsub(/[[:space:]]/, "", $2); print $2; exit }' "$conf")
	[[ ${mtu:-1420} == 1420 ]] || log "note: $conf asks for MTU $mtu; using 1420 for both tunnels"
	ip -n "$NS_DEV" link set "$ifname" mtu 1420 up
}
client_up "$IF_CW" "$tmp/wg-client.conf"
CW_PID=$PID
client_up "$IF_CT" "$tmp/tariq-client.conf"
CT_PID=$PID
ip -n "$NS_DEV" -4 rule add not fwmark 51820 table 51820
ip -n "$NS_DEV" -4 rule add table main suppress_prefixlength 0

# ---------------------------------------------------------------- device setup
# What could make the two servers differ although they run the same engine:
# the TUN's flags (vnet_hdr = wireguard-go's TUN offloads on), MTU, queue and
# GSO limits, and the UDP socket's buffers (skmem rb/tb).
setup_line() {
	local ns=$1 ifname=$2 port=$3 what=$4 l sk
	l=$(ip -n "$ns" -d link show "$ifname") || { echo "$what $ifname: not found"; return 0; }
	sk=$(nsx "$ns" ss -uanm "sport = :$port" 2>/dev/null | awk 'match($0, /skmem:\([^)]*\)/) { print substr($0, RSTART, RLENGTH); exit }') || sk="?"
	awk -v what="$what" -v ifname="$ifname" -v port="$port" -v sk="$sk" '
		{ for (i = 1; i < NF; i++) v[$i] = $(i + 1) }
		END {
			printf "%-7s %-10s mtu %s qlen %s pi %s vnet_hdr %s gso_max_size %s gro_max_size %s; udp :%s %s\n",
				what, ifname, v["mtu"], v["qlen"], v["pi"], v["vnet_hdr"], v["gso_max_size"], v["gro_max_size"], port, sk
		}' <<<"$l"
}
echo "device setup:"
setup_line "$NS_SRV" "$IF_WGS" "$WG_PORT" wg-go
setup_line "$NS_SRV" "$IF_TQ" "$TQ_PORT" tariq
setup_line "$NS_DEV" "$IF_CW" "$(nsx "$NS_DEV" wg show "$IF_CW" listen-port)" client
echo

# ---------------------------------------------------------------- measurements
start_iperf_server() {
	if [[ -n $IPERF_PID ]]; then
		reap "$IPERF_PID"
	fi
	spawn "$NS_NET" "$tmp/iperf3-server.log" iperf3 -s -B "$NET_IP" -p 5201
	IPERF_PID=$PID
	sleep 0.3
}
start_iperf_server
# A second server for the voice stream beside the download (iperf3 serves
# one test at a time).
IPERF2_PID=""
start_iperf_server2() {
	if [[ -n $IPERF2_PID ]]; then
		reap "$IPERF2_PID"
	fi
	spawn "$NS_NET" "$tmp/iperf3-server2.log" iperf3 -s -B "$NET_IP" -p 5202
	IPERF2_PID=$PID
	sleep 0.3
}
[[ " $TESTS " != *" voice "* ]] || start_iperf_server2
PB_SINK=5101 PB_SOURCE=5102 PB_ECHO=5103
if ((OUTLINE)); then
	spawn "$NS_NET" "$tmp/pathbench-serve.log" "$tmp/pathbench" serve -addr "$NET_IP" \
		-sink "$PB_SINK" -source "$PB_SOURCE" -echo "$PB_ECHO"
	for ((i = 0; i < 50; i++)); do
		grep -q '^serving' "$tmp/pathbench-serve.log" && break
		sleep 0.1
	done
	grep -q '^serving' "$tmp/pathbench-serve.log" || die "pathbench serve: $(cat "$tmp/pathbench-serve.log")"
fi

# tq_limits ARGS...: `tariq peer set bench ARGS` (the daemon applies it live).
tq_limits() {
	timeout 30 "$tmp/tariq" peer set bench --config "$tmp/tariq.yaml" "$@" >>"$tmp/peer-set.log" 2>&1 ||
		die "tariq peer set bench $*: $(tail -1 "$tmp/peer-set.log")"
}

# use_path PATH: route the device's traffic through it; sets SPID/CPID.
use_path() {
	ip -n "$NS_DEV" route flush table 51820 2>/dev/null || true
	SPID="" CPID=""
	case $1 in
	raw) ;;
	wg-go)
		ip -n "$NS_DEV" route add default dev "$IF_CW" table 51820
		SPID=$WGS_PID CPID=$CW_PID
		;;
	outline) # the device reaches the server directly; Outline carries the rest
		SPID=$TQ_PID
		;;
	tariq | tq+lim)
		ip -n "$NS_DEV" route add default dev "$IF_CT" table 51820
		SPID=$TQ_PID CPID=$CT_PID
		if [[ $1 == tariq ]]; then
			tq_limits --rate none --data-limit none
		else
			tq_limits --rate 10gbit --data-limit 1000GiB
		fi
		;;
	esac
	local i
	for ((i = 0; i < 10; i++)); do
		if nsx "$NS_DEV" busybox ping -q -c 1 -W 1 -w 2 "$NET_IP" >/dev/null 2>&1; then
			return 0
		fi
	done
	log "$1: the internet host is unreachable"
	return 1
}

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; }

# iperf PATH RUN NAME ARGS...: one iperf3 test; records metrics by NAME.
iperf() {
	local path=$1 run=$2 name=$3 json s0=0 c0=0 s1 c1
	shift 3
	json=$tmp/$path.$run.$name.json
	[[ -z $SPID ]] || s0=$(cpu_ticks "$SPID")
	[[ -z $CPID ]] || c0=$(cpu_ticks "$CPID")
	if ! timeout $((DURATION + 20)) ip netns exec "$NS_DEV" \
		iperf3 -c "$NET_IP" -p 5201 -t "$DURATION" --connect-timeout 3000 -J "$@" >"$json" 2>&1; then
		log "$path run $run $name: iperf3 failed: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error",""))' "$json" 2>/dev/null || head -c 300 "$json")"
		start_iperf_server
		return 0
	fi
	s1=0 c1=0
	[[ -z $SPID ]] || s1=$(cpu_ticks "$SPID")
	[[ -z $CPID ]] || c1=$(cpu_ticks "$CPID")
	python3 - "$json" "$name" "$path" "$run" "$((s1 - s0))" "$((c1 - c0))" "$HZ" "${SPID:+1}" >>"$RESULTS" <<'EOF'
import json, sys
f, name, path, run, sd, cd, hz, tunnel = sys.argv[1:]
e = json.load(open(f))["end"]
r = e["sum_received"]
out = []
if name.startswith("tcp"):
    out.append((name + "_mbps", r["bits_per_second"] / 1e6))
    if tunnel:
        scpu, ccpu = int(sd) / int(hz), int(cd) / int(hz)
        mb = r["bytes"] / 1e6
        out.append((name + "_srv_cpu", scpu))
        out.append((name + "_cli_cpu", ccpu))
        if scpu > 0:
            out.append((name + "_mb_per_srv_cpu", mb / scpu))
        if ccpu > 0:
            out.append((name + "_mb_per_cli_cpu", mb / ccpu))
else:
    secs = r["seconds"] or 1
    pps = (r["packets"] - r["lost_packets"]) / secs
    out.append((name + "_pps", pps))
    out.append((name + "_loss", r["lost_percent"]))
    if name == "voip":
        out.append((name + "_jitter", r["jitter_ms"]))
    if tunnel and int(sd) > 0:
        out.append((name + "_kpkt_per_srv_cpu", pps * secs / 1e3 / (int(sd) / int(hz))))
for k, v in out:
    print(f"{path}\t{k}\t{run}\t{v}")
EOF
}

# pinger PATH RUN: busybox ping, 200-byte IP packets, 10 ms apart.
pinger() {
	local path=$1 run=$2 out=$tmp/$1.$2.ping
	timeout $((PING_COUNT / 50 + 30)) ip netns exec "$NS_DEV" \
		busybox ping -s 172 -c "$PING_COUNT" -i 0.01 -W 2 -w $((PING_COUNT / 50 + 20)) "$NET_IP" >"$out" 2>&1 || true
	python3 - "$out" "$path" "$run" "$PING_COUNT" >>"$RESULTS" <<'EOF'
import re, statistics, sys
f, path, run, count = sys.argv[1:]
t = [float(x) for x in re.findall(r"time=([0-9.]+) ms", open(f).read())]
if t:
    print(f"{path}\trtt_med\t{run}\t{statistics.median(t)}")
    print(f"{path}\trtt_avg\t{run}\t{statistics.fmean(t)}")
print(f"{path}\tping_loss\t{run}\t{100 * (1 - len(t) / int(count))}")
EOF
}

# voice RUN SCENARIO CAP BULK: the voice stream and ping through tariq, the
# member's rate cap CAP ("none" or a rate), beside a TCP download if BULK is
# 1; records metrics under path SCENARIO.
voice() {
	local run=$1 sc=$2 cap=$3 bulk=$4 bulk_pid="" ping_pid
	local vjson=$tmp/voice.$2.$1.json bjson=$tmp/bulk.$2.$1.json ping_out=$tmp/voice.$2.$1.ping
	tq_limits --rate "$cap" --data-limit none
	if ((bulk)); then
		timeout $((DURATION + 30)) ip netns exec "$NS_DEV" \
			iperf3 -c "$NET_IP" -p 5201 -R -t $((DURATION + 2)) --connect-timeout 3000 -J >"$bjson" 2>&1 &
		bulk_pid=$!
		sleep 1 # the download fills the cap before the call starts
	fi
	timeout $((DURATION + 30)) ip netns exec "$NS_DEV" \
		busybox ping -s 132 -i 0.02 -c $((DURATION * 50)) -W 2 -w $((DURATION + 10)) "$NET_IP" >"$ping_out" 2>&1 &
	ping_pid=$!
	if ! timeout $((DURATION + 20)) ip netns exec "$NS_DEV" \
		iperf3 -c "$NET_IP" -p 5202 -u -R -l 160 -b 64k -t "$DURATION" --connect-timeout 3000 -J >"$vjson" 2>&1; then
		log "voice $sc run $run: iperf3 failed: $(head -c 300 "$vjson")"
		start_iperf_server2
	fi
	wait "$ping_pid" || true
	if [[ -n $bulk_pid ]] && ! wait "$bulk_pid"; then
		log "voice $sc run $run: the download failed: $(head -c 300 "$bjson")"
		start_iperf_server
	fi
	python3 - "$sc" "$run" "$vjson" "$ping_out" "$bjson" "$bulk" >>"$RESULTS" <<'EOF'
import json, re, statistics, sys
sc, run, vjson, ping_out, bjson, bulk = sys.argv[1:]
out = []
try:
    r = json.load(open(vjson))["end"]["sum_received"]
    out += [("v_loss", r["lost_percent"]), ("v_jitter", r["jitter_ms"])]
except Exception:
    pass
text = open(ping_out).read()
t = sorted(float(x) for x in re.findall(r"time=([0-9.]+) ms", text))
m = re.search(r"(\d+) packets transmitted, (\d+) packets received", text)
if m and int(m.group(1)):
    out.append(("p_loss", 100 * (1 - int(m.group(2)) / int(m.group(1)))))
if t:
    out += [("p_med", statistics.median(t)), ("p_p95", t[min(len(t) - 1, int(0.95 * len(t)))]), ("p_max", t[-1])]
if bulk == "1":
    try:
        out.append(("bulk_mbps", json.load(open(bjson))["end"]["sum_received"]["bits_per_second"] / 1e6))
    except Exception:
        pass
for k, v in out:
    print(f"{sc}\t{k}\t{run}\t{v}")
EOF
}

# pb PATH RUN NAME CMD [ARGS]: one pathbench measurement from the device,
# through Outline if PATH is outline; records its metrics (prefixed ol_)
# and, for TCP, the server's CPU.
pb() {
	local path=$1 run=$2 name=$3 cmd=$4 port out=$tmp/pb.$1.$2.$3.json s0=0 s1=0
	shift 4
	case $cmd in
	tcp-up) port=$PB_SINK ;;
	tcp-down) port=$PB_SOURCE ;;
	voice) port=$PB_ECHO ;;
	esac
	local via=()
	[[ $path != outline ]] || via=(-key "$OL_KEY" -ca "$tmp/ca.pem")
	[[ -z $SPID ]] || s0=$(cpu_ticks "$SPID")
	if ! timeout $((DURATION + 60)) ip netns exec "$NS_DEV" "$tmp/pathbench" "$cmd" -to "$NET_IP:$port" \
		-for "${DURATION}s" "${via[@]}" "$@" >"$out" 2>&1; then
		log "$path run $run $name: pathbench $cmd failed: $(head -c 300 "$out")"
		return 0
	fi
	[[ -z $SPID ]] || s1=$(cpu_ticks "$SPID")
	python3 - "$out" "$name" "$path" "$run" "$((s1 - s0))" "$HZ" >>"$RESULTS" <<'EOF'
import json, sys
f, name, path, run, sd, hz = sys.argv[1:]
r = json.load(open(f))
out = []
if "mbps" in r:
    out.append((name + "_mbps", r["mbps"]))
    scpu = int(sd) / int(hz)
    out.append((name + "_srv_cpu", scpu))
    if scpu > 0:
        out.append((name + "_mb_per_srv_cpu", r["bytes"] / 1e6 / scpu))
else:
    for k in ("loss", "p50_ms", "p95_ms", "p99_ms", "max_ms"):
        out.append((name + "_" + k, r[k]))
for k, v in out:
    print(f"{path}\tol_{k}\t{run}\t{v}")
EOF
}

# pb_voice_bulk PATH RUN: the voice stream beside a TCP download through
# the same path (started a second before, lasting until after it).
pb_voice_bulk() {
	local path=$1 run=$2 via=() bulk_pid bout=$tmp/pb.$1.$2.bulk.json
	[[ $path != outline ]] || via=(-key "$OL_KEY" -ca "$tmp/ca.pem")
	timeout $((DURATION + 60)) ip netns exec "$NS_DEV" "$tmp/pathbench" tcp-down -to "$NET_IP:$PB_SOURCE" \
		-for "$((DURATION + 2))s" "${via[@]}" >"$bout" 2>&1 &
	bulk_pid=$!
	sleep 1
	pb "$path" "$run" vbulk voice
	if wait "$bulk_pid"; then
		python3 - "$bout" "$path" "$run" >>"$RESULTS" <<'EOF'
import json, sys
f, path, run = sys.argv[1:]
print(f"{path}\tol_vbulk_bulk_mbps\t{run}\t{json.load(open(f))['mbps']}")
EOF
	else
		log "$path run $run: the download beside the voice stream failed: $(head -c 300 "$bout")"
	fi
}

PATHS=(raw wg-go tariq tq+lim)
OL_PATHS=(wg-go tariq outline)
voip_bps=$((VOIP_PPS * 200 * 8))
for ((run = 1; run <= RUNS; run++)); do
	if [[ " $TESTS " == *" tcp "* || " $TESTS " == *" udp "* || " $TESTS " == *" ping "* ]]; then
		for ((k = 0; k < ${#PATHS[@]}; k++)); do
			p=${PATHS[(k + run - 1) % ${#PATHS[@]}]}
			log "run $run/$RUNS: $p"
			use_path "$p" || continue
			if [[ " $TESTS " == *" tcp "* ]]; then
				iperf "$p" "$run" tcp_up
				iperf "$p" "$run" tcp_down -R
			fi
			if [[ " $TESTS " == *" udp "* ]]; then
				iperf "$p" "$run" voip -u -l 200 -b "$voip_bps"
				iperf "$p" "$run" udpmax -u -l 200 -b 0
			fi
			if [[ " $TESTS " == *" ping "* ]]; then
				pinger "$p" "$run"
			fi
		done
	fi
	if ((OUTLINE)); then
		for ((k = 0; k < ${#OL_PATHS[@]}; k++)); do
			p=${OL_PATHS[(k + run - 1) % ${#OL_PATHS[@]}]}
			log "run $run/$RUNS: pathbench $p"
			use_path "$p" || continue
			pb "$p" "$run" tcp_up tcp-up
			pb "$p" "$run" tcp_down tcp-down
			pb "$p" "$run" voice voice
			pb_voice_bulk "$p" "$run"
		done
	fi
	if [[ " $TESTS " == *" voice "* ]]; then
		log "run $run/$RUNS: voice beside a download, capped at $CAP and uncapped"
		use_path tariq || continue
		voice "$run" uncapped-idle none 0
		voice "$run" uncapped-bulk none 1
		voice "$run" capped-idle "$CAP" 0
		voice "$run" capped-bulk "$CAP" 1
		tq_limits --rate none
	fi
done

if ((PERF)); then
	for p in wg-go tariq; do
		log "perf: $p server during TCP up"
		use_path "$p" || continue
		timeout $((DURATION + 30)) perf record -q -F 499 -g -p "$SPID" -o "$tmp/$p.perf" -- sleep "$DURATION" >/dev/null 2>&1 &
		perf_pid=$!
		iperf "$p" perf tcp_up
		wait "$perf_pid" || log "perf record for $p failed"
		perf report -q -i "$tmp/$p.perf" --stdio --no-children --sort dso,sym -g none 2>/dev/null |
			grep -v '^$' >"$tmp/$p.perf.all" || true
		awk '$1 + 0 >= 1.5 && n++ < 20' "$tmp/$p.perf.all" >"$tmp/$p.perf.txt"
		awk '/tariq-vpn\/tariq/ { s += $1 } END { printf "    %.2f%% in github.com/tariq-vpn/tariq code (all its symbols together)\n", s }' \
			"$tmp/$p.perf.all" >>"$tmp/$p.perf.txt"
	done
fi
ip -n "$NS_DEV" route flush table 51820 2>/dev/null || true

# A tariq process that died mid-run would make its numbers meaningless.
kill -0 "$TQ_PID" 2>/dev/null || { cat "$tmp/tariq.log" >&2; die "tariq serve exited during the benchmark"; }

# ---------------------------------------------------------------- table
echo "medians over $RUNS runs (Mbit/s, packets/s, %, ms, CPU-s per ${DURATION}s test; MB = 1e6 bytes)"
python3 - "$RESULTS" "$VOIP_PPS" "$TESTS" "$CAP" <<'EOF'
import collections, statistics, sys
f, voip = sys.argv[1], sys.argv[2]
vals = collections.defaultdict(list)
for line in open(f):
    path, metric, run, v = line.rstrip("\n").split("\t")
    if run == "perf":
        continue
    vals[(path, metric)].append(float(v))
rows = [
    ("tcp_up_mbps", "TCP device->inet Mbit/s", "+"),
    ("tcp_down_mbps", "TCP inet->device Mbit/s", "+"),
    ("voip_pps", f"UDP 200B @{voip}pps: delivered pps", "+"),
    ("voip_loss", f"UDP 200B @{voip}pps: loss %", "-"),
    ("voip_jitter", f"UDP 200B @{voip}pps: jitter ms", "-"),
    ("udpmax_pps", "UDP 200B max: delivered pps", "+"),
    ("udpmax_loss", "UDP 200B max: loss %", "-"),
    ("rtt_med", "ping 200B rtt median ms", "-"),
    ("rtt_avg", "ping 200B rtt avg ms", "-"),
    ("ping_loss", "ping loss %", "-"),
    ("tcp_up_srv_cpu", "TCP up: server CPU-s", "-"),
    ("tcp_up_mb_per_srv_cpu", "TCP up: MB per server CPU-s", "+"),
    ("tcp_down_srv_cpu", "TCP down: server CPU-s", "-"),
    ("tcp_down_mb_per_srv_cpu", "TCP down: MB per server CPU-s", "+"),
    ("tcp_up_mb_per_cli_cpu", "TCP up: MB per client CPU-s", "+"),
    ("tcp_down_mb_per_cli_cpu", "TCP down: MB per client CPU-s", "+"),
    ("udpmax_kpkt_per_srv_cpu", "UDP max: kpkt per server CPU-s", "+"),
]
paths = ["raw", "wg-go", "tariq", "tq+lim"]
def med(p, m):
    v = vals.get((p, m))
    return statistics.median(v) if v else None
def fmt(x):
    if x is None:
        return "-"
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.2f}" if a >= 1 else f"{x:.3f}"
def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"
w = max(len(r[1]) for r in rows) + 2
if any(vals.get((p, k)) for p in paths for k, _, _ in rows):
    print(f"{'metric':<{w}}{'raw':>10}{'wg-go':>10}{'tariq':>10}{'tq+lim':>10}{'tq/wg':>8}{'tq/raw':>8}{'lim/tq':>8}  better")
for key, label, better in rows:
    m = {p: med(p, key) for p in paths}
    if all(v is None for v in m.values()):
        continue
    print(f"{label:<{w}}{fmt(m['raw']):>10}{fmt(m['wg-go']):>10}{fmt(m['tariq']):>10}{fmt(m['tq+lim']):>10}"
          f"{ratio(m['tariq'], m['wg-go']):>8}{ratio(m['tariq'], m['raw']):>8}{ratio(m['tq+lim'], m['tariq']):>8}"
          f"  {'higher' if better == '+' else 'lower'}")
asked = set(sys.argv[3].split())
group = {"tcp": "tcp", "voi": "udp", "udp": "udp", "rtt": "ping", "pin": "ping"}
missing = [f"{p}:{k}" for k, _, _ in rows[:10] for p in paths
           if group[k[:3]] in asked and not vals.get((p, k))]
if missing:
    print("missing (a test failed every run):", ", ".join(missing))
scen = [("uncapped-idle", "uncapped, no download"), ("uncapped-bulk", "uncapped, download"),
        ("capped-idle", f"capped {sys.argv[4]}, no download"), ("capped-bulk", f"capped {sys.argv[4]}, download")]
cols = [("bulk_mbps", "download Mbit/s"), ("v_loss", "voice loss %"), ("v_jitter", "jitter ms"),
        ("p_loss", "ping loss %"), ("p_med", "rtt med ms"), ("p_p95", "rtt p95 ms"), ("p_max", "rtt max ms")]
olrows = [
    ("ol_tcp_up_mbps", "TCP device->inet Mbit/s", "+"),
    ("ol_tcp_down_mbps", "TCP inet->device Mbit/s", "+"),
    ("ol_tcp_up_srv_cpu", "TCP up: server CPU-s", "-"),
    ("ol_tcp_up_mb_per_srv_cpu", "TCP up: MB per server CPU-s", "+"),
    ("ol_tcp_down_srv_cpu", "TCP down: server CPU-s", "-"),
    ("ol_tcp_down_mb_per_srv_cpu", "TCP down: MB per server CPU-s", "+"),
    ("ol_voice_loss", "voice: loss %", "-"),
    ("ol_voice_p50_ms", "voice: RTT median ms", "-"),
    ("ol_voice_p95_ms", "voice: RTT p95 ms", "-"),
    ("ol_voice_p99_ms", "voice: RTT p99 ms", "-"),
    ("ol_voice_max_ms", "voice: RTT max ms", "-"),
    ("ol_vbulk_bulk_mbps", "beside a download: download Mbit/s", "+"),
    ("ol_vbulk_loss", "beside a download: voice loss %", "-"),
    ("ol_vbulk_p50_ms", "beside a download: voice RTT median ms", "-"),
    ("ol_vbulk_p99_ms", "beside a download: voice RTT p99 ms", "-"),
    ("ol_vbulk_max_ms", "beside a download: voice RTT max ms", "-"),
]
olpaths = ["wg-go", "tariq", "outline"]
if any(vals.get((p, k)) for p in olpaths for k, _, _ in olrows):
    print()
    print("Outline against WireGuard, one client (pathbench) on every path; medians over runs")
    w = max(len(r[1]) for r in olrows) + 2
    print(f"{'metric':<{w}}{'wg-go':>10}{'tariq':>10}{'outline':>10}{'ol/wg':>8}{'ol/tq':>8}  better")
    for key, label, better in olrows:
        m = {p: med(p, key) for p in olpaths}
        if all(v is None for v in m.values()):
            continue
        print(f"{label:<{w}}{fmt(m['wg-go']):>10}{fmt(m['tariq']):>10}{fmt(m['outline']):>10}"
              f"{ratio(m['outline'], m['wg-go']):>8}{ratio(m['outline'], m['tariq']):>8}  {'higher' if better == '+' else 'lower'}")
if any(vals.get((s, c)) for s, _ in scen for c, _ in cols):
    print()
    print("voice beside a bulk download in the same tunnel (tariq; 160 B at 50/s each way; medians over runs)")
    w = max(len(l) for _, l in scen) + 2
    print(f"{'':<{w}}" + "".join(f"{l:>17}" for _, l in cols))
    for s, label in scen:
        print(f"{label:<{w}}" + "".join(f"{fmt(med(s, c)):>17}" for c, _ in cols))
EOF
echo
echo "samples per metric and path: $RUNS (a failed test is left out); per-run values: --out FILE"
if ((PERF)); then
	for p in wg-go tariq; do
		echo
		echo "perf: $p server process, self time during one TCP-up test (symbols >= 1.5%):"
		cat "$tmp/$p.perf.txt" 2>/dev/null || echo "(none)"
	done
fi
