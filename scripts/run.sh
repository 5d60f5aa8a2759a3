#!/usr/bin/env bash
# The main command: builds augserve and runs `augserve run` with the arguments given (the
# built-in demo dataset when no --data is given; `./scripts/run.sh --help` lists them).
# On a machine with an NVIDIA driver it first makes sure the CUDA libraries augserve opens at
# run time are there (libnvrtc compiles our kernels, libnvjpeg decodes JPEGs on the GPU):
# what neither the system nor a Python environment has, `augserve gpu --missing-libs`
# names, and PyPI's wheels of it are installed once into target/cuda-libs. Without a driver
# nothing is installed and everything runs on the CPU. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
# cmake and nasm build the libjpeg-turbo augserve links; fetched under target/ when missing.
if ! command -v cmake >/dev/null || ! command -v nasm >/dev/null; then
  PATH="$(./scripts/fetch-build-tools.sh target/tools target/pyenv):$PATH"
fi
cargo build --release --locked
bin=target/release/augserve
libs=$PWD/target/cuda-libs
# augserve looks in the folders AUGSERVE_CUDA_LIB_DIRS names before its own search.
use_installed() {
  local site
  for site in "$libs"/venv/lib/python3*/site-packages; do
    [ -d "$site/nvidia" ] || continue
    export AUGSERVE_CUDA_LIB_DIRS="$site/nvidia/cuda_nvrtc/lib:$site/nvidia/nvjpeg/lib${AUGSERVE_CUDA_LIB_DIRS:+:$AUGSERVE_CUDA_LIB_DIRS}"
  done
}
use_installed
if [ -e /proc/driver/nvidia/version ] || ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1'; then
  missing=$("$bin" gpu --missing-libs | tr "\n" " ")
  if [ -n "${missing// /}" ]; then
    echo "== NVIDIA driver present; installing from PyPI into target/cuda-libs: $missing"
    if { [ -x "$libs/venv/bin/pip" ] || python3 -m venv "$libs/venv"; } &&
      # shellcheck disable=SC2086 # one package per word
      "$libs/venv/bin/pip" install --quiet --disable-pip-version-check $missing; then
      use_installed
    else
      echo "warning: could not install $missing; augserve says what it lacks and uses the CPU" >&2
    fi
  fi
fi
exec "$bin" run "$@"
