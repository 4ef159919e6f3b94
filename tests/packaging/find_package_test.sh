#!/usr/bin/env bash
# Installs the framework from a build tree into a scratch prefix, checks the
# installed headers and package files, then configures and builds
# docs/example-app against that prefix alone, as another project would.
#
#   find_package_test.sh <cmake> <build dir> <source dir> <work dir>
#
# <work dir> is emptied first; the example's binary is left in
# <work dir>/example/counter_app for example_self_test.sh.
set -euo pipefail

if [[ $# -ne 4 ]]; then
  echo "usage: $0 <cmake> <build dir> <source dir> <work dir>" >&2
  exit 2
fi
cmake=$1 build=$2 src=$3 work=$4
prefix=$work/prefix

fail() {
  echo "find_package_test: FAILED: $*" >&2
  exit 1
}

rm -rf "$work"
mkdir -p "$work"

echo "== cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 || {
  cat "$work/install.log" >&2
  fail "cmake --install failed (are the cqrs_* libraries built? run cmake --build first)"
}

for module in framework eventstore projections commands queries; do
  [[ -f $prefix/lib/libcqrs_$module.a ]] ||
    fail "lib/libcqrs_$module.a was not installed"
done
for f in cqrsConfig.cmake cqrsConfigVersion.cmake cqrsTargets.cmake; do
  [[ -f $prefix/lib/cmake/cqrs/$f ]] || fail "lib/cmake/cqrs/$f was not installed"
done
[[ ! -e $prefix/lib/libcqrs_bank.a && ! -e $prefix/include/cqrs/example_app ]] ||
  fail "the bank was installed"

include=$prefix/include/cqrs
[[ -f $include/framework/http/server.h ]] ||
  fail "include/cqrs/framework/http/server.h was not installed"
if internal=$(find "$include" -path '*/internal/*' | grep .); then
  fail "private headers were installed: $internal"
fi
# Every project include of an installed header must resolve among the
# installed headers (a public header including an internal/ one would not).
missing=""
while IFS= read -r header; do
  while IFS= read -r included; do
    [[ -f $include/$included ]] || missing+=" $included (from ${header#"$include"/})"
  done < <(sed -n -E \
    's/^#include "((framework|eventstore|projections|commands|queries)\/[^"]+)".*/\1/p' \
    "$header")
done < <(find "$include" -name '*.h')
[[ -z $missing ]] || fail "installed headers include headers that are not installed:$missing"

echo "== configure docs/example-app against $prefix"
# Only the scratch prefix may provide cqrs: no package registry, and the
# source tree is never on the include path.
"$cmake" -S "$src/docs/example-app" -B "$work/example" \
  -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_COMPILE_WARNING_AS_ERROR=ON \
  >"$work/configure.log" 2>&1 || {
  cat "$work/configure.log" >&2
  fail "configuring docs/example-app with find_package(cqrs) failed"
}
found=$(sed -n 's/^cqrs_DIR:PATH=//p' "$work/example/CMakeCache.txt")
[[ $found == "$prefix/lib/cmake/cqrs" ]] ||
  fail "find_package(cqrs) used '$found', not the scratch prefix"

echo "== build docs/example-app"
"$cmake" --build "$work/example" -j 1 >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  fail "building docs/example-app against the installed package failed"
}
app=$work/example/counter_app
[[ -x $app ]] || fail "$app was not built"

# It starts and checks its arguments (exit 2: usage) without a database.
status=0
env -u DATABASE_URL "$app" >/dev/null 2>&1 || status=$?
[[ $status -eq 2 ]] || fail "counter_app without DATABASE_URL exited $status, expected 2"

echo "find_package_test: OK ($app)"
