#!/usr/bin/env bash
# Installs the Node packages of the client tests (tests/clients/node: Prisma 7,
# @prisma/adapter-pg, pg, knex, bullmq, ioredis, the AWS SDK v3) from the
# committed package-lock.json with `npm ci`, into a cache keyed by the lockfile,
# the Prisma schema and Node's major version; then generates the Prisma client.
# Prints the directory (its node_modules and generated/ are what the apps import).
#
# Nothing is downloaded from outside the npm registry: install scripts are off
# (Prisma's would fetch engine binaries), and `prisma generate` runs on the
# WASM schema tooling the npm package ships. The CLI insists on a schema-engine
# binary before `generate` even though generate never runs it, so
# PRISMA_SCHEMA_ENGINE_BINARY points at a stub that says so (the tests create
# their tables with SQL: `prisma migrate` would need the real engine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tests/clients/node"
cache=${HEADROOM_CACHE:-$HOME/.cache/headroom}
command -v node >/dev/null || { echo "install-node-clients: node (>= 20.19) is not on PATH" >&2; exit 1; }
# Prisma 7 needs Node >= 20.19.
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' \
  || { echo "install-node-clients: Node $(node --version) is older than 20.19 (Prisma 7's floor)" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
key=$(cat "$src/package-lock.json" "$src/prisma/schema.prisma" "$src/prisma.config.ts" \
  | sha256sum | cut -c1-16)
dir="$cache/node-clients-$key-node$node_major"
if [[ ! -f "$dir/.installed" ]]; then
  start=$SECONDS
  echo "install-node-clients: npm ci into $dir" >&2
  rm -rf "$dir" && mkdir -p "$dir/prisma"
  cp "$src/package.json" "$src/package-lock.json" "$src/prisma.config.ts" "$dir/"
  cp "$src/prisma/schema.prisma" "$dir/prisma/"
  (
    cd "$dir"
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2
    printf '#!/bin/sh\necho "schema-engine is not installed: only prisma generate runs here" >&2\nexit 1\n' \
      >no-schema-engine && chmod +x no-schema-engine
    # The URL is read by prisma.config.ts but never dialled by generate.
    PRISMA_SCHEMA_ENGINE_BINARY="$dir/no-schema-engine" CHECKPOINT_DISABLE=1 \
      PRISMA_HIDE_UPDATE_MESSAGE=1 DIRECT_URL=postgresql://generate@127.0.0.1:1/none \
      node_modules/.bin/prisma generate >&2
  )
  touch "$dir/.installed"
  echo "$(date -u +%FT%TZ) node-clients $((SECONDS - start))s" >>"$cache/build-times.log"
  echo "install-node-clients: ready in $((SECONDS - start))s" >&2
fi
echo "$dir"
