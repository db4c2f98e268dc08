#!/usr/bin/env bash
# Installs the real OpenFeature SDKs and their stock OFREP providers that the
# conformance tests (tests/tests/ofrep.rs) drive against a real agent, into
# project-local, git-ignored folders:
#
#   .tools/py-ofrep   a Python venv: openfeature-sdk + openfeature-provider-ofrep (PyPI)
#   .tools/js-ofrep   node_modules: @openfeature/server-sdk + @openfeature/ofrep-provider (npm)
#
# Every version is pinned here, and nowhere else. Idempotent: a folder whose
# stamp file names the same pins is left alone; anything else is built in a
# fresh folder and swapped in only once it works, so an interrupted run never
# leaves a half-installed SDK at the stable path. Needs python3 (with venv)
# and node/npm, and the registries (no network: the tests fail and say so).
#
# Usage: scripts/install-ofrep-sdks.sh   (or: make tools)
set -euo pipefail

# Python: the SDK, the provider, and everything they pull in, pinned.
py_pins=(
    "openfeature-sdk==0.10.0"
    "openfeature-provider-ofrep==0.3.0"
    "requests==2.32.5"
    "urllib3==2.8.0"
    "certifi==2026.10.19.post1"
    "charset-normalizer==3.5.3"
    "idna==3.20"
)
# JavaScript: the server SDK, the stock server provider, the peers they
# need and their one dependency, pinned exactly (npm --save-exact).
js_pins=(
    "@openfeature/server-sdk@1.23.0"
    "@openfeature/core@1.12.0"
    "@openfeature/ofrep-provider@0.1.3"
    "@openfeature/ofrep-core@0.1.4"
    "tslib@2.9.1"
)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

# The stamp a folder carries: the pins it was built from.
stamp_of() { printf '%s\n' "$@"; }

up_to_date() { # DIR PINS...
    local dir=$1
    shift
    [[ -f "$dir/.pins" && "$(cat "$dir/.pins")" == "$(stamp_of "$@")" ]]
}

install_py() {
    local dest="$tools/py-ofrep"
    if up_to_date "$dest" "${py_pins[@]}" && "$dest/bin/python" -c 'import openfeature.contrib.provider.ofrep' 2>/dev/null; then
        echo "Python OFREP SDK already installed at ${dest#"$root"/}"
        return
    fi
    # A venv records its own path: build it where it will live, after
    # moving any old one aside (put back if this run fails).
    local old
    old=$(mktemp -d "$tools/py-ofrep.old.XXXXXX")
    if [[ -d "$dest" ]]; then mv "$dest" "$old/"; fi
    restore() {
        rm -rf "$dest"
        if [[ -d "$old/py-ofrep" ]]; then mv "$old/py-ofrep" "$dest"; fi
        rm -rf "$old"
    }
    if ! python3 -m venv "$dest"; then
        restore
        echo "error: python3 -m venv failed: python3 with venv and ensurepip is needed (Debian: apt-get install python3-venv)" >&2
        exit 1
    fi
    if ! PIP_ROOT_USER_ACTION=ignore "$dest/bin/python" -m pip install --quiet \
        --disable-pip-version-check --no-input "${py_pins[@]}"; then
        restore
        echo "error: could not install ${py_pins[*]} from PyPI (is the registry reachable?)" >&2
        exit 1
    fi
    rm -rf "$old"
    stamp_of "${py_pins[@]}" >"$dest/.pins"
    echo "installed ${py_pins[*]} at ${dest#"$root"/}"
}

install_js() {
    local dest="$tools/js-ofrep"
    if up_to_date "$dest" "${js_pins[@]}" && [[ -d "$dest/node_modules/@openfeature/ofrep-provider" ]]; then
        echo "JavaScript OFREP SDK already installed at ${dest#"$root"/}"
        return
    fi
    if ! command -v npm >/dev/null; then
        echo "error: node and npm are needed for the JavaScript OFREP SDK" >&2
        exit 1
    fi
    local stage
    stage=$(mktemp -d "$tools/js-ofrep.XXXXXX")
    # Removed however the function ends, a failed install included.
    trap 'rm -rf "$stage"' EXIT
    printf '{"name": "phasegate-ofrep-conformance", "private": true}\n' >"$stage/package.json"
    if ! npm install --prefix "$stage" --save-exact --no-audit --no-fund --loglevel=error \
        "${js_pins[@]}" >/dev/null; then
        echo "error: could not install ${js_pins[*]} from npm (is the registry reachable?)" >&2
        exit 1
    fi
    stamp_of "${js_pins[@]}" >"$stage/.pins"
    rm -rf "$dest"
    mv "$stage" "$dest"
    trap - EXIT
    echo "installed ${js_pins[*]} at ${dest#"$root"/}"
}

install_py
install_js
