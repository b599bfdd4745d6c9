#!/usr/bin/env bash
# Builds the metric exporters Headroom's pods run (pgbouncer_exporter,
# redis_exporter, postgres_exporter), at the versions of the default images, from
# the Go module proxy into a version-keyed cache outside the work tree. The alert
# conformance tests scrape them with a real Prometheus. A binary already cached is not
# rebuilt. Prints the bin folder on stdout; timings go to stderr and to
# $CACHE/build-times.log.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
bin="$cache/exporters-pgbouncer-$PGBOUNCER_EXPORTER_VERSION-redis-$REDIS_EXPORTER_VERSION-postgres-$POSTGRES_EXPORTER_VERSION"
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath"
export CGO_ENABLED=0

log() { echo "build-exporters: $*" >&2; }

build() { # build MODULE_DIR OUTPUT MODULE PACKAGE VERSION LDFLAGS
  local dir=$1 out=$2 module=$3 pkg=$4 version=$5 ldflags=$6
  if [[ -x "$bin/$out" ]]; then return 0; fi
  # The wrapper module's go.mod/go.sum pin the exporter and its dependencies;
  # versions.env is the one place a version is chosen, so they must agree.
  if ! grep -qE "^require $module $version\$" "$here/gomod/$dir/go.mod"; then
    log "hack/gomod/$dir/go.mod does not require $module $version (versions.env); update it and run go mod tidy there"
    exit 1
  fi
  local start=$SECONDS
  log "building $out $version"
  # a temporary name of this run's own: two runs at once never write one file
  (cd "$here/gomod/$dir" && go build -ldflags "$ldflags" -o "$bin/$out.tmp.$$" "$pkg")
  mv "$bin/$out.tmp.$$" "$bin/$out"
  echo "$(date -u +%FT%TZ) $out $version $((SECONDS - start))s" >>"$cache/build-times.log"
  log "built $out in $((SECONDS - start))s"
}

common=github.com/prometheus/common/version
pgbouncer=github.com/prometheus-community/pgbouncer_exporter
build pgbouncer_exporter pgbouncer_exporter "$pgbouncer" "$pgbouncer" \
  "$PGBOUNCER_EXPORTER_VERSION" "-s -w -X $common.Version=${PGBOUNCER_EXPORTER_VERSION#v}"
redis=github.com/oliver006/redis_exporter
build redis_exporter redis_exporter "$redis" "$redis" \
  "$REDIS_EXPORTER_VERSION" "-s -w -X main.BuildVersion=${REDIS_EXPORTER_VERSION#v}"
postgres=github.com/prometheus-community/postgres_exporter
build postgres_exporter postgres_exporter "$postgres" "$postgres/cmd/postgres_exporter" \
  "$POSTGRES_EXPORTER_VERSION" "-s -w -X $common.Version=${POSTGRES_EXPORTER_VERSION#v}"
echo "$bin"
