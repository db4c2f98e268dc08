#!/usr/bin/env bash
# Installs Prometheus for the end-to-end tests of metric analyses
# (tests/tests/analysis.rs start their own server on a free port). Uses
# Debian's `prometheus` package (2.42 here); only the binary is needed, so
# recommended packages are left out and the package's service is not
# started. Idempotent: does nothing when a prometheus binary is there.
#
# Usage: scripts/install-prometheus.sh   (or: make tools)
set -euo pipefail

if [[ -n "${PHASEGATE_PROMETHEUS:-}" && -x "${PHASEGATE_PROMETHEUS}" ]]; then
    echo "prometheus already installed at $PHASEGATE_PROMETHEUS"
    exit 0
fi
if command -v prometheus >/dev/null 2>&1; then
    echo "prometheus already installed at $(command -v prometheus)"
    exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "error: installing Debian's prometheus package needs root (or sudo)" >&2
        exit 1
    fi
    sudo=(sudo)
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get; install Prometheus 2.x by hand and set PHASEGATE_PROMETHEUS to its binary" >&2
    exit 1
fi

# Without an init system the package's service must not start (it would
# take port 9090 and outlive the install): a policy-rc.d that forbids
# starting services, only for the length of the install, only when none is
# there already.
policy=/usr/sbin/policy-rc.d
placed=false
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    placed=true
fi
cleanup() {
    if $placed; then "${sudo[@]}" rm -f "$policy"; fi
}
trap cleanup EXIT

install() {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends prometheus
}
# A stale package list is refreshed once.
install || { "${sudo[@]}" apt-get update -q && install; }

if ! command -v prometheus >/dev/null 2>&1; then
    echo "error: the prometheus package installed no prometheus binary" >&2
    exit 1
fi
echo "installed $(prometheus --version 2>&1 | head -n 1) at $(command -v prometheus)"
