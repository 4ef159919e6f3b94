#!/usr/bin/env bash
# Installs the Node tests' packages (tests/node/node_modules) with `npm ci`
# when they are missing or were installed from another package-lock.json,
# and records the lock they came from (node_modules/.installed-lock.json,
# which run-test.sh checks). Does nothing when they are up to date.
# scripts/test runs it before ctest. --ignore-scripts (also in .npmrc): no
# package here needs an install script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if cmp -s "$here/package-lock.json" "$here/node_modules/.installed-lock.json" \
  2>/dev/null; then
  exit 0
fi
echo "tests/node/install.sh: npm ci in $here" >&2
if ! (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund >/dev/null); then
  echo "tests/node/install.sh: npm ci failed; behind a proxy that intercepts TLS, point NODE_EXTRA_CA_CERTS at a bundle with its certificate (npm needs https://registry.npmjs.org)" >&2
  exit 1
fi
cp "$here/package-lock.json" "$here/node_modules/.installed-lock.json"
