#!/usr/bin/env bash
# bench-cluster.sh: several tariq nodes on one etcd cluster, measured.
#
#   sudo scripts/bench-cluster.sh            (from the repository root, or anywhere)
#   (If sudo's secure_path hides go: sudo env "PATH=$PATH" scripts/bench-cluster.sh)
#
# Runs the Go benchmarks in cmd/tariq/cluster_bench_test.go on the cluster
# lab of the end-to-end tests (cmd/tariq/cluster_lab_test.go): a
# three-member etcd cluster (etcd v3.7.3, built once from the module proxy)
# and three `tariq serve` nodes, built from this checkout, each in a network
# namespace of its own on one bridge; everything is torn down afterwards.
#
#   propagation  ADDS times: `tariq peer add` on one node (round the three),
#                then upstream wireguard-go handshakes with the new device's
#                keys against the next node; time from the CLI's start to a
#                completed handshake, p50 and p99, and the CLI's own part.
#                The client re-creates its peer every 20 ms until the
#                handshake completes (a node that does not know the device
#                yet drops the initiation, and wireguard-go alone would wait
#                5 s before trying again), so each sample is exact to 20 ms.
#   throughput   `tariq peer add` with the file store (one server) and with
#                etcd (three nodes, the adds spread over them): ADDS one at
#                a time, then ADDS more PARALLEL at once; both through the
#                CLI (a process in the node's namespace, as an operator
#                runs it) and through the admin API alone (the daemon's own
#                work: the store's write and the live apply).
#
# Knobs (environment): ADDS=100 PARALLEL=8 BENCH="propagation throughput".
# Everything shares this machine's CPUs (etcd's three members, the nodes,
# the client): absolute numbers are a floor; compare file against etcd.
set -euo pipefail

ADDS=${ADDS:-100}
PARALLEL=${PARALLEL:-8}
BENCH=${BENCH:-"propagation throughput"}

log() { printf '%s\n' "bench: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root (network namespaces, TUN, nftables)"
command -v go >/dev/null || die "go is not on PATH (sudo env \"PATH=\$PATH\" $0)"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mktemp /tmp/bench-cluster.XXXXXX)
trap 'rm -f "$out"' EXIT

pattern=()
for b in $BENCH; do
	case $b in
	propagation) pattern+=(BenchmarkClusterAddToHandshake) ;;
	throughput) pattern+=(BenchmarkPeerAddThroughput) ;;
	*) die "unknown BENCH item $b (propagation, throughput)" ;;
	esac
done
regex="^($(IFS='|'; echo "${pattern[*]}"))\$"

log "running $regex with ADDS=$ADDS PARALLEL=$PARALLEL (a few minutes)"
(cd "$repo" && CI=true go test -count=1 -run '^$' -bench "$regex" -benchtime=1x -timeout 30m ./cmd/tariq \
	-args -cluster.adds="$ADDS" -cluster.parallel="$PARALLEL") >"$out" 2>&1 || {
	cat "$out" >&2
	die "the benchmark failed"
}

# A benchmark line is: name, iterations, ns/op, then value/unit pairs.
awk -v adds="$ADDS" -v par="$PARALLEL" '
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 5; i < NF; i += 2) v[name, $(i + 1)] = $i
	names[name] = 1
}
END {
	p = "BenchmarkClusterAddToHandshake"
	if ((p, "adds") in v) {
		printf "\npeer add on one node -> handshake on another (3 nodes, 3-member etcd, %d adds)\n", v[p, "adds"]
		printf "  %-34s %8s %8s\n", "", "p50 ms", "p99 ms"
		printf "  %-34s %8.1f %8.1f\n", "CLI start -> handshake", v[p, "add-to-handshake-p50-ms"], v[p, "add-to-handshake-p99-ms"]
		printf "  %-34s %8.1f %8.1f\n", "  the CLI itself", v[p, "cli-p50-ms"], v[p, "cli-p99-ms"]
		printf "  %-34s %8.1f %8.1f\n", "  CLI returned -> handshake", v[p, "cli-return-to-handshake-p50-ms"], v[p, "cli-return-to-handshake-p99-ms"]
	}
	t = "BenchmarkPeerAddThroughput/store="
	if ((t "file/way=cli", "adds/s-sequential") in v) {
		printf "\npeer add throughput (a fresh network each: %d adds one at a time, then %d more, %d at once;\n", adds, adds, par
		printf "file: 1 server; etcd: 3 nodes, the adds spread over them)\n"
		printf "  %-28s %10s %10s %9s\n", "", "file", "etcd", "etcd/file"
		split("adds/s-sequential adds/s-" par "-parallel add-p50-ms add-p99-ms", m, " ")
		for (w = 1; w <= 2; w++) {
			way = (w == 1) ? "cli" : "api"
			for (j = 1; j <= 4; j++) {
				f = v[t "file/way=" way, m[j]]; e = v[t "etcd/way=" way, m[j]]
				printf "  %-28s %10.1f %10.1f %9.2f\n", way " " m[j], f, e, (f > 0 ? e / f : 0)
			}
		}
	}
}' "$out"
