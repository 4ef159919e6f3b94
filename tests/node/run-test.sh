#!/usr/bin/env bash
# Runs one Node test of tests/node/ against the built bank (a ctest entry,
# tests/CMakeLists.txt):
#
#   tests/node/run-test.sh BANK_BINARY asyncapi.test.mjs
#
# Fails, never skips, when node or the test packages are missing or out of
# date, saying how to get them: scripts/test installs both (scripts/setup,
# then tests/node/install.sh) before it runs ctest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bank=$1
test=$2

how="run scripts/test (it installs nodejs and npm through scripts/setup, then the packages through tests/node/install.sh), or by hand: apt-get install nodejs npm && $here/install.sh"
if ! command -v node >/dev/null 2>&1; then
  echo "run-test.sh: node not found; $how" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 18)); then
  echo "run-test.sh: node $(node --version) is too old (18 or later); $how" >&2
  exit 1
fi
if [[ ! -d $here/node_modules ]]; then
  echo "run-test.sh: $here/node_modules is missing; $how" >&2
  exit 1
fi
if ! cmp -s "$here/package-lock.json" "$here/node_modules/.installed-lock.json"; then
  echo "run-test.sh: $here/node_modules does not match package-lock.json; $how" >&2
  exit 1
fi
cd "$here"
BANK_BINARY=$bank exec node "$here/$test"
