#!/bin/bash
# RSS of the gateway process with and without the metrics endpoint.
# Usage (after cargo build --release -p edgegw): T=60 gateway/benches/metrics_rss.sh
# Runs in the current directory (writes gw.toml, log.txt, st/); needs mosquitto and curl.
BIN=${BIN:-$(dirname "$0")/../../target/release/edge-gateway}
P=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mosquitto -p $P >/dev/null 2>&1 & MP=$!
sleep 0.5
run() { # $1 = metrics section or empty, $2 = label
  rm -rf st; cat > gw.toml <<EOC
[gateway]
name = "rss"
state_dir = "$PWD/st"
[mqtt]
host = "127.0.0.1"
port = $P
$1
[[synthetic]]
name = "sim"
group = "g"
tags = [{ name = "a", signal = "counter", rate_hz = 100.0 }, { name = "b", signal = "sine", rate_hz = 100.0, min = 0.0, max = 1.0, period_ms = 1000 }]
EOC
  $BIN run --config gw.toml 2> log.txt & GP=$!
  sleep 5
  idle=$(awk '/VmRSS/{print $2}' /proc/$GP/status)
  A=$(grep -o 'address=[0-9.:]*' log.txt | head -1 | cut -d= -f2)
  n=0; end=$((SECONDS + ${T:-60}))
  while [ $SECONDS -lt $end ]; do
    if [ -n "$A" ]; then curl -s $A/metrics >/dev/null; n=$((n+1)); else sleep 0.2; fi
  done
  sleep 1
  after=$(awk '/VmRSS/{print $2}' /proc/$GP/status)
  hwm=$(awk '/VmHWM/{print $2}' /proc/$GP/status)
  echo "$2: RSS idle ${idle} kB, after ${T:-60} s with $n scrapes ${after} kB, peak ${hwm} kB"
  kill $GP; wait $GP 2>/dev/null
}
for r in 1 2; do
  run "" "no endpoint"
  run $'[metrics]\nport = 0' "endpoint   "
done
kill $MP
