#!/usr/bin/env bash
# Glass-to-glass latency of a live stream, passed through and transcoded.
#
#   ./scripts/bench-latency.sh            # both ways, 10 s each
#   SECONDS_MEASURED=30 ./scripts/bench-latency.sh
#
# webgear-probe draws the test pattern in real time (1280x720, 30 fps, each picture's
# number coded in it) and pipes it to an ffmpeg that encodes it as a live encoder does
# (x264 tuned for low latency: no B-frames, no lookahead; 1.5 Mbit/s, a keyframe every
# 2 s) and sends it as MPEG-TS over UDP on loopback. A release build of the server reads
# that stream (--source udp://...), unreduced: first sending its H.264 as it is, then
# decoding and encoding it (--no-h264-passthrough). The probe's decoding viewer reports,
# for every picture over the window, the time from its drawing to its decoding: the
# sender's encoding, the server, WebRTC on loopback and the viewer's decoding, on the
# same two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
bin="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-8767}"
udp_port="${UDP_PORT:-5767}"
seconds="${SECONDS_MEASURED:-10}"

source scripts/server-process.sh

for mode in "passed through" "transcoded"; do
  # A stream that may pass through plays decoded while 5 s of it are checked: measure
  # after that.
  flags=() settle=10
  [ "$mode" = "passed through" ] || flags=(--no-h264-passthrough) settle=3
  "$bin/webgear-probe" --url "http://127.0.0.1:$port" latency --seconds "$seconds" --settle "$settle" \
    --send-to "udp://127.0.0.1:$udp_port?pkt_size=1316" >"$bin/latency.out" &
  probe=$!
  "$bin/webgear-rtc" --source "udp://127.0.0.1:$udp_port" --host 127.0.0.1 --port "$port" \
    --frame-size-reduction 0 "${flags[@]}" >/dev/null 2>&1 &
  server=$!
  wait "$probe"
  stop_server
  echo "$mode: $(cat "$bin/latency.out")"
done
