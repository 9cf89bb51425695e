#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine: installs what the tests need (a headless
# browser and its driver, nasm for OpenH264's fast assembly, ffmpeg for the sources, procps
# for pgrep, Xvfb for screen capture), then checks formatting and lints, runs every test
# and builds the docs. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v nasm >/dev/null || missing+=(nasm)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v pgrep >/dev/null || missing+=(procps)
command -v Xvfb >/dev/null || missing+=(xvfb)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
