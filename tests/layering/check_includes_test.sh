#!/usr/bin/env bash
# scripts/check-includes fails on what it must refuse and passes a clean
# tree: run on small trees planted in a temporary directory.
#
#   check_includes_test.sh SCRIPT
set -euo pipefail
script=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# A tree of one file per folder, each including only what it may.
plant_clean() {
  rm -rf "$tmp/tree"
  mkdir -p "$tmp/tree"/{framework,eventstore,projections,commands,queries,integration,app/internal,example_app,tests,bench}
  echo '#include "absl/status/status.h"' >"$tmp/tree/framework/a.h"
  echo '#include "framework/a.h"' >"$tmp/tree/eventstore/a.h"
  echo '#include "eventstore/a.h"' >"$tmp/tree/projections/a.h"
  echo '#include "projections/a.h"' >"$tmp/tree/commands/a.cc"
  echo '#include "projections/a.h"' >"$tmp/tree/queries/a.cc"
  echo '#include "eventstore/a.h"' >"$tmp/tree/integration/a.cc"
  echo '#include "app/internal/b.h"' >"$tmp/tree/app/a.cc"
  echo '#include "commands/a.h"' >"$tmp/tree/example_app/main.cc"
  echo '#include "app/internal/b.h"' >"$tmp/tree/tests/t.cc"
  echo '#include "example_app/main.h"' >"$tmp/tree/bench/b.cc"
}

# $1: what; $2: expected exit code; $3: text the output must contain.
expect() {
  local out code=0
  out=$("$script" "$tmp/tree" 2>&1) || code=$?
  if [[ $code != "$2" || $out != *"$3"* ]]; then
    echo "FAIL: $1: exit $code (wanted $2), output:" >&2
    echo "$out" >&2
    failures=$((failures + 1))
  else
    echo "ok: $1"
  fi
}

plant_clean
expect "a clean tree passes" 0 "the layering holds"

plant_clean
echo '#include "app/app.h"' >>"$tmp/tree/framework/a.h"
expect "framework including app fails" 1 'framework/a.h:2: includes "app/app.h"'

plant_clean
echo '#include "commands/x.h"' >>"$tmp/tree/eventstore/a.h"
expect "eventstore including commands fails" 1 'eventstore/a.h:2'

plant_clean
echo '#include "queries/q.h"' >>"$tmp/tree/commands/a.cc"
expect "commands including queries fails" 1 'commands/a.cc:2'

plant_clean
echo '#include "example_app/bank.h"' >>"$tmp/tree/app/a.cc"
expect "app including the example app fails" 1 'app/a.cc:2'

plant_clean
echo '#include "app/internal/b.h"' >>"$tmp/tree/example_app/main.cc"
expect "an app including app/internal fails" 1 "another folder's internal header"

if ((failures > 0)); then
  echo "check_includes_test: $failures failed" >&2
  exit 1
fi
