#!/usr/bin/env bash
# Runs the server conformance suite against two `runwire serve --store redis://…` nodes
# sharing one private redis-server: WebSocket clients are spread over both nodes by a
# round-robin proxy, the producer API goes to node A, so every live event a client on
# node B receives crossed nodes through Redis.
#
# With RUNWIRE_REDIS_CLUSTER=1 the store is a private three-master Redis Cluster
# (`cluster-enabled yes`, slots assigned by hand) instead of one redis-server, and only
# pass 1 runs (every client on node B, so every live event crosses nodes).
#
# usage: bench/redis/two-node-conformance.sh [extra `runwire conform server` flags]
# needs: redis-server (and redis-cli for a cluster), python3, a built `runwire`
#        (RUNWIRE=path, default target/debug/runwire)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
runwire="${RUNWIRE:-$root/target/debug/runwire}"
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install -y redis-server)" >&2; exit 2; }
[ -x "$runwire" ] || { echo "build runwire first: cargo build -p runwire-cli" >&2; exit 2; }
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_redis() { # dir port [extra redis-server flags]
  local d="$1" p="$2"; shift 2
  mkdir -p "$d"
  redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync always \
    --dir "$d" --daemonize no "$@" >"$d/redis.log" 2>&1 &
  pids+=($!)
  until grep -q "Ready to accept connections" "$d/redis.log"; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$d/redis.log" >&2; exit 1; }
    sleep 0.05
  done
}
cluster="${RUNWIRE_REDIS_CLUSTER:-0}"
if [ "$cluster" = 1 ]; then
  command -v redis-cli >/dev/null || { echo "redis-cli is not installed (apt-get install -y redis-tools)" >&2; exit 2; }
  ports=() buses=()
  for i in 0 1 2; do
    p="$(free_port)" bus="$(free_port)"
    start_redis "$tmp/r$i" "$p" --cluster-enabled yes --cluster-port "$bus" \
      --cluster-config-file "$tmp/r$i/nodes.conf" --cluster-node-timeout 2000
    ports+=("$p") buses+=("$bus")
  done
  # Three equal slot ranges, then every node meets the first.
  redis-cli -p "${ports[0]}" cluster addslotsrange 0 5460 >/dev/null
  redis-cli -p "${ports[1]}" cluster addslotsrange 5461 10921 >/dev/null
  redis-cli -p "${ports[2]}" cluster addslotsrange 10922 16383 >/dev/null
  for i in 1 2; do redis-cli -p "${ports[0]}" cluster meet 127.0.0.1 "${ports[$i]}" "${buses[$i]}" >/dev/null; done
  for p in "${ports[@]}"; do
    until redis-cli -p "$p" cluster info | grep -q "cluster_state:ok" \
      && redis-cli -p "$p" cluster info | grep -q "cluster_known_nodes:3"; do sleep 0.05; done
  done
  store="redis-cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
else
  port="$(free_port)"
  start_redis "$tmp/r" "$port"
  store="redis://127.0.0.1:$port"
fi

wait_line() { # file pid pattern
  until grep -q "$3" "$1"; do
    kill -0 "$2" 2>/dev/null || { cat "$1" "$1.err" >&2 2>/dev/null; exit 1; }
    sleep 0.05
  done
}
for n in a b; do
  "$runwire" serve --listen 127.0.0.1:0 --store "$store" --config "$here/conformance.toml" \
    >"$tmp/$n.out" 2>"$tmp/$n.err" &
  echo $! >"$tmp/$n.pid"
  wait_line "$tmp/$n.out" "$!" "listening on"
done
a="$(head -1 "$tmp/a.out" | awk '{print $NF}')"
b="$(head -1 "$tmp/b.out" | awk '{print $NF}')"
cleanup() {
  for f in "$tmp"/*.pid; do kill "$(cat "$f")" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$tmp"
}
# The restart command of the restart scenarios: both nodes get SIGTERM together (a
# graceful shutdown each), and once both are gone both start again on their
# addresses, so that clients resume on restarted nodes and acknowledged events come
# back from Redis. (A rolling restart would leave one node accepting appends while
# the other shuts down, which the single-server restart scenarios do not expect.)
cat >"$tmp/restart.sh" <<RESTART
#!/usr/bin/env bash
set -euo pipefail
for n in a b; do kill -TERM "\$(cat "$tmp/\$n.pid")" 2>/dev/null || true; done
for n in a b; do
  pid="\$(cat "$tmp/\$n.pid")"
  while kill -0 "\$pid" 2>/dev/null; do sleep 0.02; done
done
for n in a b; do
  addr="\$(head -1 "$tmp/\$n.out" | awk '{print \$NF}')"
  "$runwire" serve --listen "\$addr" --store "$store" --config "$here/conformance.toml" \\
    >"$tmp/\$n.out2" 2>>"$tmp/\$n.err" </dev/null &
  echo \$! >"$tmp/\$n.pid"
done
for n in a b; do
  until grep -q "listening on" "$tmp/\$n.out2" 2>/dev/null; do sleep 0.02; done
done
RESTART
chmod +x "$tmp/restart.sh"
python3 "$here/rr_proxy.py" "$a" "$b" >"$tmp/proxy.out" &
pids+=($!)
wait_line "$tmp/proxy.out" "$!" ":"
lb="$(head -1 "$tmp/proxy.out")"
# Both passes declare the retention of conformance.toml's `[[retention.runs]]` rule
# (`rwc-retained-*` keeps 50 events), which the Redis store applies per run, so the
# @retention scenarios check trimming, 410 and resets across nodes.
# Both passes leave out the RW-SHUTDOWN-1 scenario: it checks that once "the server"
# has begun shutting down (the kit sees one node close a client with server_shutdown)
# no new session is welcomed and no append accepted. Two nodes get their SIGTERM one
# after the other, so for a moment one node shuts down while the other still serves;
# a late connection or append that reaches the other node then succeeds, as it
# should in a rolling deployment. That is a property of the test setup, not of a node;
# the single-server reference run (`runwire conform`) checks RW-SHUTDOWN-1.
skip_shutdown='not @RW-SHUTDOWN-1'
# Pass 1: every client on node B, the producer on node A: each live event crosses
# nodes through Redis, and client sockets are direct (slow-consumer scenarios need
# real back-pressure, which a buffering proxy would hide).
echo "pass 1: redis $store; producer on node A $a; clients on node B $b" >&2
"$runwire" conform server --url "ws://$b/v1/stream" --ingest "http://$a" \
  --token rwc-reference-full-token --limited-token rwc-reference-limited-token \
  --short-retention rwc-retained-=50 --restart-cmd "$tmp/restart.sh" "${@:---tags=$skip_shutdown}"
if [ "$cluster" = 1 ]; then exit 0; fi
# Pass 2: clients spread over both nodes by the round-robin proxy (one connection
# to A, the next to B, ...), producer on A; slow-consumer scenarios are left to pass 1.
echo "pass 2: clients round-robin over A and B via $lb; producer on node A" >&2
"$runwire" conform server --url "ws://$lb/v1/stream" --ingest "http://$a" \
  --token rwc-reference-full-token --limited-token rwc-reference-limited-token \
  --short-retention rwc-retained-=50 --restart-cmd "$tmp/restart.sh" "${@:---tags=not @slow and $skip_shutdown}"
