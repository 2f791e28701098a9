#!/usr/bin/env bash
# Real-browser test of the chat page (GET /): headless Debian chromium driven
# by playwright-core. Builds nothing: give it the wsloop binary.
#
#   bash tests/browser/run.sh [path/to/wsloop]   (default: target/release/wsloop)
#
# Installs what it needs on a clean machine (Debian's chromium, and node if
# missing; the npm packages from package-lock.json). Never downloads a browser
# build of its own. Writes docs/screenshot.png.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${1:-$here/../../target/release/wsloop}"

fail() {
  echo "browser: $*" >&2
  echo "browser: 0 passed, 1 failed"
  exit 1
}

[ -x "$bin" ] || fail "no wsloop binary at $bin (cargo build --release --bin wsloop)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

apt_updated=""
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then
    apt-get update -qq || return 1
    apt_updated=1
  fi
  apt-get install -y -qq "$@" >/dev/null || return 1
}

if [ ! -x /usr/bin/chromium ]; then
  echo "browser: installing Debian's chromium"
  apt_install chromium || fail "could not install chromium"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser: installing node and npm"
  apt_install nodejs npm || fail "could not install node"
fi

cd "$here"
if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null || fail "npm ci failed"
else
  npm install --no-audit --no-fund --loglevel=error >/dev/null || fail "npm install failed"
fi

# test.mjs bounds every wait and the whole run (55 s); this is the backstop.
set +e
timeout -k 5 90 node test.mjs "$bin"
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  fail "test.mjs did not finish within 90 s"
fi
exit "$rc"
