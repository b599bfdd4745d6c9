#!/usr/bin/env bash
# Installs what `make run` and `make test` need on a fresh Debian machine:
# the data-plane programs the conformance tests run (pgbouncer, postgres,
# redis-server, redis-sentinel, and redis-cli, which Headroom's Redis start script
# uses), openssl for the control plane's certificates, then the
# Python venv, the Go-built control plane, helm, versitygw (the bucket conformance
# tests' S3 server), the exporters the alert tests scrape (pgbouncer_exporter,
# redis_exporter, postgres_exporter), PgBouncer of the default image's release from Debian's archive
# and the client tests' Node packages; all cached, so a re-run
# is quick.
# `hack/install-deps.sh packages` installs the Debian packages only (`make deps`).
# Every step is skipped when already done, so a re-run takes about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(pgbouncer postgresql-15 postgresql-client-15 redis-server redis-sentinel redis-tools prometheus openssl curl)
missing=()
# A Debian python3 without ensurepip cannot create the venv (pyenv's can).
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})) && ! command -v apt-get >/dev/null; then
  echo "install-deps: not a Debian machine; install these yourself: ${missing[*]}" >&2
  missing=()
fi
if ((${#missing[@]})); then
  echo "== apt-get install ${missing[*]}"
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts the packaged services; the tests run their own on free ports.
  for svc in postgresql redis-server redis-sentinel pgbouncer prometheus prometheus-node-exporter; do
    $sudo service "$svc" stop >/dev/null 2>&1 || true
  done
fi

[[ ${1:-} == packages ]] && exit 0

echo "== python venv"
make venv

# One cached build per line: each script skips what it already built, so a
# re-run takes about a second. A new tool is one more line here.
step() {
  local what=$1 start=$SECONDS
  shift
  echo "== $what"
  "$@" >/dev/null
  echo "   $what ready in $((SECONDS - start))s"
}
step "control-plane binaries" hack/build-binaries.sh
step "helm (the chart's tests)" hack/build-helm.sh
step "versitygw" hack/build-versitygw.sh
step "exporters (the alert tests)" hack/build-exporters.sh
step "pgbouncer 1.26 (Debian sid: the default image's release)" hack/build-pgbouncer.sh
step "node client packages (tests/clients)" hack/install-node-clients.sh
step "gitopscheck (kstatus, Argo CD Lua, Flux CEL: the GitOps tests)" hack/build-gitopscheck.sh
