#!/usr/bin/env bash
# Puts PgBouncer of the Debian version in versions.env (the default image's
# release) into a version-keyed cache outside the work tree, for the conformance
# and client tests; Debian 12's own 1.18 (apt) is the oldest version they run.
# Skipped when already there; prints the path of an executable `pgbouncer` on
# stdout, the timing goes to stderr and to $CACHE/build-times.log.
#
# Everything comes from Debian's archive through a private apt configuration
# ($dir/apt: its own deb822 sources for $PGBOUNCER_DEBIAN_SUITE, its own lists,
# cache and an empty dpkg status; the system's apt is neither read for packages
# nor changed). apt checks every file's hash against the suite's signed index.
#
# 1. From source (preferred): `apt-get source` (.dsc, orig and Debian's patches),
#    `dpkg-source -x`, upstream's configure + make against this machine's
#    libraries (their -dev packages from the system's apt).
# 2. When the archive lists the source but does not serve it (sid's 1.26.1-1
#    .dsc and .orig answer 404 on deb.debian.org as of this writing): the suite's
#    binary package and the shared libraries it runs on, libc6 included (sid's
#    pgbouncer needs glibc >= 2.38; Debian 12 has 2.36): the library packages
#    among its Depends, and theirs, recursively, unpacked with `dpkg-deb -x`
#    into $dir/root. $dir/pgbouncer is then a wrapper that starts the binary
#    with that suite's own dynamic loader, on its libraries only (the system's
#    ld.so.cache is not consulted); the build checks that every library
#    resolves inside $dir/root. $dir/ROUTE says which route was taken,
#    $dir/packages.txt which package versions it holds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
version=${1:-$PGBOUNCER_DEBIAN_VERSION}
suite=${2:-$PGBOUNCER_DEBIAN_SUITE}
dir="$cache/pgbouncer-$version"
out="$dir/pgbouncer"
[[ -x "$out" ]] && { echo "$out"; exit 0; }

sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
build_deps=(libevent-dev libssl-dev libc-ares-dev pkg-config dpkg-dev)
arch=$(dpkg --print-architecture)
start=$SECONDS
echo "build-pgbouncer: PgBouncer $version from Debian $suite" >&2

mirror() {
  # The first Debian archive URI the system's apt uses (deb822 or one-line format).
  { awk '/^URIs:/ {print $2}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
  } | awk '/\/debian\/?$/ && !found {print; found = 1}'
}

rm -rf "$dir" && mkdir -p "$dir"
apt_root="$dir/apt"
mkdir -p "$apt_root"/{lists/partial,archives/partial,sources.list.d,preferences.d}
: >"$apt_root/status"
uri=$(mirror)
[[ -n $uri ]] || { echo "build-pgbouncer: no Debian mirror in apt's sources" >&2; exit 1; }
# Only the two indices this needs (no translations, no AppStream metadata).
cat >"$apt_root/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $uri
Suites: $suite
Components: main
Architectures: $arch
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $uri
Suites: $suite
Components: main
Targets: Sources
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
cat >"$apt_root/apt.conf" <<EOF
Dir::State "$apt_root";
Dir::State::Lists "$apt_root/lists";
Dir::State::status "$apt_root/status";
Dir::Cache "$apt_root";
Dir::Cache::Archives "$apt_root/archives";
Dir::Etc::SourceList "/dev/null";
Dir::Etc::SourceParts "$apt_root/sources.list.d";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "$apt_root/preferences.d";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
Acquire::Languages "none";
EOF
# As root, apt would hand downloads to its _apt user, who cannot write here. The
# binary caches on the command line: a configuration part may switch them off.
private_apt() {
  APT_CONFIG="$apt_root/apt.conf" "$@" -o APT::Sandbox::User="$(id -un)" \
    -o Dir::Cache::pkgcache="$apt_root/pkgcache.bin" -o Dir::Cache::srcpkgcache="$apt_root/srcpkgcache.bin"
}
private_apt apt-get update -qq >"$apt_root/update.log" 2>&1 || { cat "$apt_root/update.log" >&2; exit 1; }

tmp=$(mktemp -d "$dir/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

from_source() {
  local pkg missing=()
  for pkg in "${build_deps[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  (
    cd "$tmp"
    # dpkg-source checks the files against the .dsc, whose hash apt checked against
    # the signed Sources index (the maintainer's own key is not on this machine).
    dpkg-source -x ./pgbouncer_"${version#*:}".dsc src >extract.log 2>&1 \
      || { cat extract.log >&2; exit 1; }
    cd src
    ./configure --with-cares --without-systemd >configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }
    make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log >&2; exit 1; }
  )
  mv "$tmp/src/pgbouncer" "$out"
  echo source >"$dir/ROUTE"
}

closure() {
  # pgbouncer=$version and the library packages (Section libs, Multi-Arch same) among
  # its Depends and Pre-Depends, and theirs, recursively, as PACKAGE=VERSION: one
  # pass over the suite's Packages index (first alternative of an "a | b").
  local index
  index=$(private_apt apt-get indextargets --format '$(FILENAME)' 'Created-By: Packages')
  /usr/lib/apt/apt-helper cat-file "$index" | awk -v root=pgbouncer -v want="$version" '
    function keep() {
      if (pkg != "" && (pkg == root ? ver == want : multiarch == "same" && section == "libs")) {
        deps[pkg] = depends; versions[pkg] = ver
      }
      pkg = ver = multiarch = section = depends = ""
    }
    /^Package: / { keep(); pkg = $2 }
    /^Version: / { ver = $2 }
    /^Multi-Arch: / { multiarch = $2 }
    /^Section: / { section = $2 }
    /^(Pre-)?Depends: / { sub(/^[^:]*: /, ""); depends = depends "," $0 }
    END {
      keep()
      if (!(root in deps)) { print "no " root " " want " in the index" > "/dev/stderr"; exit 1 }
      queue[n = 1] = root; seen[root] = 1
      for (i = 1; i <= n; i++) {
        count = split(deps[queue[i]], list, ",")
        for (j = 1; j <= count; j++) {
          dep = list[j]
          sub(/\|.*/, "", dep); sub(/\(.*/, "", dep); sub(/:any/, "", dep); gsub(/[ \t]/, "", dep)
          if ((dep in deps) && !(dep in seen)) { seen[dep] = 1; queue[++n] = dep }
        }
      }
      for (i = 1; i <= n; i++) print queue[i] "=" versions[queue[i]]
    }'
}

from_binary() {
  local packages
  packages=$(closure)
  (
    cd "$tmp"
    # shellcheck disable=SC2086 # one PACKAGE=VERSION per word
    private_apt apt-get download -qq $packages >download.log 2>&1 \
      || { cat download.log >&2; exit 1; }
    for deb in ./*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
    for deb in ./*.deb; do dpkg-deb --showformat='${Package} ${Version}\n' -W "$deb"; done \
      | sort >"$dir/packages.txt"
  )
  local loader libdir
  loader=$(cd "$dir/root" && find . -name 'ld-linux*.so.*' -type f -printf '%P\n' | sort | head -1)
  [[ -n $loader ]] || { echo "build-pgbouncer: no dynamic loader in $suite's libc6" >&2; exit 1; }
  # Debian keeps every shared library beside the loader (/usr/lib/<multiarch>).
  libdir=$(dirname "$loader")
  # Every library the binary loads resolves inside root (none from this machine).
  local listed
  listed=$("$dir/root/$loader" --inhibit-cache \
    --library-path "$dir/root/$libdir" \
    --list "$dir/root/usr/sbin/pgbouncer" 2>&1) || { echo "$listed" >&2; exit 1; }
  if grep '=>' <<<"$listed" | grep -vq "=> $dir/root/"; then
    echo "build-pgbouncer: libraries missing or from outside $dir/root:" >&2
    echo "$listed" >&2
    exit 1
  fi
  {
    echo '#!/bin/sh'
    echo "# PgBouncer $version from Debian $suite's binary package (hack/build-pgbouncer.sh),"
    echo "# run by $suite's dynamic loader on $suite's libraries beside this file."
    echo 'root=$(dirname "$(readlink -f "$0")")/root'
    printf 'exec "$root/%s" --inhibit-cache --library-path "$root/%s" --argv0 "$0" "$root/usr/sbin/pgbouncer" "$@"\n' \
      "$loader" "$libdir"
  } >"$out.tmp"
  chmod 755 "$out.tmp"
  mv "$out.tmp" "$out"
  echo binary >"$dir/ROUTE"
}

if (cd "$tmp" && private_apt apt-get source --download-only -qq "pgbouncer=$version" >fetch.log 2>&1); then
  from_source
else
  echo "build-pgbouncer: Debian's archive does not serve the source of $version:" >&2
  grep -E '^(E|W):' "$tmp/fetch.log" | head -3 >&2 || true
  echo "build-pgbouncer: taking $suite's binary package and its libraries" >&2
  from_binary
fi
"$out" --version >&2
"$out" --version | grep -q "PgBouncer ${version%%-*}" \
  || { echo "build-pgbouncer: $out is not PgBouncer ${version%%-*}" >&2; exit 1; }
rm -rf "$apt_root"
echo "$(date -u +%FT%TZ) pgbouncer-$version $(cat "$dir/ROUTE") $((SECONDS - start))s" >>"$cache/build-times.log"
echo "build-pgbouncer: ready in $((SECONDS - start))s ($(cat "$dir/ROUTE"))" >&2
echo "$out"
