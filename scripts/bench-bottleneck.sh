#!/usr/bin/env bash
# Joining over a slow link. A joiner is sent the stream's last keyframe and every frame
# since at once (see the README); on loopback that is a quick start, but a link slower
# than the server's network card holds only what its router's buffer does. This puts the
# viewers in a network namespace behind a link shaped by the kernel (a veth pair with a
# token bucket on the server's side: RATE, and a buffer of LIMIT bytes), streams a 60 s
# 720p30 clip at ~1.5 Mbit/s with a keyframe every 2 s passed through, and joins viewers
# one at a time (each joins where the file has got to, so mostly between keyframes):
# their first decoded frame, and the frames they decoded a second over their first 3 s.
# Needs root (ip netns, tc).
#
#   sudo ./scripts/bench-bottleneck.sh                      # unshaped, 10mbit/64kb, 4mbit/32kb
#   sudo ./scripts/bench-bottleneck.sh 20mbit/128kb ...     # or any RATE/LIMIT (tc units)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
bin="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-8766}"
work="${WORK:-/tmp/webgear-bench}"
joins="${JOINS:-10}"
links=("$@")
((${#links[@]})) || links=(unshaped 10mbit/64kb 4mbit/32kb)
namespace=webgear-bottleneck
server_ip=10.213.0.1
viewer_ip=10.213.0.2
mkdir -p "$work"
source scripts/server-process.sh

clip="$work/clip-720p30-no-b-frames.mp4"
make_clip "$clip" -bf 0

remove_link() {
  ip netns del "$namespace" 2>/dev/null || true
  ip link del webgear-srv 2>/dev/null || true
}
trap 'stop_server; remove_link' EXIT
remove_link
ip netns add "$namespace"
ip link add webgear-srv type veth peer name webgear-viewer
ip link set webgear-viewer netns "$namespace"
ip addr add "$server_ip/24" dev webgear-srv
ip link set webgear-srv up
ip netns exec "$namespace" ip addr add "$viewer_ip/24" dev webgear-viewer
ip netns exec "$namespace" ip link set webgear-viewer up

for link in "${links[@]}"; do
  tc qdisc del dev webgear-srv root 2>/dev/null || true
  if [ "$link" != unshaped ]; then
    tc qdisc add dev webgear-srv root tbf rate "${link%/*}" burst 16kb limit "${link#*/}"
  fi
  # A fresh server each time: the clip plays from its start.
  "$bin/webgear-rtc" --source "$clip" --host 0.0.0.0 --port "$port" --options '{"frame_size_reduction": 0}' \
    >"$work/bottleneck-server.log" 2>&1 &
  server=$!
  wait_for_page || { echo "the server did not start; see $work/bottleneck-server.log"; exit 1; }
  echo "== $link"
  ip netns exec "$namespace" "$bin/webgear-probe" --url "http://$server_ip:$port" joins --count "$joins" --watch 3
  tc -s qdisc show dev webgear-srv | awk '/dropped/ { print "link: " $0 }'
  stop_server
done
