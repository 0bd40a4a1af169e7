#!/usr/bin/env bash
# Install Debian's chromium (and a font) for tests/integration/test_report_chromium.py, which renders
# the HTML report headless. Idempotent: does nothing when chromium is already there.
# Needs root (or password-less sudo); otherwise it says so and exits 0, and the test skips with a
# reason, unless CUBERUN_REQUIRE_BACKENDS=1, which makes a missing chromium a failure here too.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

fail() {
  echo "install-chromium.sh: $*" >&2
  if [ "${CUBERUN_REQUIRE_BACKENDS:-0}" = 1 ]; then
    exit 1
  fi
  exit 0
}

if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  fail "not root: chromium not installed (the report test will skip); run: sudo apt-get install -y chromium"
fi
command -v apt-get >/dev/null 2>&1 || fail "no apt-get: install chromium with your package manager"

export DEBIAN_FRONTEND=noninteractive
apt=("${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 -q)
"${apt[@]}" update >/dev/null || fail "apt-get update failed"
"${apt[@]}" install -y chromium fonts-dejavu-core >/dev/null || fail "apt-get install chromium failed"
command -v chromium >/dev/null 2>&1 || fail "chromium still not found after installing it"
echo "install-chromium.sh: $(chromium --version 2>/dev/null | tail -n 1)"
