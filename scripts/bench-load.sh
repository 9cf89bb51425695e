#!/usr/bin/env bash
# Many viewers of one stream, webgear-rtc beside vidgear's WebGear_RTC.
#
#   ./scripts/bench-load.sh                  # webgear-rtc: N = 1 10 100 250 500 750 1000
#   ./scripts/bench-load.sh 100 250          # or any list of N
#   VIDGEAR_COUNTS="1 4 10 25" ./scripts/bench-load.sh   # WebGear_RTC's rounds (the default)
#   VIDGEAR_COUNTS= ./scripts/bench-load.sh              # webgear-rtc alone
#   FULL_RECEPTION=1 ./scripts/bench-load.sh             # viewers decrypt through the WebRTC stack
#   PASS_THROUGH=1 ./scripts/bench-load.sh               # a clip webgear-rtc sends as it is
#   DECODE=4 ./scripts/bench-load.sh                     # 4 of the viewers decode every picture
#
# Both servers stream the same clip (1280x720, 30 fps, H.264 at ~1.5 Mbit/s, made here with
# ffmpeg), unreduced (webgear-rtc re-encodes it at the clip's 1.5 Mbit/s; with
# PASS_THROUGH=1 the clip has no B-frames and webgear-rtc sends its H.264 untouched), to N light
# viewers of the same load generator (webgear-load: real WebRTC peers that count RTP but
# do not decode), joining by WebGear_RTC's /offer. The viewers count RTP from its clear
# header (--headers-only), which costs the shared cores half as much as decrypting it;
# loss is then what the network lost, nothing being asked for again. Every
# round starts a fresh server. WebGear_RTC (pip's vidgear with aiortc) runs in a virtual
# environment made on first use, with enable_live_broadcast, its setting for many viewers.
# Prints each round, a table, and the ratios at the largest N WebGear_RTC survived.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nasm >/dev/null ||
  echo "note: nasm is not installed, so OpenH264 is built without its assembly and encodes ~1.6x slower"
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"
work="$target/bench-load"
mkdir -p "$work"
port="${PORT:-8766}"
counts=("$@")
((${#counts[@]})) || counts=(1 10 100 250 500 750 1000)
read -r -a vidgear_counts <<<"${VIDGEAR_COUNTS-1 4 10 25}"
load_flags=(--headers-only)
[ -z "${FULL_RECEPTION:-}" ] || load_flags=()
[ -z "${DECODE:-}" ] || load_flags+=(--decode "$DECODE")

clip="$work/clip-720p30.mp4"
b_frames=()
if [ -n "${PASS_THROUGH:-}" ]; then
  clip="$work/clip-720p30-no-b-frames.mp4"
  b_frames=(-bf 0)
fi
if [ ! -s "$clip" ]; then
  echo "making the clip (90 s of 1280x720 at 30 fps, H.264 ~1.5 Mbit/s, a keyframe every 2 s)"
  ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -t 90 -c:v libx264 -preset veryfast \
    "${b_frames[@]}" -b:v 1500k -maxrate 1500k -bufsize 3000k -g 60 -pix_fmt yuv420p "$clip"
fi

source scripts/server-process.sh

# One round: the load generator against the server just started; its JSON summary goes
# to $results as "<name> <survived> <json>".
results="$work/results.txt"
: >"$results"
round() {
  local name=$1 n=$2 metrics=$3
  echo "== $name, $n viewers"
  if ! wait_for_page; then
    echo "$name did not start; see $work/$name.log"
    stop_server
    return
  fi
  local out
  out=$("$bin/webgear-load" --url "http://127.0.0.1:$port" --viewers "$n" --ramp 100 --settle 3 --seconds 10 \
    --server-pid "$server" --json $metrics "${load_flags[@]}")
  grep -v '^{' <<<"$out"
  local survived=yes
  kill -0 "$server" 2>/dev/null || survived=no
  [ "$survived" = yes ] || echo "$name died during the round"
  echo "$name $survived $(grep '^{' <<<"$out")" >>"$results"
  stop_server
}

# A server left over on the port would answer in the new one's place.
port_free() {
  if curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
    echo "something already serves port $port; stop it or set PORT" >&2
    exit 1
  fi
}

all_counts=$(printf '%s\n' "${counts[@]}" "${vidgear_counts[@]}" | sort -n -u)
for n in $all_counts; do
  port_free
  "$bin/webgear-rtc" --source "$clip" --host 127.0.0.1 --port "$port" \
    --options '{"frame_size_reduction": 0, "bitrate": "1.5M", "max_viewers": 5000}' >"$work/webgear-rtc.log" 2>&1 &
  server=$!
  round webgear-rtc "$n" --metrics
  if grep -q "passing the source's H.264 through" "$work/webgear-rtc.log"; then
    echo "(webgear-rtc sent the clip's H.264 as it is: no decoder or encoder ran)"
  fi
done

if ((${#vidgear_counts[@]})); then
  venv="$work/vidgear-venv"
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import vidgear, aiortc, cv2" 2>/dev/null; then
    echo "installing vidgear's WebGear_RTC into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "vidgear[asyncio]" aiortc opencv-python-headless
  fi
  echo "WebGear_RTC: vidgear $("$venv/bin/python" -c 'import vidgear; print(vidgear.__version__)')"
  for n in "${vidgear_counts[@]}"; do
    port_free
    "$venv/bin/python" scripts/webgear_rtc_reference.py "$clip" "$port" >"$work/webgear_rtc.log" 2>&1 &
    server=$!
    round WebGear_RTC "$n" ""
  done
fi

python3 - "$results" <<'EOF'
import json, sys

rows = []
for line in open(sys.argv[1]):
    name, survived, summary = line.split(" ", 2)
    rows.append((name, survived == "yes", json.loads(summary)))

def cell(value, spec):
    return "-" if value is None else format(value, spec)

print()
print("| server | viewers | at full rate | fps min / p50 | loss max | first frame p50 / p95 "
      "| CPU (one core) | CPU s per viewer-s | CPU ms per frame | RSS | capture→send p50 / p99 (last viewer p99) | load generator CPU |")
print("|---|---:|---:|---|---:|---|---:|---:|---:|---:|---|---:|")
for name, survived, s in rows:
    note = "" if survived else " (died)"
    latency = "-" if s["capture_to_send_ms_p50"] is None else \
        f"≤ {s['capture_to_send_ms_p50']:g} / ≤ {s['capture_to_send_ms_p99']:g} ms"
    if s.get("capture_to_last_send_ms_p99") is not None:
        latency += f" (last ≤ {s['capture_to_last_send_ms_p99']:g})"
    refused = f" ({s['refused']} refused)" if s.get("refused") else ""
    print(f"| {name}{note} | {s['viewers']} | {s['full_rate']}{refused} | {s['fps_min']:.1f} / {s['fps_p50']:.1f} "
          f"| {s['loss_max']:.2f}% | {s['first_frame_ms_p50']:.0f} / {s['first_frame_ms_p95']:.0f} ms "
          f"| {cell(s['server_cpu_percent'], '.1f')}% | {cell(s['server_cpu_per_viewer_second'], '.4f')} "
          f"| {cell(s['server_cpu_ms_per_frame'], '.3f')} | {cell(s['server_rss_mib'], '.0f')} MiB | {latency} "
          f"| {cell(s['load_generator_cpu_percent'], '.0f')}% |")

ours = {s["viewers"]: s for name, _, s in rows if name == "webgear-rtc"}
theirs = [(s["viewers"], s) for name, survived, s in rows
          if name == "WebGear_RTC" and survived and s["connected"] == s["viewers"]]
if theirs:
    n, t = max(theirs, key=lambda row: row[0])
    o = ours.get(n)
    if o:
        def ratio(key):
            a, b = t.get(key), o.get(key)
            return "-" if not a or not b else f"{a / b:.1f}x"
        print()
        print(f"At {n} viewers, the most WebGear_RTC served without dying:")
        print(f"  frame rate p50: webgear-rtc {o['fps_p50']:.1f} fps, WebGear_RTC {t['fps_p50']:.1f} fps")
        print(f"  CPU s per viewer-second: WebGear_RTC / webgear-rtc = {ratio('server_cpu_per_viewer_second')}")
        print(f"  CPU ms per frame received: WebGear_RTC / webgear-rtc = {ratio('server_cpu_ms_per_frame')}")
        print(f"  memory: WebGear_RTC {t['server_rss_mib']:.0f} MiB, webgear-rtc {o['server_rss_mib']:.0f} MiB")
EOF
