#!/usr/bin/env bash
# Gateway CPU with HLS on and off under the same load (N RTMP publishers from the load tool, DUR s),
# pool bytes per stream with the default HLS window, and the EXTINF of one playlist.
# Usage: N=50 DUR=40 bash bench/hls-cost.sh   (uses ports 19350 and 18080; run on an idle machine)
set -u
cd "$(dirname "$0")/.."
N=${N:-50}
DUR=${DUR:-40}
for hls in true false; do
  cfg=$(mktemp --suffix=.json)
  echo "{\"hls\":{\"enabled\":$hls},\"log\":{\"level\":\"warn\"}}" > $cfg
  TRIBUTARY_CONFIG=$cfg TRIBUTARY_RTMP_PORT=19350 TRIBUTARY_HTTP_PORT=18080 node --import tsx gateway/main.ts > /tmp/gw-$hls.log 2>&1 &
  pid=$!
  for i in $(seq 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.2; done
  ticks() { awk '{print $14+$15}' /proc/$pid/stat; }
  npm run loadtest -- --protocol rtmp --publishers $N --duration $DUR --rtmp-port 19350 --http-port 18080 --quiet --out /tmp/lt-$hls >/tmp/lt-$hls.out 2>&1 &
  lt=$!
  # measure the gateway over the middle of the run: after ramp+warmup, for DUR-10 s
  sleep $(( N/50 > 2 ? N/50 : 2 )); sleep 8
  t0=$(ticks); s0=$(date +%s.%N)
  sleep $(( DUR - 10 ))
  t1=$(ticks); s1=$(date +%s.%N)
  pool=$(curl -s http://127.0.0.1:18080/metrics | awk '/^tributary_pool_bytes_in_use /{print $2}')
  streams=$(curl -s http://127.0.0.1:18080/metrics | awk '/^tributary_streams_active /{print $2}')
  rss=$(awk '/VmRSS/{print $2}' /proc/$pid/status)
  if [ "$hls" = true ]; then curl -s http://127.0.0.1:18080/hls/live/lt0/index.m3u8 > /tmp/lt0.m3u8; fi
  wait $lt
  hz=$(getconf CLK_TCK)
  echo "hls=$hls streams=$streams cpu=$(echo "($t1-$t0)/$hz/($s1-$s0)*100" | bc -l | cut -c1-5)% of a core; pool=$pool B ($(echo "$pool/$streams/1048576" | bc -l | cut -c1-5) MiB/stream); rss=$((rss/1024)) MiB"
  kill -TERM $pid; wait $pid
  rm -f $cfg
done
grep EXTINF /tmp/lt0.m3u8 | head -20 | tr '\n' ' '; echo
