#!/usr/bin/env bash
# Builds PgBouncer from Debian's source package (the version in versions.env)
# into a version-keyed cache outside the work tree, for the client tests: the
# pgbouncer.ini Headroom renders for its default image runs in a PgBouncer that
# accepts exactly the same settings (see the version's comment in versions.env). Debian 12's own 1.18 (apt) is the oldest version
# the tests run. Skipped when already built; prints the binary's path on stdout,
# the timing goes to stderr and to $CACHE/build-times.log.
#
# Source: a `deb-src` stanza (suites trixie and sid) on the mirror the machine's
# apt already uses, `apt-get source --download-only` (apt checks the files'
# hashes against the signed Sources index), `dpkg-source -x` (Debian's patches
# applied), upstream's configure + make. Build dependencies come from apt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
version=${1:-$PGBOUNCER_DEBIAN_VERSION}
dir="$cache/pgbouncer-$version"
out="$dir/pgbouncer"
[[ -x "$out" ]] && { echo "$out"; exit 0; }

sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
sources=/etc/apt/sources.list.d/headroom-deb-src.sources
build_deps=(libevent-dev libssl-dev libc-ares-dev pkg-config dpkg-dev)

mirror() {
  # The first Debian archive URI apt is configured with (deb822 or one-line format).
  { awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
  } | awk '/\/debian\/?$/ && !found {print; found = 1}'
}

have_source() {
  # Not grep -q: it would close the pipe early, and pipefail would count that a failure.
  apt-cache showsrc pgbouncer 2>/dev/null | grep -Fx "Version: $version" >/dev/null
}

start=$SECONDS
echo "build-pgbouncer: building PgBouncer $version from Debian's source package" >&2
if ! have_source; then
  if [[ ! -f $sources ]]; then
    uri=$(mirror)
    [[ -n $uri ]] || { echo "build-pgbouncer: no Debian mirror in apt's sources" >&2; exit 1; }
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie sid\nComponents: main\nSigned-By: %s\n' \
      "$uri" /usr/share/keyrings/debian-archive-keyring.gpg | $sudo tee "$sources" >/dev/null
  fi
  # Only the source indices: the binary lists stay as they are.
  $sudo apt-get update -qq -o Dir::Etc::SourceList="$sources" -o Dir::Etc::SourceParts=- \
    -o APT::Get::List-Cleanup=0
  have_source || { echo "build-pgbouncer: Debian has no source package pgbouncer $version" >&2; exit 1; }
fi
missing=()
for pkg in "${build_deps[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
(
  cd "$tmp"
  # As root, apt warns that its _apt user cannot write here and downloads anyway.
  apt-get source --download-only -qq "pgbouncer=$version" >fetch.log 2>&1 \
    || { cat fetch.log >&2; exit 1; }
  # dpkg-source checks the files against the .dsc, whose hash apt checked against
  # the signed Sources index (the maintainer's own key is not on this machine).
  dpkg-source -x ./pgbouncer_"${version#*:}".dsc src >extract.log 2>&1 \
    || { cat extract.log >&2; exit 1; }
  cd src
  ./configure --with-cares --without-systemd >configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }
  make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
  ./pgbouncer --version >&2
)
mv "$tmp/src/pgbouncer" "$out"
echo "$(date -u +%FT%TZ) pgbouncer-$version $((SECONDS - start))s" >>"$cache/build-times.log"
echo "build-pgbouncer: built in $((SECONDS - start))s" >&2
echo "$out"
