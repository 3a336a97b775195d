#!/usr/bin/env bash
# cpp-httplib against libmicrohttpd (bench/http_servers.cpp) under wrk: small JSON
# POSTs and 64-event SSE streams, 16 connections, 10 s each. Needs wrk and
# libmicrohttpd-dev (Debian) at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
for lib in httplib microhttpd; do
  build/bench/bench_http_servers --library "$lib" --port 18090 2>/dev/null &
  pid=$!
  sleep 0.5
  echo "== $lib: POST /echo"
  wrk -t2 -c16 -d10s --latency -s bench/http_post.lua http://127.0.0.1:18090/echo | grep -E "Requests/sec|50%|99%"
  echo "== $lib: GET /stream (64 events)"
  wrk -t2 -c16 -d10s --latency http://127.0.0.1:18090/stream | grep -E "Requests/sec|50%|99%"
  kill -TERM $pid; wait $pid || true
done
