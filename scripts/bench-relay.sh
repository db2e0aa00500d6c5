#!/usr/bin/env bash
# bench-relay.sh: tariq's TURN relay and coturn side by side, on 127.0.0.1,
# under the same load, in one run.
#
#   sudo scripts/bench-relay.sh            (from the repository root, or anywhere)
#
# For each server in turn (never both at once, so they do not share the CPU)
# it starts a fresh server per phase and measures:
#   - throughput, in four scenarios of turnutils_uclient clients relaying
#     through channels to one turnutils_peer echo:
#       burst172   50 clients x 2000 172-byte messages, sent as fast as
#                  uclient goes (-z 0)
#       burst1200  the same with 1200-byte messages
#       voice      50 clients x 500 172-byte messages every 20 ms: 50 calls'
#                  worth of paced voice, 50 packets a second each way
#       loss       100 clients x 5000 172-byte messages every 1 ms (1000 a
#                  second each offered; uclient sends what it can), for loss
#     each RUNS times, the servers taking turns: messages relayed per second,
#     loss, uclient's average RTT, server CPU-seconds (utime+stime from
#     /proc/PID/stat), messages per CPU-second and RSS (VmRSS) at the end; the
#     table shows the run with the median messages per CPU-second, and every
#     run's figure beside it;
#   - memory: RSS idle and with HOLD live allocations each (default 1000 and
#     5000), opened and held by scripts/turnhold (pion client; uclient cannot
#     hold thousands, see scripts/turnhold/main.go), counted independently as
#     the server's own UDP sockets in the relay port range;
# then prints both tables with tariq/coturn ratios.
#
# KB/alloc is (RSS with N - RSS of the same server idle) / live allocations.
# "Messages" are echoed messages: each crossed the relay twice (client → peer,
# peer → client). uclient, the echo peer and the server share this machine's
# CPUs, so absolute numbers are a floor; compare the ratios, and run it more
# than once on a machine that is doing other work.
#
# Knobs (environment): SCENARIOS="burst172 burst1200 voice loss" (or
# "name:clients:messages:interval_ms:bytes" entries) RUNS=3
# HOLD="1000 5000" SERVERS="tariq coturn". Needs go, coturn (installed with
# apt-get when missing and running as root), /proc, bash 4.
set -euo pipefail

SCENARIOS=${SCENARIOS:-"burst172 burst1200 voice loss"}
RUNS=${RUNS:-3}
HOLD=${HOLD:-"1000 5000"}
SERVERS=${SERVERS:-"tariq coturn"}
RELAY_MIN=50000
RELAY_MAX=59999
USER_NAME=bench
USER_PASS=benchpass

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "$*"; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d /tmp/bench-relay.XXXXXX)
cd "$tmp" # nothing lands in the repository
declare -A LIVE=() # PID → what, for the trap

cleanup() {
	local pid
	for pid in "${!LIVE[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${!LIVE[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn LOG CMD...: start CMD in the background, remember its PID in $PID.
spawn() {
	local out=$1
	shift
	"$@" >"$out" 2>&1 &
	PID=$!
	LIVE[$PID]=$1
}

# reap PID: stop it (TERM, then KILL after 10 s) and wait for it.
reap() {
	local pid=$1 i
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	unset "LIVE[$pid]"
}

# ---- prerequisites ---------------------------------------------------------

if ! command -v turnserver >/dev/null || ! command -v turnutils_uclient >/dev/null; then
	[ "$(id -u)" = 0 ] || die "coturn is not installed; run as root or: apt-get install -y coturn"
	log "installing coturn"
	DEBIAN_FRONTEND=noninteractive apt-get install -y coturn >/dev/null
fi
for bin in go turnserver turnutils_uclient turnutils_peer turnutils_stunclient awk find; do
	command -v "$bin" >/dev/null || die "$bin not found"
done

# Every held allocation is a socket in the server and one in turnhold.
want_fds=65536
if [ "$(ulimit -n)" -lt "$want_fds" ]; then
	ulimit -Hn "$want_fds" 2>/dev/null || true
	ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
max_hold=0
for n in $HOLD; do [ "$n" -gt "$max_hold" ] && max_hold=$n; done
[ "$(ulimit -n)" -gt $((2 * max_hold + 1000)) ] ||
	die "open files limit $(ulimit -n) is too low for $max_hold allocations"
log "open files limit $(ulimit -n)"

log "building turnhold"
(cd "$repo" && go build -o "$tmp/turnhold" ./scripts/turnhold) || die "cannot build scripts/turnhold"
have_tariq=0
if [[ " $SERVERS " == *" tariq "* ]]; then
	log "building tariq"
	if (cd "$repo" && go build -o "$tmp/tariq" ./cmd/tariq) 2>"$tmp/build.log"; then
		have_tariq=1
	else
		log "tariq does not build; coturn only:"
		cat "$tmp/build.log" >&2
	fi
fi

# ---- helpers ---------------------------------------------------------------

port_in_use() {
	local hex
	hex=$(printf ':%04X' "$1")
	awk -v h="$hex" 'FNR > 1 && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }' \
		/proc/net/udp /proc/net/udp6 /proc/net/tcp /proc/net/tcp6
}

# free_port: a port P below the ephemeral range with P and P+1 free.
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 10000))
		port_in_use "$p" || port_in_use $((p + 1)) || { echo "$p"; return; }
	done
	die "no free port"
}

cpu_ticks() { # utime+stime of PID, in clock ticks
	local stat rest
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	# shellcheck disable=SC2086
	set -- $rest
	echo $((${12} + ${13}))
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# relay_sockets PID: the UDP sockets PID owns in the relay port range.
relay_sockets() {
	find "/proc/$1/fd" -lname 'socket:*' -printf '%l\n' 2>/dev/null |
		sed 's/^socket:\[\([0-9]*\)\]$/\1/' >"$tmp/inodes"
	awk -v lo="$(printf '%04X' $RELAY_MIN)" -v hi="$(printf '%04X' $RELAY_MAX)" '
		NR == FNR { ino[$1] = 1; next }
		FNR > 1 {
			port = "x" substr($2, length($2) - 3)
			if (port >= "x" lo && port <= "x" hi && ($10 in ino)) n++
		}
		END { print n + 0 }' "$tmp/inodes" /proc/net/udp /proc/net/udp6
}

wait_stun() { # wait_stun PORT PID: until the server answers a STUN Binding
	local i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$2" 2>/dev/null || return 1
		if timeout 2 turnutils_stunclient -p "$1" 127.0.0.1 2>/dev/null | grep -q 'reflexive addr'; then
			return 0
		fi
		sleep 0.2
	done
	return 1
}

# start_server NAME PHASE: a fresh server on a fresh port; sets SPID and SPORT.
start_server() {
	local name=$1 phase=$2
	SPORT=$(free_port)
	case $name in
	tariq)
		mkdir -p "$tmp/data"
		cat >"$tmp/tariq.yaml" <<-EOF
			server: {public_host: 127.0.0.1, data_dir: $tmp/data, admin_socket: $tmp/admin.sock, metrics_listen: ""}
			tls: {mode: self-signed}
			vpn: {enabled: false}
			web: {enabled: false}
			relay: {listen_udp: ["127.0.0.1:$SPORT"], listen_tcp: [], listen_tls: [], relay_bind: 127.0.0.1, relay_ports: $RELAY_MIN-$RELAY_MAX,
			        users: {$USER_NAME: $USER_PASS}, allow_peers: [127.0.0.1/32], max_allocations: 20000, max_allocations_per_user: 20000}
		EOF
		spawn "$tmp/$name-$phase.log" "$tmp/tariq" serve --config "$tmp/tariq.yaml"
		;;
	coturn)
		spawn "$tmp/$name-$phase.log" turnserver -n --no-cli \
			--listening-ip=127.0.0.1 --listening-port="$SPORT" --relay-ip=127.0.0.1 \
			--min-port=$RELAY_MIN --max-port=$RELAY_MAX \
			--lt-cred-mech --user="$USER_NAME:$USER_PASS" --realm=bench \
			--allow-loopback-peers --no-tls --no-dtls --no-tcp \
			--log-file="$tmp/coturn-$phase.turnlog" --simple-log --no-stdout-log \
			--pidfile="$tmp/turnserver.pid" --userdb="$tmp/turndb"
		;;
	esac
	SPID=$PID
	wait_stun "$SPORT" "$SPID" || { cat "$tmp/$name-$phase.log" >&2; die "$name did not start"; }
}

# ---- the echo peer -----------------------------------------------------------

PEER=$(free_port)
spawn "$tmp/peer.log" turnutils_peer -L 127.0.0.1 -p "$PEER"
PEER_PID=$PID
sleep 0.5
kill -0 "$PEER_PID" 2>/dev/null || { cat "$tmp/peer.log" >&2; die "turnutils_peer did not start"; }

servers=()
for s in $SERVERS; do
	[ "$s" = tariq ] && [ "$have_tariq" = 0 ] && continue
	servers+=("$s")
done
[ ${#servers[@]} -gt 0 ] || die "no server to benchmark"

declare -A R=() # results: R[server,key]
tck=$(getconf CLK_TCK)

# scenario NAME: sets SC_CLIENTS SC_MSGS SC_INTERVAL SC_SIZE for NAME, a
# built-in scenario or "name:clients:messages:interval_ms:bytes".
scenario() {
	case $1 in
	burst172) set -- "$1:50:2000:0:172" ;;
	burst1200) set -- "$1:50:2000:0:1200" ;;
	voice) set -- "$1:50:500:20:172" ;;
	loss) set -- "$1:100:5000:1:172" ;;
	esac
	IFS=: read -r SC_NAME SC_CLIENTS SC_MSGS SC_INTERVAL SC_SIZE <<<"$1"
	[ -n "${SC_SIZE:-}" ] || die "bad scenario $1: want name:clients:messages:interval_ms:bytes"
}

# ---- throughput ----------------------------------------------------------------

# load_phase runs scenario $2 against server $1 once, as run $3, into R;
# it returns 1 when uclient printed no totals (it gives up on a client
# whose ChannelBind is refused, which happens now and then when one of its
# ports was a probe allocation's a moment before).
load_phase() {
	local s=$1 run=$3 phase before after upid out secs loss rtt sent recv budget
	scenario "$2"
	phase="$SC_NAME.$run"
	budget=$((SC_MSGS * (SC_INTERVAL + 1) / 1000 + 120))
	start_server "$s" "$phase"
	before=$(cpu_ticks "$SPID")
	log "$s: $SC_NAME run $run: $SC_CLIENTS clients x $SC_MSGS x ${SC_SIZE}B every ${SC_INTERVAL}ms"
	spawn "$tmp/uclient-$s-$phase.log" timeout "$budget" turnutils_uclient -c \
		-m "$SC_CLIENTS" -n "$SC_MSGS" -z "$SC_INTERVAL" -l "$SC_SIZE" -L 127.0.0.1 \
		-u "$USER_NAME" -w "$USER_PASS" -e 127.0.0.1 -r "$PEER" -p "$SPORT" 127.0.0.1
	upid=$PID
	wait "$upid" || log "$s: turnutils_uclient exited $?"
	unset "LIVE[$upid]"
	after=$(cpu_ticks "$SPID")
	R[$s,$phase,rss]=$(rss_kb "$SPID")
	reap "$SPID"
	out="$tmp/uclient-$s-$phase.log"
	read -r sent recv < <(grep -o 'start_mclient: tot_send_msgs=[0-9]*, tot_recv_msgs=[0-9]*$' "$out" |
		tail -1 | sed 's/.*tot_send_msgs=\([0-9]*\), tot_recv_msgs=\([0-9]*\)/\1 \2/') || true
	if [ -z "${sent:-}" ]; then
		tail -5 "$out" >&2
		return 1
	fi
	secs=$(sed -n 's/.*Total transmit time is \([0-9]*\).*/\1/p' "$out" | tail -1)
	loss=$(sed -n 's/.*Total lost packets [0-9]* (\([0-9.]*\)%).*/\1/p' "$out" | tail -1)
	rtt=$(sed -n 's/.*Average round trip delay \([0-9.]*\) ms.*/\1/p' "$out" | tail -1)
	R[$s,$phase,sent]=$sent
	R[$s,$phase,recv]=$recv
	R[$s,$phase,rate]=$(awk -v r="$recv" -v t="${secs:-0}" 'BEGIN { printf "%.0f", (t > 0 ? r / t : 0) }')
	R[$s,$phase,loss]=${loss:-100}
	R[$s,$phase,rtt]=${rtt:-0}
	R[$s,$phase,cpu]=$(awk -v d=$((after - before)) -v t="$tck" 'BEGIN { printf "%.2f", d / t }')
	R[$s,$phase,per]=$(awk -v r="$recv" -v c="${R[$s,$phase,cpu]}" 'BEGIN { printf "%.0f", (c > 0 ? r / c : 0) }')
}

for sc in $SCENARIOS; do
	for ((run = 1; run <= RUNS; run++)); do
		for s in "${servers[@]}"; do
			load_phase "$s" "$sc" "$run" ||
				{ log "$s: no totals from turnutils_uclient; running the phase again"; load_phase "$s" "$sc" "$run"; } ||
				die "$s: no totals from turnutils_uclient, twice"
		done
	done
done

# median_run SERVER SCENARIO: the run whose msgs/cpu_s is the median.
median_run() {
	local s=$1 name=$2 run
	for ((run = 1; run <= RUNS; run++)); do echo "${R[$s,$name.$run,per]} $run"; done |
		sort -n | awk '{ r[NR] = $2 } END { print r[int((NR + 1) / 2)] }'
}

# ---- memory with live allocations ------------------------------------------

for n in $HOLD; do
	for s in "${servers[@]}"; do
		phase="hold$n"
		start_server "$s" "$phase"
		sleep 1
		R[$s,$phase,idle]=$(rss_kb "$SPID")
		log "$s: holding $n allocations"
		spawn "$tmp/turnhold-$s-$n.log" timeout 300 "$tmp/turnhold" -server "127.0.0.1:$SPORT" \
			-user "$USER_NAME" -pass "$USER_PASS" -peer "127.0.0.1:$PEER" -n "$n" -hold 240s
		hpid=$PID
		for ((i = 0; i < 600; i++)); do
			grep -q '^allocated ' "$tmp/turnhold-$s-$n.log" && break
			kill -0 "$hpid" 2>/dev/null || break
			sleep 0.2
		done
		grep '^allocated ' "$tmp/turnhold-$s-$n.log" >&2 || { cat "$tmp/turnhold-$s-$n.log" >&2; die "$s: turnhold failed"; }
		sleep 6 # one round of packets on every allocation
		R[$s,$phase,live]=$(relay_sockets "$SPID")
		R[$s,$phase,rss]=$(rss_kb "$SPID")
		reap "$hpid"
		reap "$SPID"
	done
done
reap "$PEER_PID"

# ---- report ------------------------------------------------------------------

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
# ratio A B [MIN]: A/B, or "-" when B is 0 or either is below MIN.
ratio() { awk -v a="$1" -v b="$2" -v m="${3:-0}" 'BEGIN { if (b + 0 == 0 || a + 0 < m || b + 0 < m) print "-"; else printf "%.2f", a / b }'; }
both=0
[ ${#servers[@]} -eq 2 ] && both=1

echo
echo "Throughput: turnutils_uclient -c clients through channels to one turnutils_peer echo, 127.0.0.1; the median of $RUNS runs"
echo "(msgs/s = echoed messages / uclient's whole-second transmit time, which includes its wait for lost ones;"
echo " loss%all = lost / sent over every run; rtt from whole-ms samples, no ratio below 0.1 ms)"
printf '%-22s %-13s %8s %7s %8s %7s %6s %10s %7s  %s\n' scenario server "msgs/s" "loss%" "loss%all" "rtt_ms" "cpu_s" "msgs/cpu_s" "rss_MB" "msgs/cpu_s of every run"
for sc in $SCENARIOS; do
	scenario "$sc"
	label="$SC_NAME ${SC_CLIENTS}x${SC_MSGS}x${SC_SIZE}B/${SC_INTERVAL}ms"
	declare -A M=() L=()
	for s in "${servers[@]}"; do
		M[$s]="$SC_NAME.$(median_run "$s" "$SC_NAME")"
		p=${M[$s]}
		all="" sent=0 recv=0
		for ((run = 1; run <= RUNS; run++)); do
			all+="${R[$s,$SC_NAME.$run,per]} "
			sent=$((sent + R[$s,$SC_NAME.$run,sent])) recv=$((recv + R[$s,$SC_NAME.$run,recv]))
		done
		L[$s]=$(awk -v s="$sent" -v r="$recv" 'BEGIN { printf "%.3f", (s > 0 ? 100 * (s - r) / s : 100) }')
		printf '%-22s %-13s %8s %7.2f %8s %7.2f %6s %10s %7s  %s\n' "$label" "$s" "${R[$s,$p,rate]}" "${R[$s,$p,loss]}" "${L[$s]}" \
			"${R[$s,$p,rtt]}" "${R[$s,$p,cpu]}" "${R[$s,$p,per]}" "$(mb "${R[$s,$p,rss]}")" "$all"
	done
	if [ $both = 1 ]; then
		t=${M[tariq]} c=${M[coturn]}
		printf '%-22s %-13s %8s %7s %8s %7s %6s %10s %7s\n' "$label" "tariq/coturn" \
			"$(ratio "${R[tariq,$t,rate]}" "${R[coturn,$c,rate]}")" "-" "-" \
			"$(ratio "${R[tariq,$t,rtt]}" "${R[coturn,$c,rtt]}" 0.1)" \
			"$(ratio "${R[tariq,$t,cpu]}" "${R[coturn,$c,cpu]}")" \
			"$(ratio "${R[tariq,$t,per]}" "${R[coturn,$c,per]}")" \
			"$(ratio "${R[tariq,$t,rss]}" "${R[coturn,$c,rss]}")"
	fi
	unset M L
done

echo
echo "Memory: VmRSS idle and with live allocations (held by scripts/turnhold; live = server's UDP sockets in $RELAY_MIN-$RELAY_MAX)"
first_hold=${HOLD%% *}
hdr=$(printf '%-13s %8s' server "idle_MB")
for n in $HOLD; do hdr+=$(printf ' %8s %10s %9s' "live" "${n}_MB" "KB/alloc"); done
echo "$hdr"
for s in "${servers[@]}"; do
	line=$(printf '%-13s %8s' "$s" "$(mb "${R[$s,hold$first_hold,idle]}")")
	for n in $HOLD; do
		p="hold$n"
		per=$(awk -v a="${R[$s,$p,rss]}" -v i="${R[$s,$p,idle]}" -v n="${R[$s,$p,live]}" 'BEGIN { printf "%.1f", (n > 0 ? (a - i) / n : 0) }')
		R[$s,$p,per]=$per
		line+=$(printf ' %8s %10s %9s' "${R[$s,$p,live]}" "$(mb "${R[$s,$p,rss]}")" "$per")
	done
	echo "$line"
done
if [ $both = 1 ]; then
	line=$(printf '%-13s %8s' tariq/coturn "$(ratio "${R[tariq,hold$first_hold,idle]}" "${R[coturn,hold$first_hold,idle]}")")
	for n in $HOLD; do
		p="hold$n"
		line+=$(printf ' %8s %10s %9s' "-" "$(ratio "${R[tariq,$p,rss]}" "${R[coturn,$p,rss]}")" \
			"$(ratio "${R[tariq,$p,per]}" "${R[coturn,$p,per]}")")
	done
	echo "$line"
fi
