#!/usr/bin/env bash
# Installs the framework from a build tree into a scratch prefix, checks the
# installed headers and package files, then configures and builds
# docs/example-app and docs/inventory-app against that prefix alone, as
# another project would.
#
#   find_package_test.sh <cmake> <build dir> <source dir> <work dir>
#
# <work dir> is emptied first; the examples' binaries are left in
# <work dir>/example/counter_app and <work dir>/inventory/inventory_app for
# tests/examples/examples_test.cc.
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

for module in framework eventstore projections commands queries app; do
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
    's/^#include "((framework|eventstore|projections|commands|queries|app)\/[^"]+)".*/\1/p' \
    "$header")
done < <(find "$include" -name '*.h')
[[ -z $missing ]] || fail "installed headers include headers that are not installed:$missing"

# build_example <dir under docs/> <work subdir> <binary>
build_example() {
  local dir=$1 out=$work/$2 binary=$3
  echo "== configure docs/$dir against $prefix"
  # Only the scratch prefix may provide cqrs: no package registry, and the
  # source tree is never on the include path.
  "$cmake" -S "$src/docs/$dir" -B "$out" \
    -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    -DCMAKE_COMPILE_WARNING_AS_ERROR=ON \
    >"$out.configure.log" 2>&1 || {
    cat "$out.configure.log" >&2
    fail "configuring docs/$dir with find_package(cqrs) failed"
  }
  local found
  found=$(sed -n 's/^cqrs_DIR:PATH=//p' "$out/CMakeCache.txt")
  [[ $found == "$prefix/lib/cmake/cqrs" ]] ||
    fail "find_package(cqrs) used '$found', not the scratch prefix"

  echo "== build docs/$dir"
  "$cmake" --build "$out" -j 1 >"$out.build.log" 2>&1 || {
    cat "$out.build.log" >&2
    fail "building docs/$dir against the installed package failed"
  }
  [[ -x $out/$binary ]] || fail "$out/$binary was not built"
  # It starts and checks its arguments (exit 2: usage) without a database.
  local status=0
  env -u DATABASE_URL "$out/$binary" >/dev/null 2>&1 || status=$?
  [[ $status -eq 2 ]] || fail "$binary without arguments exited $status, expected 2"
}
build_example example-app example counter_app
build_example inventory-app inventory inventory_app

echo "find_package_test: OK ($work/example/counter_app, $work/inventory/inventory_app)"
