#!/usr/bin/env bash
# Builds gitopscheck (hack/gomod/gitopscheck: our own small program around
# kstatus from sigs.k8s.io/cli-utils, the gopher-lua runtime Argo CD runs
# health checks in and the cel-go Flux evaluates healthCheckExprs with) from
# the Go module proxy into a cache outside the work tree, keyed by a hash of
# the module's files (its go.mod pins every library version). The GitOps
# tests run it. Skipped when cached. Prints the binary's path on stdout;
# timings go to stderr and to $CACHE/build-times.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module="$here/gomod/gitopscheck"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
key=$(cd "$module" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)
bin="$cache/gitopscheck-$key"
if [[ ! -x "$bin/gitopscheck" ]]; then
  start=$SECONDS
  echo "build-gitopscheck: building gitopscheck $key" >&2
  mkdir -p "$bin"
  (cd "$module" && CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" \
    go build -ldflags "-s -w" -o "$bin/gitopscheck.tmp" .)
  mv "$bin/gitopscheck.tmp" "$bin/gitopscheck"
  echo "$(date -u +%FT%TZ) gitopscheck $key $((SECONDS - start))s" >>"$cache/build-times.log"
  echo "build-gitopscheck: built in $((SECONDS - start))s" >&2
fi
echo "$bin/gitopscheck"
