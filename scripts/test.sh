#!/usr/bin/env bash
# The test command: installs what the tests need (Python + Pillow + torch + NVRTC + nvJPEG in a venv under
# target/, real photos from Debian's mate-backgrounds, libjpeg-turbo's TurboJPEG library, cmake
# and nasm for the build, all under target/), then checks formatting and lints and runs every test. Safe to run again;
# later runs reuse what earlier ones installed.
set -euo pipefail
cd "$(dirname "$0")/.."
# A clean clone (CI) gains nothing from incremental builds; they only add gigabytes on disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
echo "== disk: $(df -h . | awk 'NR==2 {print $4 " free of " $2}')"
# pip's wheel cache would keep a second copy of torch and its CUDA wheels (about 3 GB) that
# no later step reads; a CI machine with little disk ran out of room writing it (issues ci, stop 30).
export PIP_NO_CACHE_DIR=1

venv=target/pyenv
if [ ! -x "$venv/bin/python" ]; then
  echo "== creating $venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/requirements-test.txt

echo "== real photos for the resize comparison"
./scripts/fetch-photos.sh target/testdata/photos
echo "== libjpeg-turbo's TurboJPEG (native YCbCr planes, as nvJPEG gives them) for the GPU-decode host test"
./scripts/fetch-turbojpeg.sh target/testdata/turbojpeg
echo "== cmake and nasm, to build the libjpeg-turbo augserve links (turbojpeg-sys)"
PATH="$(./scripts/fetch-build-tools.sh target/tools "$venv"):$PATH"
export PATH

# NVRTC from the wheel: dlopen finds it through LD_LIBRARY_PATH (read at process start).
nvrtc_lib=$("$venv/bin/python" -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(list(m.__path__)[0], "lib"))')
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

export AUGSERVE_PYTHON="$PWD/$venv/bin/python"
export AUGSERVE_TEST_PHOTOS="$PWD/target/testdata/photos"
export AUGSERVE_TURBOJPEG="$PWD/target/testdata/turbojpeg/libturbojpeg.so.0"
# Everything above is installed, so no test may skip for want of it.
export AUGSERVE_REQUIRE_PEERS=1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== fuzz targets build (fuzz/; run them with cargo fuzz, see fuzz/README.md)"
# --no-default-features: type-check only, without compiling libFuzzer itself (fuzz/Cargo.toml).
CARGO_TARGET_DIR=target/fuzz-check cargo check --manifest-path fuzz/Cargo.toml --bins --locked --quiet --no-default-features

echo "== cargo test"
rm -f target/tmp/robustness-summary.md
cargo test --workspace --locked
echo "== robustness summary (crates/augserve/tests/robustness/)"
cat target/tmp/robustness-summary.md

echo "== Python client (clients/python) against the server binary"
# `cargo test` left the binary there (its integration tests run it); no second build.
test -x target/debug/augserve
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./clients/python
AUGSERVE_BIN="$PWD/target/debug/augserve" "$venv/bin/python" -m pytest clients/python/tests -v -s -rs

echo "== deployment files (hadolint, kubernetes-validate, compose, configs)"
PYTHON="$venv/bin/python" AUGSERVE_BIN="$PWD/target/debug/augserve" ./scripts/check-deploy.sh
