#!/usr/bin/env bash
# Time to first frame and server CPU with 1 and 10 decoding viewers, against a release
# build of the server streaming the test pattern (1280x720 at 30 fps, reduced to 1024x576).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p webgear-rtc-cli -p webgear-testkit
target="${CARGO_TARGET_DIR:-target}/release"
port="${PORT:-8765}"

"$target/webgear-rtc" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
sleep 2

probe="$target/webgear-probe --url http://127.0.0.1:$port"
$probe hold --viewers 0 --seconds 5 --server-pid "$server"
$probe joins --count 20
$probe hold --viewers 1 --seconds 10 --server-pid "$server"
$probe hold --viewers 10 --seconds 10 --server-pid "$server"
