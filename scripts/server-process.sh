# Sourced by the benchmark scripts: the server they start in the background, kept in
# $server, is stopped (SIGTERM, then waited for) by stop_server and when the script exits.
server=""
stop_server() {
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
trap stop_server EXIT
