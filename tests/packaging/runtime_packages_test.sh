#!/usr/bin/env bash
# Checks that the runtime stage of the Dockerfile installs the Debian
# package of every shared library the built `bank` binary links directly
# (their own dependencies, such as libpq5, come with them).
#
#   runtime_packages_test.sh <bank binary> <Dockerfile>
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 <bank binary> <Dockerfile>" >&2
  exit 2
fi
bank=$1 dockerfile=$2

fail() {
  echo "runtime_packages_test: FAILED: $*" >&2
  exit 1
}

[[ -x $bank ]] || fail "$bank is missing: build the bank target first"
command -v objdump >/dev/null || fail "objdump is missing (Debian: binutils)"

# The packages of the last stage's `apt-get install ... \` command, up to
# the next `&&`.
listed=$(awk '
  /^FROM / { stage++ }
  { lines[stage] = lines[stage] " " $0 }
  END { print lines[stage] }' "$dockerfile" |
  sed 's/\\//g' |
  sed -n -E 's/.*apt-get install[^&]*--no-install-recommends ([^&]*)&&.*/\1/p')
listed=$(echo $listed)  # one space between names
[[ -n $listed ]] || fail "no apt-get install --no-install-recommends in the last stage of $dockerfile"
# In every debian:bookworm-slim image (apt needs them).
provided="libc6 libgcc-s1 libstdc++6 $listed"

# NEEDED name -> resolved path, then the owning package of every path in
# one dpkg call (it may record the /lib or the /usr/lib spelling).
declare -A path_of
for lib in $(objdump -p "$bank" | awk '$1 == "NEEDED" { print $2 }'); do
  path=$(ldd "$bank" | awk -v lib="$lib" '$1 == lib { print $3 }')
  [[ -n $path ]] || fail "ldd cannot resolve $lib"
  path_of[$lib]=${path#/usr}
done
owners=$(dpkg -S "${path_of[@]}" "${path_of[@]/#//usr}" 2>/dev/null || true)

missing=""
for lib in "${!path_of[@]}"; do
  path=${path_of[$lib]}
  package=$(awk -v a="$path" -v b="/usr$path" \
    '$NF == a || $NF == b { sub(/:.*/, "", $1); print $1; exit }' <<<"$owners")
  [[ -n $package ]] || fail "no Debian package owns $path"
  # A sanitizer build (docs/testing.md) links the sanitizers' runtimes; the
  # image is built without them.
  [[ $package =~ ^lib(a|ub|t|l)san[0-9]*$ ]] && continue
  if [[ " $provided " != *" $package "* && " $missing " != *" $package "* ]]; then
    missing+=" $package"
  fi
done
[[ -z $missing ]] || fail "the runtime stage of $dockerfile lacks:$missing"
echo "runtime_packages_test: OK (runtime packages: $listed)"
