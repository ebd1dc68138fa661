#!/usr/bin/env bash
# Make sure a Chromium the browser tests can drive is installed (Debian/Ubuntu `chromium` package).
# No-op when one is already there; never downloads Playwright's own browsers.
set -euo pipefail

for candidate in "${ADP_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then
    echo "== chromium: $candidate"
    exit 0
  fi
done

if ! command -v apt-get >/dev/null 2>&1; then
  echo "== chromium not found and apt-get is not available: browser tests will skip" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "== chromium not found and not root (no passwordless sudo): browser tests will skip" >&2
    exit 1
  fi
fi

echo "== installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
[ -x /usr/bin/chromium ] && echo "== chromium: /usr/bin/chromium"
