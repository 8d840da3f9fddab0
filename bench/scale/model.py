#!/usr/bin/env python3
"""A capacity model and an event-level simulation of a Runwire deployment at
internet scale (docs/scale-out.md, "Internet scale, on paper").

The question: how many 2-core nodes, and which Redis topology, serve W concurrent
watchers of R active runs at E events/s in aggregate; what breaks first; and what a
million delivered events cost.

Placement (both parts). Run popularity is Zipf-distributed (exponent --zipf): run k
gets a share proportional to 1/k^s of the watchers. A load balancer spreads the
watchers over N nodes, either at random ("random": what a random or
least-connections balancer does) or by run ("by-run": every watcher of a run on the
node its run id hashes to).

Static capacity table (always printed). For each N it checks the fullest node
against per-node limits: connections, memory, CPU (heartbeats + deliveries), and
prints the first limit that breaks, then the smallest N that holds and the cost per
million delivered events.

Event-level simulation (--simulate SECONDS, default 10; 0 turns it off). A
discrete-event simulation (heapq) of SECONDS of traffic, for each node count of
--sim-nodes and each Redis topology of --masters (1 = one Redis, 1c = one Redis run
as a one-master cluster, M > 1 = a cluster of M masters with runs hashed to
masters), at each multiple of --events given by --stress. It models:

- events: a Poisson process at the aggregate rate. Each event's run is drawn
  uniformly (--event-runs uniform: every active run emits at the same rate, as in
  the static table) or by watcher popularity (--event-runs zipf: the most watched
  runs are also the busiest, the worst case for fan-out).
- the append: the producer's request reaches a node at random and becomes one
  request at the run's Redis master. A master is one thread that works in turns
  (group commit, as Redis does with appendfsync always): a turn runs every request
  queued when it starts (append scripts, stream reads), then one fsync if the turn
  held an append, then replies to all of them. Script cost and fsync time are
  calibrated so that one master at 1,000 requests/s answers with the measured
  acknowledgement times (printed as a calibration line).
- the hop: for every node that has watchers of the run, the node's reader reads
  the event from Redis (a stream read queued at the master: per entry, plus, on one
  Redis, a per-key cost for each new XREAD over every stream the node watches) and
  the event reaches the node after the measured ack-to-delivery hop (same node or
  another node; one Redis or a cluster), or after its read, whichever is later.
- the node: two cores, modelled as one FIFO server of capacity 2 x (1 - heartbeat
  utilisation), that spends the measured per-delivery cost on each of the node's
  watchers of the run plus a fixed cost per event read. Work is simulated per
  (event, node) item, not per watcher.

It prints, per configuration: publish->last-delivery latency p50/p99/max (publish =
the append request reaching Redis), the busiest node's CPU utilisation, the busiest
master's utilisation, and which resource saturates first.

usage: python3 bench/scale/model.py [--watchers 1000000] [--runs 50000]
       [--events 1000] [--zipf 1.1] [--seed 7] [--node-cost-hour 0.10]
       [--simulate 10] [--sim-nodes 12,16] [--masters 1,1c,3] [--stress 1,10]
       [--event-runs uniform|zipf] [--per-delivery-us 0.82]
       [--assume NAME=VALUE ...]
       python3 bench/scale/model.py --self-test
The seed is printed; the same seed gives the same placement and the same
simulation. Standard library only.
"""

import argparse
import bisect
import heapq
import math
import random
import sys

# Per node (2 cores) and per Redis, measured on the 2-core reference VM
# (docs/performance.md, sections "Server", "Connections per node" and "Redis").
MEASURED = {
    # Delivered events/s with one event per frame (no batching helps a run that
    # gets an event every few seconds): runwire without batching, 1000 subscribers,
    # load generator on the same two cores.
    "deliveries_per_s": 2.43e6,
    # Resident memory per idle subscribed connection, at 19,490 connections.
    "kib_per_connection": 9.4,
    # The most connections measured on one node (the machine's open-file limit is
    # 20,000); the per-node target of 100,000 is an assumption (ASSUMED).
    "max_connections_measured": 19_490,
    # Server CPU per heartbeat ping + pong: 43-55 us, at 3,900 pings/s with 19,490
    # connections and a 5 s heartbeat.
    "heartbeat_us": 50.0,
    # Server-side publish -> frame written p99 at widths 1, 100 and 10,000 (ms).
    "server_p99_ms": 0.5,
    # One Redis, appendfsync always, 16 requests in flight: 10,000 append requests/s
    # of one event each were sustained (ack p50 2.8 ms, p99 7.6 ms), with Redis at
    # 52 % of a core: 52 us per request, another node's reads of the events included
    # (63 us at 2 events, 236-252 at 10, 940-960 at 100; the Redis bench's latency
    # mode). The limit was not reached, so this is a lower bound.
    "redis_appends_per_s": 10000.0,
    "redis_cpu_per_request_us": {1: 52.0, 2: 63.0, 10: 244.0, 100: 950.0},
    # Their acknowledgement times (ms): p50 1.8-3.0, p99 8-30 (fsync stalls).
    "redis_ack_p50_ms": (1.8, 3.0),
    "redis_ack_p99_ms": (8.0, 30.0),
    # From an append's acknowledgement to delivery on another node (ms), two nodes on
    # one Redis, 10,000 events/s: p50 1.0-1.3, p99 5.3-7.4; on the same node p99 1.5.
    "hop_other_p50_ms": (1.0, 1.3),
    "hop_other_p99_ms": (5.3, 7.4),
    "hop_same_p99_ms": 1.5,
    # The same on a 3-master cluster: p50 1.1-2.6, p99 5.3-13.
    "hop_cluster_p50_ms": (1.1, 2.6),
    "hop_cluster_p99_ms": (5.3, 13.0),
    # One Redis: its CPU per stream named in a node reader's XREAD BLOCK, per
    # wake-up (bench/scale/xread_cost.py: 1.06-1.39 us at 13,000 streams named,
    # 0.61-0.70 us at 1,000; Redis 7.0.15).
    "xread_key_us": 1.1,
}

# Assumptions (not measured on this machine; change them on the command line or
# here). The simulation's own constants are derived or assumed below.
ASSUMED = {
    "ram_gib": 16.0,  # usable for connections per node
    "heartbeat_s": 25.0,  # spec default heartbeat interval
    "cpu_budget": 0.7,  # share of a node's 2 cores the static table lets it use
    "max_connections": 100_000,  # the per-node connection target
    # Simulation only:
    "cores": 2,
    "read_us": 20.0,  # node CPU per event read from Redis (wake-up, parse)
    # Redis master: script cost of an append request, 30 us + 9 us per event, plus
    # 5 us per stream entry a node reads. Not measured apart; together they give
    # 44 us for a one-event request read by one other node, against 52 us measured
    # for all of Redis's work (MEASURED["redis_cpu_per_request_us"]), and 125 us at
    # 10 events against 236-252 measured.
    "script_us": 30.0,
    "script_event_us": 9.0,
    "stream_read_us": 5.0,  # master CPU per stream entry read by one node
    "hop_same_median_ms": 0.3,  # ack -> delivery on the appending node (p99 measured)
    "fsync_median_ms": 1.0,  # fsync time, lognormal, fitted to the ack times
    "fsync_sigma": 0.85,
}

Z99 = 2.3263  # the standard normal's 99th percentile


def lognormal_params(p50, p99):
    """mu, sigma of a lognormal with the given median and 99th percentile."""
    return math.log(p50), math.log(p99 / p50) / Z99


def mid(pair):
    return (pair[0] + pair[1]) / 2


def zipf_weights(n, s):
    w = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


def run_hash(run):
    return (run * 2654435761) % 2**32


def place_runs(args, rng, nodes, policy):
    """Per run: a list of (node, watchers on that node)."""
    weights = zipf_weights(args.runs, args.zipf)
    out = []
    for run, w in enumerate(weights):
        # The run's watchers: the expectation, rounded at random.
        mean = args.watchers * w
        k = int(mean) + (1 if rng.random() < mean - int(mean) else 0)
        if k == 0:
            out.append([])
            continue
        if policy == "by-run":
            out.append([(run_hash(run) % nodes, k)])
            continue
        # Random placement: each watcher on a node at random (the bulk of a very
        # popular run's watchers split evenly, the rest at random).
        even, rest = divmod(k, nodes) if k > 64 * nodes else (0, k)
        per = [even] * nodes
        for _ in range(rest):
            per[rng.randrange(nodes)] += 1
        out.append([(i, c) for i, c in enumerate(per) if c])
    return out, weights


def place(args, rng, nodes, policy):
    """Per node: connections, deliveries/s, watched runs."""
    per_run, _ = place_runs(args, rng, nodes, policy)
    # Events per run per second: every run emits at the same rate.
    rate = args.events / args.runs
    conns = [0] * nodes
    watched = [0] * nodes
    for entries in per_run:
        for node, c in entries:
            conns[node] += c
            watched[node] += 1
    deliveries = [c * rate for c in conns]
    return conns, deliveries, watched, rate


def check(args, rng, nodes, policy):
    conns, deliveries, watched, rate = place(args, rng, nodes, policy)
    cap = MEASURED["deliveries_per_s"] * ASSUMED["cpu_budget"]
    worst = max(range(nodes), key=lambda i: conns[i])
    c, d, w = conns[worst], deliveries[worst], watched[worst]
    mem_gib = c * MEASURED["kib_per_connection"] / 2**20
    hb_cores = c / ASSUMED["heartbeat_s"] * MEASURED["heartbeat_us"] / 1e6
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


def static_table(args):
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
    print(f"\nRedis: {args.events:g} appends/s of one event each (a run gets an event "
          f"every {args.runs / args.events:g} s, so nothing batches); one Redis sustained "
          f"{MEASURED['redis_appends_per_s']:g} requests/s of one event (a lower bound, "
          f"its limit not reached)")


# --- the simulation ---------------------------------------------------------


class Master:
    """One Redis master: a single thread working in turns (group commit)."""

    __slots__ = ("queue", "busy", "work_s", "turns")
    # work_s counts the thread's CPU work (scripts, reads), not the fsyncs: with
    # group commit a master at any load spends most of its time in fsync, and it
    # saturates when the CPU work alone fills the time (turns then grow without end).

    def __init__(self):
        self.queue = []  # jobs waiting for the next turn: (cost_s, kind, payload)
        self.busy = False
        self.work_s = 0.0  # CPU time (scripts, reads)
        self.turns = 0


class Sim:
    """One simulated configuration. Call run(); results in the returned dict."""

    def __init__(self, per_run, run_cdf, nodes, masters, rate, seconds, seed,
                 per_delivery_us, conns, params=None, doorbell=None):
        self.p = dict(ASSUMED, xread_key_us=MEASURED["xread_key_us"])
        if params:
            self.p.update(params)
        self.per_run = per_run
        self.run_cdf = run_cdf  # cumulative event probability per run, or None
        self.nruns = len(per_run)
        self.nodes = nodes
        self.nmasters = masters
        # The live feed: doorbells and XRANGE (a cluster, also one of one master) or
        # one XREAD per node over every stream it watches (one plain Redis).
        self.doorbell = masters > 1 if doorbell is None else doorbell
        self.rate = rate
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.dlv_s = per_delivery_us / 1e6
        self.read_s = self.p["read_us"] / 1e6
        # Heartbeats as background utilisation of each node's cores.
        self.hb_util = [
            min(0.99, c / self.p["heartbeat_s"] * MEASURED["heartbeat_us"] / 1e6
                / self.p["cores"]) for c in conns
        ]
        self.capacity = [self.p["cores"] * (1 - u) for u in self.hb_util]
        # Keys each node's XREAD names (one Redis): the runs it watches.
        self.keys = [0] * nodes
        for entries in per_run:
            for n, _ in entries:
                self.keys[n] += 1
        if not self.doorbell:
            o50, o99 = mid(MEASURED["hop_other_p50_ms"]), mid(MEASURED["hop_other_p99_ms"])
        else:
            o50, o99 = mid(MEASURED["hop_cluster_p50_ms"]), mid(MEASURED["hop_cluster_p99_ms"])
        self.hop_other = lognormal_params(o50 / 1e3, o99 / 1e3)
        # Same node: only the p99 is measured; the median is assumed.
        self.hop_same = lognormal_params(self.p["hop_same_median_ms"] / 1e3,
                                         MEASURED["hop_same_p99_ms"] / 1e3)
        self.fsync = (math.log(self.p["fsync_median_ms"] / 1e3), self.p["fsync_sigma"])

    def lognormal(self, params):
        return self.rng.lognormvariate(params[0], params[1])

    def run(self):
        p, rng = self.p, self.rng
        heap = []  # (time, seq, kind, data)
        seq = 0
        masters = [Master() for _ in range(self.nmasters)]
        node_free = [0.0] * self.nodes
        node_work = [0.0] * self.nodes
        # One Redis: each node's reader has one XREAD over every stream it watches
        # in flight at a time; events acknowledged meanwhile wait for the next one.
        reading = [False] * self.nodes
        waiting = [[] for _ in range(self.nodes)]
        entry_s = p["stream_read_us"] / 1e6
        key_s = p["xread_key_us"] / 1e6
        deliveries = 0
        latencies = []
        pending = {}  # event id -> [t_publish, nodes left, latest finish]
        published = 0
        t = 0.0
        # Pre-draw the arrivals lazily: one "arrive" event at a time.
        heapq.heappush(heap, (rng.expovariate(self.rate), seq, "arrive", None))

        def submit(m, now, cost, kind, payload):
            master = masters[m]
            master.queue.append((cost, kind, payload))
            if not master.busy:
                start_turn(m, now)

        def xread(n, batch):
            reading[n] = True
            submit(0, t, self.keys[n] * key_s + len(batch) * entry_s, "read", (n, batch))

        def start_turn(m, now):
            nonlocal seq
            master = masters[m]
            jobs, master.queue = master.queue, []
            master.busy = True
            master.turns += 1
            dur = sum(j[0] for j in jobs)
            master.work_s += dur
            if any(j[1] == "append" for j in jobs):
                dur += rng.lognormvariate(*self.fsync)
            seq += 1
            heapq.heappush(heap, (now + dur, seq, "turn", (m, jobs)))

        while heap:
            t, _, kind, data = heapq.heappop(heap)
            if kind == "arrive":
                if t > self.seconds:
                    continue
                if self.run_cdf is None:
                    run = rng.randrange(self.nruns)
                else:
                    run = min(bisect.bisect_left(self.run_cdf, rng.random()), self.nruns - 1)
                eid = published
                published += 1
                entry_node = rng.randrange(self.nodes)
                cost = (p["script_us"] + p["script_event_us"]) / 1e6
                submit(run_hash(run) % self.nmasters, t, cost, "append",
                       (eid, run, entry_node, t))
                seq += 1
                heapq.heappush(heap, (t + rng.expovariate(self.rate), seq, "arrive", None))
            elif kind == "turn":
                m, jobs = data
                # Requests that arrive while the replies go out wait for the next turn.
                for _, jkind, payload in jobs:
                    if jkind == "append":
                        eid, run, entry_node, t_pub = payload
                        entries = self.per_run[run]
                        if not entries:
                            latencies.append(t - t_pub)
                            continue
                        pending[eid] = [t_pub, len(entries), t]
                        for n, k in entries:
                            hop = self.lognormal(self.hop_same if n == entry_node
                                                 else self.hop_other)
                            item = (eid, k, t + hop)
                            if self.doorbell:
                                # Cluster: a doorbell, then an XRANGE of the run's
                                # stream on its master.
                                submit(m, t, entry_s, "read", (n, [item]))
                            elif reading[n]:
                                # One Redis: the node's XREAD is under way; the
                                # event comes with its next one.
                                waiting[n].append(item)
                            else:
                                xread(n, [item])
                    else:  # a node's read came back
                        n, items = payload
                        for eid, k, t_hop in items:
                            seq += 1
                            heapq.heappush(heap, (max(t, t_hop), seq, "node", (eid, n, k)))
                        if not self.doorbell:
                            reading[n] = False
                            if waiting[n]:
                                batch, waiting[n] = waiting[n], []
                                xread(n, batch)
                masters[m].busy = False
                if masters[m].queue:
                    start_turn(m, t)
            else:  # "node": an event reaches a node with k watchers of its run
                eid, n, k = data
                work = self.read_s + k * self.dlv_s
                start = max(t, node_free[n])
                # Both cores share a big fan-out; one delivery is never split.
                span = max(self.read_s + self.dlv_s, work / self.capacity[n])
                node_free[n] = start + span
                node_work[n] += work
                deliveries += k
                rec = pending[eid]
                rec[1] -= 1
                rec[2] = max(rec[2], start + span)
                if rec[1] == 0:
                    latencies.append(rec[2] - rec[0])
                    del pending[eid]
        # The last work done: a master's turn or a node's deliveries.
        end = max([t, self.seconds] + node_free)
        node_util = [
            min(9.99, w / (self.p["cores"] * self.seconds) + u)
            for w, u in zip(node_work, self.hb_util)
        ]
        redis_util = [min(9.99, m.work_s / self.seconds) for m in masters]
        latencies.sort()
        return {
            "published": published,
            "completed": len(latencies),
            "deliveries": deliveries,
            "p50": pct(latencies, 0.50),
            "p99": pct(latencies, 0.99),
            "max": latencies[-1] if latencies else float("nan"),
            "node_util": max(node_util) if node_util else 0.0,
            "hb_util": max(self.hb_util) if self.hb_util else 0.0,
            "redis_util": max(redis_util),
            "drain_s": end - self.seconds,
        }


def pct(sorted_values, q):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def first_limit(conns_util, r):
    limits = [
        ("connections", conns_util),
        ("node CPU", r["node_util"]),
        ("Redis", r["redis_util"]),
    ]
    name, load = max(limits, key=lambda x: x[1])
    return name, load


def calibration(seed, seconds=20.0):
    """One master, 1,000 append requests/s of 10 events, no readers: ack times."""
    sim = Sim([[] for _ in range(1)], None, 1, 1, 1000.0, seconds, seed, 1.0, [0],
              params={"script_us": ASSUMED["script_us"] + 9 * ASSUMED["script_event_us"]})
    return sim.run()


def simulate(args):
    print(f"\nsimulation: {args.simulate:g} s of traffic per configuration, seed {args.seed}, "
          f"events on runs drawn {args.event_runs}, "
          f"{args.per_delivery_us:g} us of node CPU per delivery")
    cal = calibration(args.seed)
    print(f"calibration: one Redis at 1,000 requests/s of 10 events: ack p50 "
          f"{cal['p50'] * 1e3:.1f} ms, p99 {cal['p99'] * 1e3:.1f} ms "
          f"(measured p50 1.8-3.0, p99 8-30); utilisation {cal['redis_util'] * 100:.0f} %")
    print(f"{'nodes':>5} {'masters':>7} {'events/s':>9} {'events':>8} {'deliv/s':>9} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} {'node CPU':>8} {'Redis':>6} "
          f"{'drain s':>7}  first limit")
    rows = []
    for nodes in args.sim_nodes:
        per_run, weights = place_runs(args, random.Random(args.seed), nodes, "random")
        conns = [0] * nodes
        for entries in per_run:
            for n, c in entries:
                conns[n] += c
        conns_util = max(conns) / ASSUMED["max_connections"]
        cdf = None
        if args.event_runs == "zipf":
            cdf, acc = [], 0.0
            for w in weights:
                acc += w
                cdf.append(acc)
        for masters, doorbell in args.masters:
            label = f"{masters}c" if doorbell and masters == 1 else str(masters)
            for factor in args.stress:
                rate = args.events * factor
                sim = Sim(per_run, cdf, nodes, masters, rate, args.simulate,
                          args.seed, args.per_delivery_us, conns, doorbell=doorbell)
                r = sim.run()
                name, load = first_limit(conns_util, r)
                sat = " SATURATED" if load >= 0.95 or r["drain_s"] > 1.0 else ""
                print(f"{nodes:>5} {label:>7} {rate:>9.0f} {r['published']:>8} "
                      f"{r['deliveries'] / args.simulate:>9.0f} {r['p50'] * 1e3:>7.1f} "
                      f"{r['p99'] * 1e3:>7.1f} {r['max'] * 1e3:>8.1f} "
                      f"{r['node_util'] * 100:>7.0f}% {r['redis_util'] * 100:>5.0f}% "
                      f"{r['drain_s']:>7.2f}  "
                      f"{name} at {load * 100:.0f} %{sat}", flush=True)
                rows.append((nodes, masters, rate, r, name, load))
    return rows


# --- self-test --------------------------------------------------------------


def self_test():
    """Invariants of the simulation; exits non-zero when one fails."""
    seed = 1
    failures = []

    def expect(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    # One node, one run, one watcher: every event is delivered exactly once.
    one = Sim([[(0, 1)]], None, 1, 1, 200.0, 5.0, seed, 0.82, [1]).run()
    expect(one["published"] > 900, f"one watcher: {one['published']} events published")
    expect(one["deliveries"] == one["published"] == one["completed"],
           f"one watcher: {one['deliveries']} deliveries of {one['published']} events, "
           f"{one['completed']} completed")
    expect(one["p50"] > 0 and one["p99"] >= one["p50"], "latency percentiles ordered")

    # Raising the per-delivery cost raises the latency (1,000 watchers, one node).
    fast = Sim([[(0, 1000)]], None, 1, 1, 100.0, 5.0, seed, 0.82, [1000]).run()
    slow = Sim([[(0, 1000)]], None, 1, 1, 100.0, 5.0, seed, 20.0, [1000]).run()
    expect(slow["p50"] > fast["p50"] + 0.005,
           f"per-delivery cost 0.82 -> 20 us: p50 {fast['p50'] * 1e3:.2f} -> "
           f"{slow['p50'] * 1e3:.2f} ms")
    expect(slow["node_util"] > 5 * fast["node_util"], "node CPU grows with per-delivery cost")

    # Deliveries on several nodes add up to the run's watchers per event.
    split = Sim([[(0, 3), (1, 4)], [(1, 2)]], None, 2, 2, 300.0, 3.0, seed, 0.82,
                [3, 6]).run()
    expect(split["completed"] == split["published"], "two nodes: every event completed")
    expect(2 * split["published"] < split["deliveries"] < 7 * split["published"],
           f"two nodes: {split['deliveries']} deliveries of {split['published']} events "
           "(2 or 7 per event)")

    # An overloaded Redis master saturates: offered script work above 1 s per second.
    over = Sim([[(0, 1)]], None, 1, 1, 40000.0, 1.0, seed, 0.82, [1]).run()
    expect(over["redis_util"] >= 1.0 and over["drain_s"] > 0.1,
           f"40,000 requests/s into one master: utilisation {over['redis_util']:.2f}, "
           f"drain {over['drain_s']:.2f} s")

    # A node offered twice what its cores do falls behind: 200 events/s x 1,000
    # watchers x 20 us is 4 core-seconds per second on 2 cores.
    behind = Sim([[(0, 1000)]], None, 1, 3, 200.0, 2.0, seed, 20.0, [1000]).run()
    expect(behind["node_util"] > 1.9 and behind["drain_s"] > 1.0,
           f"node at twice its capacity: utilisation {behind['node_util']:.2f}, "
           f"drain {behind['drain_s']:.2f} s")

    # More masters share the load.
    runs = [[(0, 1)] for _ in range(64)]
    m1 = Sim(runs, None, 1, 1, 5000.0, 2.0, seed, 0.82, [64]).run()
    m4 = Sim(runs, None, 1, 4, 5000.0, 2.0, seed, 0.82, [64]).run()
    expect(m4["redis_util"] < m1["redis_util"],
           f"4 masters vs 1: busiest master {m4['redis_util']:.2f} < {m1['redis_util']:.2f}")

    # One plain Redis pays per watched stream for every XREAD; doorbells do not.
    many = [[(0, 1)] for _ in range(20_000)]
    xread = Sim(many, None, 1, 1, 500.0, 2.0, seed, 0.82, [20_000]).run()
    bells = Sim(many, None, 1, 1, 500.0, 2.0, seed, 0.82, [20_000], doorbell=True).run()
    expect(xread["redis_util"] > 5 * bells["redis_util"],
           f"20,000 watched streams: XREAD feed {xread['redis_util']:.2f} of the master, "
           f"doorbells {bells['redis_util']:.2f}")

    # Deterministic with a seed.
    again = Sim([[(0, 1)]], None, 1, 1, 200.0, 5.0, seed, 0.82, [1]).run()
    expect(again == one, "same seed, same result")

    # The calibration lands in the measured acknowledgement ranges.
    cal = calibration(seed)
    expect(1.8e-3 <= cal["p50"] <= 3.0e-3 and 8e-3 <= cal["p99"] <= 30e-3,
           f"calibration: ack p50 {cal['p50'] * 1e3:.2f} ms, p99 {cal['p99'] * 1e3:.2f} ms")

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


def int_list(s):
    return [int(x) for x in s.split(",") if x]


def topology_list(s):
    """Redis topologies: M masters each; "1" is one plain Redis (XREAD feed), "1c" one
    Redis run as a one-master cluster (doorbell feed), M > 1 a cluster."""
    out = []
    for x in s.split(","):
        if not x:
            continue
        one_master_cluster = x.endswith("c")
        m = int(x[:-1] if one_master_cluster else x)
        if m < 1:
            raise argparse.ArgumentTypeError(f"{x}: at least one master")
        out.append((m, one_master_cluster or m > 1))
    return out


def float_list(s):
    return [float(x) for x in s.split(",") if x]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watchers", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=50_000)
    p.add_argument("--events", type=float, default=1000.0, help="aggregate events/s")
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--node-cost-hour", type=float, default=0.10)
    p.add_argument("--simulate", type=float, default=10.0,
                   help="seconds of traffic to simulate per configuration (0: none)")
    p.add_argument("--sim-nodes", type=int_list, default=[12],
                   help="node counts to simulate, e.g. 12,16")
    p.add_argument("--masters", type=topology_list, default=[(1, False), (1, True), (3, True)],
                   help="Redis topologies to simulate: 1 = one Redis (XREAD feed), "
                        "1c = one Redis as a one-master cluster (doorbells), "
                        "M > 1 = a cluster of M masters; e.g. 1,1c,3,6")
    p.add_argument("--stress", type=float_list, default=[1.0],
                   help="multiples of --events to simulate, e.g. 1,10,100")
    p.add_argument("--event-runs", choices=("uniform", "zipf"), default="uniform",
                   help="how an event's run is drawn")
    p.add_argument("--per-delivery-us", type=float,
                   default=ASSUMED["cores"] / MEASURED["deliveries_per_s"] * 1e6,
                   help="node CPU per delivery (default: 2 cores / measured deliveries/s)")
    p.add_argument("--assume", action="append", default=[], metavar="NAME=VALUE",
                   help="override an assumption or a measured figure, e.g. xread_key_us=0.2 (repeatable)")
    p.add_argument("--self-test", action="store_true")
    args = p.parse_args()
    if args.self_test:
        sys.exit(self_test())
    scalars = [k for k, v in MEASURED.items() if isinstance(v, float)]
    for item in args.assume:
        name, sep, value = item.partition("=")
        table = ASSUMED if name in ASSUMED else MEASURED if name in scalars else None
        if not sep or table is None:
            p.error(f"--assume {item}: expected NAME=VALUE with NAME one of "
                    f"{', '.join(list(ASSUMED) + scalars)}")
        try:
            table[name] = type(table[name])(float(value))
        except ValueError:
            p.error(f"--assume {item}: {value!r} is not a number")
    print(f"seed {args.seed}; {args.watchers} watchers, {args.runs} runs, "
          f"{args.events:g} events/s aggregate, Zipf {args.zipf}")
    print("measured:", MEASURED)
    print("assumed:", ASSUMED)
    static_table(args)
    if args.simulate > 0:
        simulate(args)


if __name__ == "__main__":
    main()
