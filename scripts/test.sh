#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine: installs what the tests need (a headless
# browser and its driver, nasm for OpenH264's fast assembly, ffmpeg for the sources, procps
# for pgrep, Xvfb for screen capture, GStreamer's RTSP server for a camera on loopback,
# coturn for a real TURN relay, iproute2 and iptables for a real 1:1 NAT, cargo-deny),
# then checks formatting, lints, that no modules use each other in a cycle and the
# dependencies' licences and versions, runs every test and builds the docs. Exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v nasm >/dev/null || missing+=(nasm)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v pgrep >/dev/null || missing+=(procps)
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v turnserver >/dev/null || missing+=(coturn)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
# The RTSP test camera: Debian's Python with GStreamer's RTSP server, H.264 and MJPEG elements.
/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst; Gst.init(None)
assert all(Gst.ElementFactory.find(e) for e in ("qtdemux", "h264parse", "rtph264pay", "matroskademux",
                                               "jpegparse", "rtpjpegpay"))' 2>/dev/null ||
  missing+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# cargo-deny checks the dependencies' licences, duplicate versions and sources (deny.toml).
cargo deny --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-deny

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
python3 scripts/check-module-cycles.py
cargo deny --offline --log-level error check licenses bans sources
cargo test --workspace
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
