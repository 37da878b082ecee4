#!/usr/bin/env bash
# The main job: install dependencies, build ferry (release), run the demos in
# which two real processes exchange data (a named segment, a Channel), then
# `ferry bench --quick` (ferry's Channel beside every OS mechanism and peer
# library) and the sync benchmark (Mutex/Semaphore/CondVar beside glibc and Boost).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh --grpc  # gRPC too: the grpc.unix peer of the rpc benchmark
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_TOOLS=ON -DFERRY_BUILD_EXAMPLES=ON \
  -DFERRY_BUILD_BENCHMARKS=ON >/dev/null
cmake --build build/release

echo
echo "== two processes, one named segment =="
./build/release/examples/segment_exchange 20000
echo
echo "== a Channel between two processes =="
./build/release/examples/channel_stream 10000000
echo
echo "== ferry bench --quick: ferry's Channel beside the OS mechanisms and peer libraries =="
./build/release/tools/ferry/ferry bench --quick
echo
echo "== sync primitives between two processes: ferry vs glibc vs Boost.Interprocess =="
./build/release/bench/ferry_sync_bench
echo
echo "== ferry ls (nothing is left behind) =="
./build/release/tools/ferry/ferry ls
