#!/usr/bin/env bash
# censor-lab.sh: which of tariq's paths still carry traffic when a network
# blocks VoIP and VPNs, measured in a namespace lab with real clients.
#
#   sudo scripts/censor-lab.sh [--log FILE]
#
#   --log FILE: keep the whole test log (per-path reasons, timings, the
#               daemon's and the browser's output on failure)
# (If sudo's secure_path hides go: sudo env "PATH=$PATH" scripts/censor-lab.sh)
#
# It runs the censor lab end-to-end test, TestCensorLab in
# cmd/tariq/e2e_censor_test.go, and prints its table: the lab is that test's
# code, shared rather than copied, so what a person runs here is exactly what
# CI checks. The test builds, per run, with fresh randomly named namespaces:
#
#   device namespaces -- ISP (NAT, one censor at a time) -- server (tariq) -- internet
#
# with upstream wireguard-go (stock config), amneziawg-go (obfuscated
# config), an Outline client (outline-sdk, the Outline app's code path: a
# TCP transfer and a voice-like UDP stream) and headless Chromium
# (relay-only WebRTC calls over TURN UDP, TCP, TLS 5349 and TLS 443, and the
# invite page's reachability check) in the device network; the server is
# tariq.test, its certificate from Pebble (ACME) run inside the test. The
# censors are the nftables rulesets in
# internal/testutil/censor/ (load one with `nft -f FILE` in a router's
# namespace to try it by hand; never into a host's own ruleset), applied in
# the ISP namespace only. Everything is torn down, processes by PID, when the
# test ends; nothing touches the host's own network. About a minute and a half.
#
# Needs root, Go, and Debian's iproute2 nftables wireguard-tools chromium.
set -euo pipefail

LOG=""
usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}
while (($#)); do
	case $1 in
	--log)
		LOG=${2:?--log needs a file}
		shift 2
		;;
	-h | --help) usage 0 ;;
	*)
		echo "censor-lab.sh: unknown argument $1" >&2
		usage 2
		;;
	esac
done

cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
	echo "censor-lab.sh: run as root (network namespaces, TUN devices, nftables)" >&2
	exit 1
fi
for b in go ip nft wg chromium; do
	if ! command -v "$b" >/dev/null; then
		echo "censor-lab.sh: $b is not installed (apt-get install iproute2 nftables wireguard-tools chromium; Go from go.dev)" >&2
		exit 1
	fi
done

table=$(mktemp)
log=${LOG:-$(mktemp)}
cleanup() {
	rm -f "$table"
	[[ -n $LOG ]] || rm -f "$log"
}
trap cleanup EXIT

# CI=true: a missing prerequisite fails the test instead of skipping it.
status=0
CI=true go test ./cmd/tariq -run '^TestCensorLab$' -count=1 -v -timeout 10m \
	-args -censor-lab.table="$table" >"$log" 2>&1 || status=$?

# Per profile: what worked, how long it took, why each blocked path failed.
grep -E '^    e2e_censor_test\.go:[0-9]+: ' "$log" | sed -E 's/^    e2e_censor_test\.go:[0-9]+: //' |
	grep -vE '^censor lab:$' || true
echo
if [[ -s $table ]]; then
	cat "$table"
fi
if ((status != 0)); then
	if [[ -z $LOG ]]; then
		cat "$log"
	fi
	echo "censor-lab.sh: the lab failed (exit $status); see the log${LOG:+ in $LOG}" >&2
	exit "$status"
fi
