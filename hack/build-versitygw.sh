#!/usr/bin/env bash
# Builds versitygw (Apache-2.0 S3 gateway; the `builtin` storage provider's
# server and the bucket conformance tests' server) from the Go module proxy
# into a version-keyed cache outside the work tree. Skipped when already built.
# Prints the binary's path on stdout; the timing goes to stderr and to
# $CACHE/build-times.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
dir="$cache/versitygw-$VERSITYGW_VERSION"
out="$dir/versitygw"
if [[ ! -x "$out" ]]; then
  mkdir -p "$dir"
  start=$SECONDS
  echo "build-versitygw: building versitygw $VERSITYGW_VERSION" >&2
  tmp=$(mktemp -d "$dir/gobin.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" \
    go install -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION" \
    "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  mv "$tmp/versitygw" "$out"
  echo "$(date -u +%FT%TZ) versitygw $((SECONDS - start))s" >>"$cache/build-times.log"
  echo "build-versitygw: built in $((SECONDS - start))s" >&2
fi
echo "$out"
