#!/usr/bin/env bash
# Runs the example application built by find_package_test.sh against
# PostgreSQL: one command and one read-your-writes query over HTTP, in a
# schema of its own that it drops again.
#
#   example_self_test.sh <counter_app binary>
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 <counter_app binary>" >&2
  exit 2
fi
app=$1

if [[ -z ${CQRS_TEST_DATABASE_URL:-} ]]; then
  echo "example_self_test: FAILED: CQRS_TEST_DATABASE_URL is not set;" \
    "run the tests with scripts/test, which starts a PostgreSQL cluster" >&2
  exit 1
fi
[[ -x $app ]] || {
  echo "example_self_test: FAILED: $app is missing (packaging_find_package builds it)" >&2
  exit 1
}
DATABASE_URL=$CQRS_TEST_DATABASE_URL timeout 120 "$app" --self-test || {
  echo "example_self_test: FAILED: counter_app --self-test exited $?" >&2
  exit 1
}
