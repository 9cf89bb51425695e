#!/usr/bin/env bash
# How soon a live stream plays, and passes through, after the server starts.
#
#   ./scripts/bench-live-start.sh            # 8 starts
#   RUNS=20 ./scripts/bench-live-start.sh
#
# ffmpeg sends the test pattern as a live encoder does (x264 tuned for low latency,
# 1280x720 at 30 fps, 1.5 Mbit/s, a keyframe every 2 s) as MPEG-TS over UDP on loopback.
# A release build of the server then starts on that stream, unreduced, at a random moment
# of the keyframe interval (so that some starts come just after a keyframe, some just
# before). Each run prints the time from starting the server until its page answers (the
# stream is open and playing, decoded) and until /metrics counts a frame passed through.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli
bin="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-8768}"
udp_port="${UDP_PORT:-5768}"
runs="${RUNS:-8}"

source scripts/server-process.sh
sender=""
stop_all() {
  stop_server
  if [ -n "$sender" ]; then
    kill "$sender" 2>/dev/null || true
    wait "$sender" 2>/dev/null || true
  fi
}
trap stop_all EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }
passed_through() {
  curl -sf "http://127.0.0.1:$port/metrics" | grep -Eq '^webgear_frames_passed_through_total [1-9]'
}

for run in $(seq 1 "$runs"); do
  ffmpeg -loglevel error -re -f lavfi -i testsrc2=size=1280x720:rate=30 \
    -c:v libx264 -preset veryfast -tune zerolatency -g 60 -b:v 1500k \
    -f mpegts "udp://127.0.0.1:$udp_port?pkt_size=1316" &
  sender=$!
  # Past the first keyframe, at a random point of the 2 s interval.
  sleep "$((2 + RANDOM % 2)).$((RANDOM % 10))"
  started=$(now_ms) page="" through=""
  "$bin/webgear-rtc" --source "udp://127.0.0.1:$udp_port" --host 127.0.0.1 --port "$port" \
    --frame-size-reduction 0 >/dev/null 2>&1 &
  server=$!
  while [ -z "$through" ] && [ $(($(now_ms) - started)) -lt 30000 ]; do
    if [ -z "$page" ] && curl -sf -o /dev/null "http://127.0.0.1:$port/"; then
      page=$(($(now_ms) - started))
    fi
    if [ -n "$page" ] && passed_through; then
      through=$(($(now_ms) - started))
    fi
    sleep 0.05
  done
  echo "run $run: page answers after ${page:-?} ms, passes through after ${through:-?} ms"
  stop_all
  sender=""
done
