#!/usr/bin/env bash
# The main job: install dependencies, build ferry (release), and run the demo
# in which two real processes exchange data through a named segment.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFERRY_BUILD_TESTS=OFF -DFERRY_BUILD_TOOLS=ON -DFERRY_BUILD_EXAMPLES=ON >/dev/null
cmake --build build/release

echo
echo "== two processes, one named segment =="
./build/release/examples/segment_exchange 20000
echo
echo "== ferry ls (nothing is left behind) =="
./build/release/tools/ferry/ferry ls
