#!/usr/bin/env bash
# Validates docker-compose.yml with `docker-compose config` (no Docker daemon
# needed) and checks that it defines the expected services.
#
#   compose_config_test.sh <source dir>
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 <source dir>" >&2
  exit 2
fi
file=$1/docker-compose.yml

fail() {
  echo "compose_config_test: FAILED: $*" >&2
  exit 1
}

command -v docker-compose >/dev/null ||
  fail "docker-compose is not installed; run scripts/setup (as root) to install it"

docker-compose -f "$file" config -q || fail "docker-compose config rejects $file"

services=$(docker-compose -f "$file" config --services | sort | tr '\n' ' ')
[[ $services == "bank-api bank-worker postgres rabbitmq rewards " ]] ||
  fail "services are '$services', expected bank-api bank-worker postgres rabbitmq rewards"
echo "compose_config_test: OK"
