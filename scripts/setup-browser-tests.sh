#!/usr/bin/env bash
# Installs what the dashboard browser tests need: Debian's `chromium`
# (/usr/bin/chromium) and the pinned playwright-core of
# tests/browser/package-lock.json in tests/browser/node_modules.
# Idempotent: each step is skipped when already done, so a second run is
# instant. Quiet unless something fails.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="/usr/bin/chromium"
browser_dir="tests/browser"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Runs its arguments as root, through sudo only when we are not root.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

apt_install_chromium() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium >>"$log" 2>&1
}

if [ ! -x "$chromium" ]; then
    # Try without `apt-get update` first: the package lists are often fresh
    # enough, and updating them is the slow part.
    if ! apt_install_chromium; then
        if ! as_root apt-get update >>"$log" 2>&1 || ! apt_install_chromium; then
            cat "$log" >&2
            echo "setup-browser-tests: apt-get install chromium failed" >&2
            exit 1
        fi
    fi
    if [ ! -x "$chromium" ]; then
        echo "setup-browser-tests: $chromium missing after installing chromium" >&2
        exit 1
    fi
fi

if [ ! -d "$browser_dir/node_modules/playwright-core" ] ||
    [ "$browser_dir/package-lock.json" -nt "$browser_dir/node_modules/playwright-core" ]; then
    if ! (cd "$browser_dir" && npm ci --no-audit --no-fund) >>"$log" 2>&1; then
        cat "$log" >&2
        echo "setup-browser-tests: npm ci in $browser_dir failed" >&2
        exit 1
    fi
    # npm ci keeps the package's own mtimes; touch it so the check above
    # sees it as newer than the lockfile it came from.
    touch "$browser_dir/node_modules/playwright-core"
fi
