#!/usr/bin/env bash
# scripts/chromium.sh — find or install the headless Chromium that the web console's browser
# test (tests/console_browser.rs) drives with `--headless=new --dump-dom` / `--screenshot`.
#
# Owns: installing Debian's `chromium` package (and a font, so screenshots show text) with
# apt-get. Does not own: running the browser (the test does) or any other package.
#
# Usage: scripts/chromium.sh install|path
#   install  if no chromium is found (HEKTOR_CHROMIUM, then `chromium`, `chromium-browser`
#            on PATH), apt-get installs `chromium` non-interactively, as root or with
#            `sudo -n`; prints the browser's path (the last line of stdout).
#   path     prints the browser's path, or exits 1 if there is none.
#
# The test finds the browser the same way (HEKTOR_CHROMIUM, then PATH); under CI=true a
# missing browser fails it.
set -euo pipefail

find_chromium() {
    if [[ -n "${HEKTOR_CHROMIUM:-}" && -x "${HEKTOR_CHROMIUM}" ]]; then
        echo "$HEKTOR_CHROMIUM"
        return 0
    fi
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

install() {
    local found
    if found="$(find_chromium)"; then
        echo "$found"
        return 0
    fi
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then sudo=(sudo -n); fi
    local packages=(chromium)
    # A font for the screenshots; Debian's chromium does not depend on one.
    if ! dpkg-query -W -f='${Status}' fonts-dejavu-core 2>/dev/null | grep -q "install ok installed"; then
        packages+=(fonts-dejavu-core)
    fi
    echo "installing: ${packages[*]}" >&2
    local aptlog t0=$SECONDS
    aptlog="$(mktemp)"
    if ! { "${sudo[@]}" apt-get update -qq || { sleep 5 && "${sudo[@]}" apt-get update -qq; }; } >"$aptlog" 2>&1 ||
        ! DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
            "${packages[@]}" </dev/null >>"$aptlog" 2>&1; then
        cat "$aptlog" >&2
        rm -f "$aptlog"
        echo "apt-get failed" >&2
        return 1
    fi
    rm -f "$aptlog"
    echo "installed ${packages[*]} in $((SECONDS - t0)) s" >&2
    find_chromium || {
        echo "chromium installed but not found on PATH" >&2
        return 1
    }
}

case "${1:-}" in
install) install ;;
path) find_chromium ;;
*)
    echo "usage: $0 install|path" >&2
    exit 2
    ;;
esac
