#!/usr/bin/env bash
# Remove tariq: stop and disable the unit, remove the binary, the unit and
# the sysusers entry. The configuration (/etc/tariq) and the state
# (/var/lib/tariq: keys, peers, certificates) are kept unless --purge, which
# also removes the system user.
#
#   sudo scripts/uninstall.sh [--purge] [--root DIR]
set -euo pipefail

purge=0 root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1; shift ;;
    --root) root="${2%/}"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "uninstall.sh: run as root (sudo)" >&2
  exit 1
fi

if [ -n "$root" ]; then
  systemctl --root="$root" disable tariq.service >/dev/null 2>&1 || true
elif [ -d /run/systemd/system ]; then
  systemctl disable --now tariq.service 2>/dev/null || true
fi
rm -f "$root/usr/local/bin/tariq" "$root/etc/systemd/system/tariq.service" "$root/usr/lib/sysusers.d/tariq.conf"
[ -z "$root" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
echo "removed the tariq binary and unit"

if [ "$purge" = 1 ]; then
  rm -rf "$root/etc/tariq" "$root/var/lib/tariq"
  if grep -q '^tariq:' "$root/etc/passwd" 2>/dev/null; then
    userdel ${root:+--root "$root"} tariq 2>/dev/null || true
  fi
  echo "purged /etc/tariq, /var/lib/tariq and the tariq user"
else
  echo "kept /etc/tariq and /var/lib/tariq (run with --purge to delete keys, peers and certificates)"
fi
