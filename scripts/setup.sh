#!/usr/bin/env bash
# Installs what banger needs on a fresh Debian/Ubuntu machine: apt packages that are
# missing, then node modules when package-lock.json changed. Idempotent and quiet when
# there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils e2fsprogs mmdebstrap busybox-static dropbear-bin cpio zstd
  openssh-client openssh-server nftables docker-registry skopeo buildah
  python3 make g++ git ca-certificates passt shellcheck
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

# The default kernel is derived with apt-get download, which needs package lists.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
  missing+=(apt-lists)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt: ${missing[*]}"
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  # An old or empty package list makes install fail; refresh it first.
  "${sudo_cmd[@]}" apt-get update -qq
  packages=()
  for pkg in "${missing[@]}"; do [ "$pkg" = apt-lists ] || packages+=("$pkg"); done
  if [ "${#packages[@]}" -gt 0 ]; then
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  fi
  # docker-registry's package starts a system service on :5000; tests start their own.
  if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
    "${sudo_cmd[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

command -v node >/dev/null || { echo "setup: Node.js 20 or newer is required (https://nodejs.org or your distribution)" >&2; exit 1; }
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=11)?0:1)' ||
  { echo "setup: Node.js >= 20.11 is required, found $(node --version)" >&2; exit 1; }

# Reinstall node modules only when the lockfile changed since the last install.
stamp=node_modules/.banger-installed
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ]; then
  echo "setup: npm ci"
  npm ci --no-fund --no-audit --loglevel=error
  touch "$stamp"
fi
