#!/usr/bin/env bash
# Builds helm (HELM_VERSION in versions.env) from the Go module proxy into a
# version-keyed cache outside the work tree, for the chart's tests
# (tests/e2e/test_chart.py renders charts/headroom and the API server validates
# the result). Skipped when cached. Prints the binary's path on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
bin="$cache/helm-$HELM_VERSION"
if [[ ! -x "$bin/helm" ]]; then
  start=$SECONDS
  echo "build-helm: building helm $HELM_VERSION" >&2
  mkdir -p "$bin"
  GOBIN="$bin/.tmp" CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false -trimpath" \
    go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$bin/.tmp/helm" "$bin/helm" && rmdir "$bin/.tmp"
  echo "$(date -u +%FT%TZ) helm $((SECONDS - start))s" >>"$cache/build-times.log"
fi
echo "$bin/helm"
