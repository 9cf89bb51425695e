# Sourced by the benchmark scripts: the server they start in the background, kept in
# $server, is stopped (SIGTERM, then waited for) by stop_server and when the script exits.
# wait_for_page waits until it serves its page on $port (false if it died or never did).
# make_clip PATH [ffmpeg options] makes the benchmarks' 60 s clip (1280x720, 30 fps,
# H.264 at ~1.5 Mbit/s, a keyframe every 2 s) unless PATH already holds it.
server=""
stop_server() {
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap stop_server EXIT
wait_for_page() {
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || return 1
    sleep 0.3
  done
  return 1
}
make_clip() {
  local clip=$1
  shift
  [ -s "$clip" ] || ffmpeg -loglevel error -y -f lavfi -i testsrc2=size=1280x720:rate=30 -t 60 \
    -c:v libx264 -preset veryfast "$@" -b:v 1500k -maxrate 1500k -bufsize 3000k -g 60 -pix_fmt yuv420p "$clip"
}
