#!/usr/bin/env bash
# Real networks: headless Chromium watches the default page over a shaped link, for
# webgear-rtc beside vidgear's WebGear_RTC. The browser sits in a network namespace behind
# a veth pair whose server side the kernel shapes (tc token bucket: RATE, 16 KB burst, a
# 32 KB router buffer); random loss is an iptables `statistic` rule on the server's UDP to
# it. This kernel has no netem, so there is no added delay: the round trip stays under a
# millisecond. Both servers stream the same 720p30 clip unreduced; each cell starts a
# fresh server, and Chromium's getStats() is read each second for 20 s (the summary leaves
# out the first 5). The step's chart is drawn to target/bench-networks/step.svg
# (BENCHMARKS.md shows a copy, docs/slow-links-step.svg). The step cell is one 30 s viewing at 4 Mbit/s that falls to 800
# kbit/s at 8 s and recovers at 18 s. Needs root (ip netns, tc, iptables).
#
#   sudo ./scripts/bench-networks.sh                  # every cell, both servers
#   sudo ./scripts/bench-networks.sh 800kbit/2 step   # chosen cells: RATE[/LOSS%], unshaped, step
#   SERVERS=webgear-rtc sudo ./scripts/bench-networks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
target="${CARGO_TARGET_DIR:-target}"
bin="$target/release"
work="$target/bench-networks"
mkdir -p "$work"
port="${PORT:-8767}"
read -r -a servers <<<"${SERVERS-webgear-rtc WebGear_RTC}"
cells=("$@")
((${#cells[@]})) || cells=(unshaped unshaped/2 4mbit 4mbit/2 1500kbit 1500kbit/2 800kbit 800kbit/2 400kbit 400kbit/2 step)
namespace=webgear-networks
link=webgear-net
server_ip=10.214.0.1
viewer_ip=10.214.0.2
source scripts/server-process.sh
clip="$work/clip-720p30.mp4"
make_clip "$clip"

loss_rule=(OUTPUT -o "$link" -p udp -m statistic --mode random -j DROP --probability)
remove_loss() { while iptables -D "${loss_rule[@]}" "$1" 2>/dev/null; do :; done; }
remove_link() {
  ip netns del "$namespace" 2>/dev/null || true
  ip link del "$link" 2>/dev/null || true
}
trap 'stop_server; remove_link' EXIT
remove_link
ip netns add "$namespace"
ip link add "$link" type veth peer name webgear-viewer
ip link set webgear-viewer netns "$namespace"
ip addr add "$server_ip/24" dev "$link"
ip link set "$link" up
ip netns exec "$namespace" ip addr add "$viewer_ip/24" dev webgear-viewer
ip netns exec "$namespace" ip link set webgear-viewer up
ip netns exec "$namespace" ip link set lo up

shape() { # RATE, or unshaped
  tc qdisc del dev "$link" root 2>/dev/null || true
  [ "$1" = unshaped ] || tc qdisc add dev "$link" root tbf rate "$1" burst 16kb limit 32kb
}

start_server() {
  case "$1" in
  webgear-rtc)
    RUST_LOG="${RUST_LOG:-webgear_rtc=debug}" "$bin/webgear-rtc" --source "$clip" --host 0.0.0.0 --port "$port" --options '{"frame_size_reduction": 0}' \
      >"$work/$1.log" 2>&1 &
    ;;
  WebGear_RTC)
    venv="$target/bench-load/vidgear-venv"
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import vidgear, aiortc, cv2" 2>/dev/null; then
      python3 -m venv "$venv"
      "$venv/bin/pip" install -q "vidgear[asyncio]" aiortc opencv-python-headless
    fi
    "$venv/bin/python" scripts/webgear_rtc_reference.py "$clip" "$port" 0.0.0.0 >"$work/$1.log" 2>&1 &
    ;;
  esac
  server=$!
  wait_for_page
}

results="$work/results.txt"
: >"$results"
for name in "${servers[@]}"; do
  for cell in "${cells[@]}"; do
    rate=${cell%/*}
    loss=0
    [ "$cell" = "${cell#*/}" ] || loss=${cell#*/}
    seconds=20
    [ "$cell" != step ] || { rate=4mbit; seconds=30; }
    echo "== $name, $cell"
    start_server "$name" || { echo "$name did not start; see $work/$name.log"; stop_server; continue; }
    shape "$rate"
    probability=$(python3 -c "print($loss / 100)")
    [ "$loss" = 0 ] || iptables -I "${loss_rule[@]}" "$probability"
    : >"$work/probe.out"
    if [ "$cell" = step ]; then
      # 8 s and 18 s after the first frame, as the probe counts its seconds.
      (until grep -q "first frame" "$work/probe.out"; do sleep 0.05; done
        sleep 8 && tc qdisc change dev "$link" root tbf rate 800kbit burst 16kb limit 32kb
        sleep 10 && tc qdisc change dev "$link" root tbf rate 4mbit burst 16kb limit 32kb) &
    fi
    ip netns exec "$namespace" "$bin/webgear-probe" --url "http://$server_ip:$port" \
      browser --seconds "$seconds" --settle 5 >"$work/probe.out" || true
    out=$(cat "$work/probe.out")
    [ "$loss" = 0 ] || remove_loss "$probability"
    grep -v '^{' <<<"$out" | tail -n 3
    echo "$name $cell $(grep '^{' <<<"$out" || echo '{}')" >>"$results"
    stop_server
  done
done

python3 - "$results" "$work/step.svg" <<'EOF'
import json, sys

rows = {}
for line in open(sys.argv[1]):
    name, cell, summary = line.split(" ", 2)
    rows[(name, cell)] = json.loads(summary)
names = sorted({name for name, _ in rows}, key=lambda n: n != "webgear-rtc")
cells = list(dict.fromkeys(cell for _, cell in rows))

def show(s):
    if not s:
        return "failed"
    return (f"{s['fps']:.1f} fps, {s['height_p50']:.0f}p, {100 * s['frozen_share']:.1f}% frozen "
            f"({s['freezes']}), first frame {s['first_frame_ms']:.0f} ms")

print("\n| link | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for cell in cells:
    label = cell.replace("/", ", ") + ("% loss" if "/" in cell else "")
    if cell == "step":
        label = "step: 4 Mbit/s → 800 kbit/s (8 s) → 4 Mbit/s (18 s)"
    print(f"| {label} | " + " | ".join(show(rows.get((n, cell))) for n in names) + " |")

# The step: when each server's picture height moved after the drop and the recovery.
steps = {n: rows.get((n, "step"), {}).get("heights") for n in names}
for n, heights in steps.items():
    if heights:
        top = max(heights[:8])
        down = next((s for s in range(8, len(heights)) if heights[s] < top), None)
        up = next((s for s in range(18, len(heights)) if heights[s] >= top), None)
        say = lambda s, at: "never" if s is None else f"{s + 1 - at} s"
        print(f"step, {n}: lower picture {say(down, 8)} after the drop, full again {say(up, 18)} after the recovery")

# The step's picture height over time, one line per server.
width, height, pad = 640, 240, 40
series = {n: h for n, h in steps.items() if h}
if series:
    tallest = max(max(h) for h in series.values()) or 1
    seconds = max(len(h) for h in series.values())
    x = lambda s: pad + (width - 2 * pad) * s / max(seconds - 1, 1)
    y = lambda v: height - pad - (height - 2 * pad) * v / tallest
    colours = ["#1f77b4", "#d62728"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{pad}" y="16">Picture height (lines) each second; link 4 Mbit/s, 800 kbit/s from 8 s, 4 Mbit/s from 18 s</text>']
    for at in (8, 18):
        out.append(f'<line x1="{x(at)}" y1="{pad}" x2="{x(at)}" y2="{height - pad}" stroke="#aaa" stroke-dasharray="4"/>')
    for value in sorted({0, tallest // 2, tallest}):
        out.append(f'<text x="4" y="{y(value) + 4}">{value}</text>')
    for i, (n, h) in enumerate(series.items()):
        points = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in enumerate(h))
        out.append(f'<polyline fill="none" stroke="{colours[i % 2]}" stroke-width="2" points="{points}"/>')
        out.append(f'<text x="{width - 150}" y="{pad + 14 * i}" fill="{colours[i % 2]}">{n}</text>')
    out.append(f'<text x="{width / 2 - 30}" y="{height - 8}">seconds</text></svg>')
    open(sys.argv[2], "w").write("\n".join(out))
    print(f"step chart: {sys.argv[2]}")
EOF
