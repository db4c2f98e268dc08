#!/usr/bin/env bash
# Installs kubernetes-validate, which checks the manifests of
# deploy/kubernetes/ against the Kubernetes schemas, into a project-local,
# git-ignored virtualenv: .tools/kubernetes-validate/, with the command at
# .tools/bin/kubernetes-validate.
#
# The schemas ship inside the package, so once installed it validates
# offline (the test suite never touches the network). Idempotent: does
# nothing when the pinned version is already there.
#
# Usage: scripts/install-kubernetes-validate.sh   (or: make tools)
set -euo pipefail

version=1.37.0
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
venv="$tools/kubernetes-validate"
link="$tools/bin/kubernetes-validate"

installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null
}

if [[ -x "$link" && "$(installed_version)" == "$version" ]]; then
    echo "kubernetes-validate $version already installed at ${link#"$root"/}"
    exit 0
fi

if ! python3 -m venv --help >/dev/null 2>&1; then
    echo "error: python3 with the venv module is needed to install kubernetes-validate==$version" >&2
    exit 1
fi

mkdir -p "$tools/bin"
# Made afresh at its final place (a virtualenv records its path). A run
# cut short leaves no working pinned version, so the next run starts over.
rm -rf "$venv"
python3 -m venv "$venv"
PIP_ROOT_USER_ACTION=ignore "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input "kubernetes-validate==$version"
got=$(installed_version)
if [[ "$got" != "$version" ]]; then
    echo "error: installed kubernetes-validate reports version '${got:-?}', expected $version" >&2
    exit 1
fi
ln -sfn ../kubernetes-validate/bin/kubernetes-validate "$link"
echo "installed kubernetes-validate $version at ${link#"$root"/}"
