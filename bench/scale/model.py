#!/usr/bin/env python3
"""A capacity model of a Runwire deployment at internet scale (docs/scale-out.md,
"Internet scale, on paper").

It places W watchers on R active runs (run popularity Zipf-distributed, exponent S),
spreads them over N nodes by a load balancer (random, or by run: every watcher of a
run on the node its run id hashes to), and checks each node against per-node limits
measured on the 2-core reference VM (docs/performance.md) or stated as assumptions
below. It prints, for each N, what each node carries and the first limit that breaks,
then the smallest N that holds, the Redis load, and the cost per million delivered
events.

usage: python3 bench/scale/model.py [--watchers 1000000] [--runs 50000]
       [--events 1000] [--zipf 1.1] [--seed 7] [--node-cost-hour 0.10]
The seed is printed; the same seed gives the same placement.
"""

import argparse
import math
import random

# Per node (2 cores), measured (docs/performance.md, "Server" and "Redis").
MEASURED = {
    # Delivered events/s with one event per frame (no batching helps a run that
    # gets an event every few seconds): runwire without batching, 1000 subscribers.
    "deliveries_per_s": 2.43e6,
    # Resident memory per idle subscribed connection (10,000 connections).
    "kib_per_connection": 19.1,
    # Acknowledged append requests/s into one Redis with appendfsync always, 16
    # producers x 100 events (53 k events/s): a lower bound, set by 16 requests in
    # flight per fsync; a request of one event is assumed to cost as much.
    "redis_appends_per_s": 530.0,
}

# Assumptions (not measured on this machine; change them on the command line).
ASSUMED = {
    "ram_gib": 16.0,  # usable for connections per node
    "heartbeat_s": 25.0,  # spec default heartbeat interval
    "heartbeat_us": 20.0,  # CPU per ping + pong (write, read, parse, timers)
    "cpu_budget": 0.7,  # share of a node's 2 cores the model lets it use
    "max_connections": 100_000,  # the per-node connection target
}


def zipf_weights(n, s):
    w = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


def place(args, rng, nodes, policy):
    """Per node: connections, deliveries/s, watched runs."""
    weights = zipf_weights(args.runs, args.zipf)
    # Events per run per second: every run emits at the same rate.
    rate = args.events / args.runs
    conns = [0] * nodes
    watched = [0] * nodes
    for run, w in enumerate(weights):
        # The run's watchers: the expectation, rounded at random.
        mean = args.watchers * w
        k = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
        if k == 0:
            continue
        if policy == "by-run":
            node = (run * 2654435761) % 2**32 % nodes
            conns[node] += k
            watched[node] += 1
            continue
        # Random placement: each watcher on a node at random (the bulk of a very
        # popular run's watchers split evenly, the rest at random).
        even, rest = divmod(k, nodes) if k > 64 * nodes else (0, k)
        per = [even] * nodes
        for _ in range(rest):
            per[rng.randrange(nodes)] += 1
        for i, c in enumerate(per):
            if c:
                conns[i] += c
                watched[i] += 1
    deliveries = [c * rate for c in conns]
    return conns, deliveries, watched, rate


def check(args, rng, nodes, policy):
    conns, deliveries, watched, rate = place(args, rng, nodes, policy)
    cap = MEASURED["deliveries_per_s"] * ASSUMED["cpu_budget"]
    worst = max(range(nodes), key=lambda i: conns[i])
    c, d, w = conns[worst], deliveries[worst], watched[worst]
    mem_gib = c * MEASURED["kib_per_connection"] / 2**20
    hb_cores = c / ASSUMED["heartbeat_s"] * ASSUMED["heartbeat_us"] / 1e6
    deliver_cores = d / cap * 2 * ASSUMED["cpu_budget"]
    # Each node reads each event of each run it watches once from Redis.
    feed_reads = sum(watched) * rate
    limits = [
        ("connections", c / ASSUMED["max_connections"]),
        ("memory", mem_gib / ASSUMED["ram_gib"]),
        ("cpu", (hb_cores + deliver_cores) / (2 * ASSUMED["cpu_budget"])),
    ]
    name, load = max(limits, key=lambda x: x[1])
    return {
        "nodes": nodes,
        "conns": c,
        "mem_gib": mem_gib,
        "hb_cores": hb_cores,
        "deliver_cores": deliver_cores,
        "watched": w,
        "feed_reads": feed_reads,
        "limit": name,
        "load": load,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--watchers", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=50_000)
    p.add_argument("--events", type=float, default=1000.0, help="aggregate events/s")
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--node-cost-hour", type=float, default=0.10)
    args = p.parse_args()
    print(f"seed {args.seed}; {args.watchers} watchers, {args.runs} runs, "
          f"{args.events:g} events/s aggregate, Zipf {args.zipf}")
    print("measured:", MEASURED)
    print("assumed:", ASSUMED)
    for policy in ("random", "by-run"):
        print(f"\nload balancer: {policy}")
        print(f"{'nodes':>5} {'conns/node':>10} {'GiB':>5} {'hb cores':>8} "
              f"{'dlv cores':>9} {'runs watched/node':>17} {'feed reads/s':>12}  first limit")
        chosen = None
        for nodes in (4, 6, 8, 10, 12, 16, 20, 24, 32):
            r = check(args, random.Random(args.seed), nodes, policy)
            print(f"{nodes:>5} {r['conns']:>10} {r['mem_gib']:>5.1f} {r['hb_cores']:>8.3f} "
                  f"{r['deliver_cores']:>9.4f} {r['watched']:>17} {r['feed_reads']:>12.0f}  "
                  f"{r['limit']} at {r['load'] * 100:.0f} %")
            if chosen is None and r["load"] <= 1.0:
                chosen = r
        if chosen:
            deliveries_h = args.watchers * args.events / args.runs * 3600
            cost = chosen["nodes"] * args.node_cost_hour / (deliveries_h / 1e6)
            print(f"smallest that holds: {chosen['nodes']} nodes; "
                  f"{deliveries_h / 3600:.0f} deliveries/s; "
                  f"${cost:.4f} per million delivered events at "
                  f"${args.node_cost_hour}/node-hour (Redis not included)")
    appends = args.events  # one event per request at this rate per run
    masters = math.ceil(appends / MEASURED["redis_appends_per_s"])
    print(f"\nRedis: {appends:g} appends/s at {MEASURED['redis_appends_per_s']:g} "
          f"durable appends/s per master -> at least {masters} cluster masters "
          f"(one Redis is enough only if appends are batched)")


if __name__ == "__main__":
    main()
