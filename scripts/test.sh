#!/usr/bin/env bash
# The whole test suite: install dependencies, then build and run every test in
# three builds — ASan+UBSan, TSan, and plain — and check that the installed
# package (CMake and pkg-config) builds an example out of tree.
# FERRY_TEST_SCALE scales torture and volume counts (sanitizer builds run fewer).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
jobs=$(nproc)

configure_and_build() {  # name, compiler, optimization and debug flags, extra cmake arguments...
  local name=$1 compiler=$2 flags=$3
  shift 3
  echo "== build: $name ($compiler $flags) =="
  cmake -S . -B "build/ci-$name" -G Ninja -DCMAKE_CXX_COMPILER="$compiler" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags -DNDEBUG" \
    -DFERRY_BUILD_TESTS=ON -DFERRY_BUILD_TOOLS=ON -DFERRY_BUILD_EXAMPLES=ON -DFERRY_BUILD_BENCHMARKS=ON \
    "$@" >/dev/null
  cmake --build "build/ci-$name" -j "$jobs"
}

run_tests() {  # name, scale
  echo "== tests: $1 =="
  (cd "build/ci-$1" && FERRY_TEST_SCALE=$2 ctest -j "$jobs" --output-on-failure --timeout 300)
}

# The sanitizer builds use clang and lld, the plain build g++ (Debian's default,
# what users build with): two compilers' warnings, and clang builds and runs
# the sanitized suite in a fifth less time (measured, build + tests: ASan
# 244 s + 187 s against g++'s 335 s + 212 s; TSan 227 s + 231 s against
# 287 s + 279 s). ASan at -O0: half the compile time of -O1 for a third more test time.
# -g1 (line tables only) is what sanitizer reports need; the plain build has no
# reports to print and builds without debug information (327 s against 339 s).
sanitizer_build=(-DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld)
configure_and_build asan clang++ "-O0 -g1" -DFERRY_SANITIZE=address,undefined "${sanitizer_build[@]}"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_tests asan 0.25

configure_and_build tsan clang++ "-O1 -g1" -DFERRY_SANITIZE=thread "${sanitizer_build[@]}"
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/tsan.supp" run_tests tsan 0.25

configure_and_build plain g++ "-O2 -g0"
echo "== install and build an example out of tree =="
prefix="$PWD/build/ci-plain/prefix"
rm -rf "$prefix" build/ci-consumer
cmake --install build/ci-plain --prefix "$prefix" >/dev/null
cmake -S examples -B build/ci-consumer -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build/ci-consumer
./build/ci-consumer/segment_exchange 100
flags=$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs ferry)
g++ examples/segment_exchange.cpp $flags -o build/ci-consumer/segment_exchange_pkgconfig
./build/ci-consumer/segment_exchange_pkgconfig 100

run_tests plain 1
