#!/usr/bin/env bash
# Install tariq on a Debian/Ubuntu server: the binary, its system user, the
# hardened systemd unit, and a config written by `tariq init` if there is
# none. Run it again to upgrade: whatever is already in place and unchanged
# is left alone, so a second run with the same binary changes nothing.
#
#   sudo scripts/install.sh [--host NAME] [--email E] [--binary PATH] [--root DIR]
#
#   --host    name or IP clients dial (default: the address of the default route)
#   --email   contact for Let's Encrypt; with a DNS --host turns on ACME
#   --binary  the tariq binary to install (default: built from this checkout)
#   --root    install into DIR instead of / (for tests); nothing is started
set -euo pipefail

host="" email="" binary="" root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --host) host="$2"; shift 2 ;;
    --email) email="$2"; shift 2 ;;
    --binary) binary="$2"; shift 2 ;;
    --root) root="${2%/}"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "$0")/.." && pwd)"
say() { printf '%s\n' "$*"; }
changed=0

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo)" >&2
  exit 1
fi

# The binary: given, or built from this checkout.
if [ -z "$binary" ]; then
  command -v go >/dev/null || { echo "install.sh: no --binary and no Go to build one" >&2; exit 1; }
  tmpdir="$(mktemp -d)"; trap 'rm -rf "$tmpdir"' EXIT
  (cd "$here" && go build -trimpath -o "$tmpdir/tariq" ./cmd/tariq)
  binary="$tmpdir/tariq"
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

# install_file SRC DEST MODE: copy only when different.
install_file() {
  local src="$1" dest="$root$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
    return 0
  fi
  mkdir -p "$(dirname "$dest")"
  install -m "$mode" "$src" "$dest"
  say "installed $2"
  changed=1
}

install_file "$binary" /usr/local/bin/tariq 755
install_file "$here/systemd/tariq.service" /etc/systemd/system/tariq.service 644
install_file "$here/systemd/tariq.sysusers" /usr/lib/sysusers.d/tariq.conf 644

# The system user the unit runs as.
if ! grep -q '^tariq:' "$root/etc/passwd" 2>/dev/null; then
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers ${root:+--root="$root"} "$root/usr/lib/sysusers.d/tariq.conf" >/dev/null 2>&1
  else
    useradd ${root:+--root "$root"} --system --home-dir /var/lib/tariq --no-create-home --shell /usr/sbin/nologin tariq
  fi
  say "created system user tariq"
  changed=1
fi
gid="$(awk -F: '$1 == "tariq" {print $3}' "$root/etc/group")"

# The config: written once, never overwritten.
conf="$root/etc/tariq/tariq.yaml"
if [ ! -f "$conf" ]; then
  if [ -z "$host" ]; then
    host="$(ip -4 route get 192.0.2.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -1)"
    [ -n "$host" ] || host="$(ip -6 route get 2001:db8::1 2>/dev/null | sed -n 's/.* src \([0-9a-f:]*\).*/\1/p' | head -1)"
    [ -n "$host" ] || { echo "install.sh: cannot detect this server's address; pass --host" >&2; exit 1; }
    say "public host: $host (detected; pass --host to choose a DNS name)"
  fi
  mkdir -p "$(dirname "$conf")"
  "$root/usr/local/bin/tariq" init --host "$host" ${email:+--email "$email"} --config "$conf" >/dev/null
  changed=1
  say "wrote /etc/tariq/tariq.yaml"
fi
# The daemon's group may read it; nobody else.
if [ "$(stat -c '%g %a' "$conf")" != "$gid 640" ]; then
  chown "0:$gid" "$conf"
  chmod 640 "$conf"
  changed=1
fi
chown "0:$gid" "$(dirname "$conf")"
chmod 750 "$(dirname "$conf")"

# The unit: enabled, and (on a live system) started or restarted on upgrade.
if [ -n "$root" ]; then
  if [ ! -L "$root/etc/systemd/system/multi-user.target.wants/tariq.service" ]; then
    systemctl --root="$root" enable tariq.service >/dev/null 2>&1
    changed=1
  fi
elif [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if ! systemctl is-enabled --quiet tariq.service; then
    systemctl enable tariq.service
  fi
  if ! systemctl is-active --quiet tariq.service; then
    systemctl start tariq.service
  elif [ "$changed" = 1 ]; then
    systemctl restart tariq.service
  fi
else
  say "systemd is not running here: start it yourself with: tariq serve --config /etc/tariq/tariq.yaml"
fi

if [ "$changed" = 0 ]; then
  say "tariq is installed and up to date; nothing changed"
fi
say ""
say "Open these ports in the server's firewall (and your provider's):"
"$root/usr/local/bin/tariq" ports --config "$conf" --data-dir "$root/var/lib/tariq" | sed 's/^/  /'
say ""
say "Next: add the first family member's device and show its QR code:"
say "  sudo tariq peer add mom --qr"
