#!/usr/bin/env bash
# A file pauses while nobody watches. Against a release build streaming a 60 s 720p30
# H.264 clip, decoded and encoded again (a clip with B-frames) and passed through (one
# without), and the test pattern: the first viewer's wait for its first decoded frame (its
# join starts a file's ffmpeg), the CPU of the server and its ffmpeg once that viewer has
# left, and the wait of viewers who come after a pause. Viewers leave without a word, as a closed tab
# does, so the server notices when their ICE goes quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
bin="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-8766}"
work="${WORK:-/tmp/webgear-bench}"
returns="${RETURNS:-5}"
mkdir -p "$work"
source scripts/server-process.sh

viewers() {
  curl -fsS "http://127.0.0.1:$port/metrics" | awk '$1 == "webgear_viewers" { print $2 }'
}

until_no_viewers() {
  for _ in $(seq 120); do
    [ "$(viewers)" = 0 ] && return 0
    sleep 0.5
  done
  echo "the viewers were never removed" >&2
  return 1
}

# User+system CPU ticks of the server and its children (the file's ffmpeg).
cpu_ticks() {
  local total=0 pid fields
  for pid in "$server" $(pgrep -P "$server" || true); do
    read -r -a fields <"/proc/$pid/stat" || continue
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}

first_frame_ms() {
  "$bin/webgear-probe" --url "http://127.0.0.1:$port" joins --count 1 | sed -E 's/.*p50 ([0-9]+) ms.*/\1/'
}

for kind in decoded passed-through test-pattern; do
  case "$kind" in
    decoded)
      input="$work/clip-60s-720p30.mp4"
      make_clip "$input"
      reduction=20
      ;;
    passed-through)
      input="$work/clip-60s-720p30-no-b-frames.mp4"
      make_clip "$input" -bf 0
      reduction=0
      ;;
    test-pattern)
      input=testsrc
      reduction=20
      ;;
  esac
  "$bin/webgear-rtc" --source "$input" --host 127.0.0.1 --port "$port" \
    --options "{\"frame_size_reduction\": $reduction, \"bitrate\": \"1.5M\"}" >"$work/pause-$kind.log" 2>&1 &
  server=$!
  if ! wait_for_page; then
    echo "the server did not start; see $work/pause-$kind.log" >&2
    exit 1
  fi
  echo "== $kind"
  echo "first viewer: $(first_frame_ms) ms to its first decoded frame"
  until_no_viewers
  sleep 1
  before=$(cpu_ticks)
  sleep 5
  after=$(cpu_ticks)
  ticks=$(getconf CLK_TCK)
  echo "paused: server and ffmpeg $(awk -v t=$((after - before)) -v hz="$ticks" 'BEGIN { printf "%.1f", t / hz / 5 * 100 }')% of a core"
  waits=()
  for _ in $(seq "$returns"); do
    waits+=("$(first_frame_ms)")
    until_no_viewers
  done
  echo "viewers coming after a pause: ${waits[*]} ms to their first decoded frame"
  stop_server
done
