#!/usr/bin/env bash
# Installs what the dashboard's browser tests drive (tests/tests/dashboard.rs,
# tests/browser/): Debian's `chromium` package when it is missing, and a
# pinned Playwright for Python in the project-local, git-ignored
# .tools/playwright venv. Playwright drives the system browser through
# `executable_path`; its own browser downloads are never used (an
# air-gapped machine has none), so they are skipped.
#
# Idempotent: does nothing when both are there in the right version.
#
# Usage: scripts/install-chromium.sh   (or: make tools)
set -euo pipefail

playwright_version=1.65.2
# Playwright and its one dependency, pinned together.
pins=("playwright==$playwright_version" "greenlet==3.5.6")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
venv="$tools/playwright"

if [[ -n "${PHASEGATE_CHROMIUM:-}" && -x "${PHASEGATE_CHROMIUM}" ]]; then
    echo "chromium already installed at $PHASEGATE_CHROMIUM"
elif command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null || echo '?')"
else
    # As root, or through sudo when there is one.
    as_root=(env DEBIAN_FRONTEND=noninteractive)
    [[ $(id -u) -eq 0 ]] || as_root=(sudo "${as_root[@]}")
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: no apt-get; install Chromium by hand and set PHASEGATE_CHROMIUM to its binary" >&2
        exit 1
    fi
    # The package lists may be missing or old on a fresh machine.
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
    echo "installed $(chromium --version 2>/dev/null)"
fi

# Prints the version of Playwright the venv holds, or nothing.
installed_playwright() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true
}

if [[ -x "$venv/bin/python" && "$(installed_playwright)" == "$playwright_version" ]]; then
    echo "playwright $playwright_version already installed in ${venv#"$root"/}"
    exit 0
fi

# Build the venv beside the stable path and swap it in only once it works,
# so an interrupted run never leaves a half-installed one behind.
mkdir -p "$tools"
stage=$(mktemp -d "$tools/playwright.XXXXXX")
trap 'rm -rf "$stage"' EXIT
python3 -m venv "$stage"
PIP_ROOT_USER_ACTION=ignore "$stage/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input "${pins[@]}"
rm -rf "$venv"
mv "$stage" "$venv"
trap - EXIT
# The venv's scripts name the staging path in their shebangs; only
# `bin/python` is ever run, and it finds its prefix at run time, so the
# move is harmless.
echo "installed playwright $(installed_playwright) in ${venv#"$root"/} (use ${venv#"$root"/}/bin/python)"
