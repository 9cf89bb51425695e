#!/usr/bin/env bash
# Many viewers on one stream: for each N given (default 1 10 100 250 500 1000), holds N
# light viewers (webgear-load: real WebRTC peers that count RTP but do not decode) against
# a release build of the server streaming the 1280x720 30 fps test pattern unreduced, and
# reports viewers at full rate, frame rate, loss, time to first frame, the server's CPU and
# memory, and its capture-to-send latency. The viewers run on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
target="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-8766}"
counts=("$@")
((${#counts[@]})) || counts=(1 10 100 250 500 1000)

"$target/webgear-rtc" --host 127.0.0.1 --port "$port" \
  --options '{"frame_size_reduction": 0, "max_viewers": 5000}' >/dev/null 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
sleep 2

viewers_held() {
  curl -fsS "http://127.0.0.1:$port/metrics" | awk '$1 == "webgear_viewers" { print $2 }'
}

for n in "${counts[@]}"; do
  # Viewers of the previous round leave without saying goodbye; wait until the server has
  # noticed (ICE timeout) so every round starts from an empty server.
  for _ in $(seq 60); do [ "$(viewers_held)" = "0" ] && break; sleep 1; done
  echo "== $n viewers"
  "$target/webgear-load" --url "http://127.0.0.1:$port" --viewers "$n" --ramp 100 --settle 3 --seconds 10 \
    --server-pid "$server" --metrics
done
