#!/bin/sh
# Chromium for the console's browser tests: Debian's package, driven by Playwright with executable_path
# (Playwright never downloads a browser here). Idempotent; installs only when missing and running as root.
set -eu
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package) for the browser tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    echo "warning: $CHROMIUM is missing; install it (apt-get install -y chromium) or tests/console will fail" >&2
fi
