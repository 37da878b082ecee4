#!/usr/bin/env bash
# Installs what ferry needs to build, test and run on Debian 12. Idempotent:
# packages already installed are not touched, and apt is not even updated.
#   --grpc  also gRPC, the rpc benchmark's grpc.unix peer (the main job's, scripts/demo.sh:
#           the test suite builds without it, and it is large)
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config   # toolchain
  clang lld                                      # the test suite's sanitizer builds
  libgtest-dev                                   # tests
  libcli11-dev nlohmann-json3-dev                # the ferry command-line tool
  libboost-dev libzmq3-dev libnng-dev            # benchmark peers: Boost.Interprocess, ZeroMQ, NNG
  iceoryx libiceoryx-posh-dev libiceoryx-hoofs-dev  # benchmark peer: Eclipse iceoryx (and iox-roudi)
  gnuplot-nox                                    # ferry bench --plot
  libnats-dev nats-server                        # the nats:// backend (nats.c) and the server its tests start
  openssl                                        # the nats TLS test makes its certificate
)
if [[ ${1:-} == --grpc ]]; then
  packages+=(libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc)
elif (($#)); then
  echo "usage: $0 [--grpc]" >&2
  exit 2
fi

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  sudo="sudo"
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
