//! The Redis store on a real Redis Cluster: three masters (`cluster-enabled yes`)
//! started by the test on free loopback ports, their slots assigned by hand. A run's
//! keys and its doorbell channel share one slot (the run id is their hash tag), so
//! every script runs on one master; the live feed crosses nodes through sharded
//! pub/sub doorbells and the run's stream (`RW-RESUME-1`, `RW-EVENT-3`,
//! `RW-INGEST-2`). The store contract (`store_contract`) also runs on a cluster.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::common::*;

/// Slots of a Redis Cluster.
const SLOTS: u16 = 16_384;

/// A Redis Cluster of `masters` nodes, each a `redis-server` on a free loopback port
/// (and a free cluster bus port) in its own temporary directory.
pub(crate) struct Cluster {
    nodes: Vec<Node>,
}

struct Node {
    child: Child,
    port: u16,
    bus: u16,
    dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind port 0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts one cluster-enabled `redis-server` (durable: AOF, fsync always); `None`
/// when it exited before it was ready (a port was taken meanwhile).
fn spawn_node() -> Option<Node> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, bus) = (free_port(), free_port());
    let child = start_process(dir.path(), port, bus)?;
    Some(Node {
        child,
        port,
        bus,
        dir,
    })
}

/// Starts `redis-server` in `dir` on `port` and `bus` (again, after a kill: it
/// reads its AOF and its `nodes.conf`) and waits until it is ready.
fn start_process(dir: &std::path::Path, port: u16, bus: u16) -> Option<Child> {
    let mut child = match Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .arg("--cluster-port")
        .arg(bus.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .args(["--protected-mode", "no"])
        .arg("--cluster-config-file")
        .arg(dir.join("nodes.conf"))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed, and the Redis Cluster tests need it: \
             install it (Debian: apt-get install -y redis-server; CI's .ci/run does)"
        ),
        Err(e) => panic!("cannot start redis-server: {e}"),
    };
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(tx);
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.contains("Ready to accept connections")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(WAIT).is_ok() {
        Some(child)
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

fn conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("url")
        .get_connection_with_timeout(WAIT)
        .expect("connect to a cluster node")
}

impl Cluster {
    /// Starts `masters` nodes, gives each an equal range of the slots, introduces
    /// them to each other and waits until every node sees the whole cluster.
    pub(crate) fn start(masters: u16) -> Self {
        Self::start_with_replica(masters, false)
    }

    /// As [`Cluster::start`], with `replica`: one more node, a replica of the first
    /// master (so that it can fail over).
    fn start_with_replica(masters: u16, replica: bool) -> Self {
        let count = masters + u16::from(replica);
        let nodes: Vec<Node> = (0..count)
            .map(|_| {
                (0..5)
                    .find_map(|_| spawn_node())
                    .expect("redis-server starts on a free port")
            })
            .collect();
        let per = SLOTS / masters;
        for (i, n) in (0u16..).zip(&nodes[..usize::from(masters)]) {
            let first = i * per;
            let last = if i + 1 == masters {
                SLOTS - 1
            } else {
                first + per - 1
            };
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(first)
                .arg(last)
                .query(&mut conn(n.port))
                .expect("add slots");
        }
        let mut first = conn(nodes[0].port);
        for n in &nodes[1..] {
            let _: () = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(n.port)
                .arg(n.bus)
                .query(&mut first)
                .expect("meet");
        }
        let c = Self { nodes };
        c.wait_until_formed();
        if replica {
            let id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut conn(c.nodes[0].port))
                .expect("myid");
            let mut r = conn(c.nodes[usize::from(masters)].port);
            let _: () = redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(&id)
                .query(&mut r)
                .expect("replicate");
            let deadline = Instant::now() + WAIT;
            loop {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut r)
                    .expect("info");
                if info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the replica did not sync: {info}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        c
    }

    /// Polls every node until it reports the cluster ok with all masters known.
    fn wait_until_formed(&self) {
        let deadline = Instant::now() + WAIT;
        for n in &self.nodes {
            let mut c = conn(n.port);
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut c)
                    .expect("cluster info");
                let known = format!("cluster_known_nodes:{}", self.nodes.len());
                // (A replica joins once the cluster is formed.)
                if info.contains("cluster_state:ok") && info.contains(&known) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster did not form within {WAIT:?}: {info}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The store URL naming every node.
    pub(crate) fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// The port of the master that holds `key`'s slot.
    fn owner(&self, key: &str) -> u16 {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn(self.nodes[0].port))
            .expect("keyslot");
        let masters = self.masters();
        let per = SLOTS / u16::try_from(masters).expect("few nodes");
        let i = usize::from(slot / per).min(masters - 1);
        self.nodes[i].port
    }

    /// How many nodes hold slots (every node but a replica started last).
    fn masters(&self) -> usize {
        let mut c = conn(self.nodes[0].port);
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut c)
            .expect("slots");
        slots.len()
    }
}

/// A run's keys, its doorbell and every script's keys are in one slot, on one
/// master; runs are spread over all three masters.
#[tokio::test]
async fn a_runs_keys_live_on_one_master_and_runs_spread_over_all() {
    let cluster = Cluster::start(3);
    let store = runwire_server::store::RedisStore::open(
        &cluster.url(),
        runwire_server::ServerConfig::default().replay_window_events,
    )
    .expect("the store opens on a cluster");
    let mut owners = BTreeSet::new();
    for i in 0..12 {
        let r = run(&format!("spread-{i}"));
        runwire_server::EventStore::append(
            &store,
            &r,
            vec![runwire_protocol::http::NewEvent::new(
                runwire_protocol::LogLineData {
                    level: runwire_protocol::LogLevel::Info,
                    message: "x".into(),
                    source: None,
                },
            )],
        )
        .await
        .expect("append");
        let owner = cluster.owner(&format!("rw:{{spread-{i}}}:s"));
        let mut c = conn(owner);
        for suffix in ["m", "s"] {
            let exists: bool = redis::cmd("EXISTS")
                .arg(format!("rw:{{spread-{i}}}:{suffix}"))
                .query(&mut c)
                .expect("exists on the slot's master");
            assert!(exists, "rw:{{spread-{i}}}:{suffix} on port {owner}");
        }
        owners.insert(owner);
    }
    assert_eq!(owners.len(), 3, "12 runs land on every master");
}

/// Two server nodes on one cluster: a producer on node A, clients on node B for
/// runs in different slots (on different masters), each sees every event in order,
/// including the first ones of runs that had no log when the client subscribed.
#[tokio::test]
async fn rw_resume_1_two_nodes_on_a_cluster_deliver_every_event_of_every_run() {
    let cluster = Cluster::start(3);
    let open = || {
        std::sync::Arc::new(
            runwire_server::store::RedisStore::open(
                &cluster.url(),
                runwire_server::ServerConfig::default().replay_window_events,
            )
            .expect("store"),
        )
    };
    let a = start_with(config(), open()).await;
    let b = start_with(config(), open()).await;
    let producer = Producer::new(&a);
    let names: Vec<String> = (0..6).map(|i| format!("cl-{i}")).collect();
    let mut clients = Vec::new();
    for n in &names {
        let mut c = Client::connect(&b).await;
        c.hello(json!([{"run_id": n}])).await;
        let _ = c.msg().await;
        clients.push(c);
    }
    for round in 0..5 {
        for n in &names {
            let events: Vec<_> = (0..10)
                .map(|i| json!({"type": "log.line", "data": {"level": "info", "message": format!("{round}-{i}")}}))
                .collect();
            producer.ok(n, json!(events)).await;
        }
    }
    for (n, c) in names.iter().zip(&mut clients) {
        let got = c.events_until(&run(n), 0, 50).await;
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "run {n}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Failover of one master while a producer appends with `wait_replicas=1` (AOF
/// `appendfsync always` everywhere): the master of the run's slot is killed
/// (SIGKILL) between two requests, its replica takes over, the old master is
/// started again and rejoins as a replica, the producer retries each unacknowledged
/// request with its idempotency keys, and afterwards the log holds every
/// acknowledged event with the seq and id it was acknowledged with, gapless and
/// without a duplicate (`RW-INGEST-3`, `RW-INGEST-5`, `RW-EVENT-3`).
#[tokio::test]
async fn rw_ingest_3_cluster_failover_while_appending_keeps_every_acknowledged_event() {
    use runwire_protocol::{LogLevel, LogLineData, http::NewEvent};
    use runwire_server::{EventStore, store::RedisStore};

    let mut cluster = Cluster::start_with_replica(3, true);
    let first = cluster.nodes[0].port;
    let name = (0..1000)
        .map(|i| format!("failover-{i}"))
        .find(|n| cluster.owner(&format!("rw:{{{n}}}:s")) == first)
        .expect("a run on the first master");
    let r = run(&name);
    let store = RedisStore::open(
        &format!("{}?wait_replicas=1&wait_timeout_ms=2000", cluster.url()),
        runwire_server::ServerConfig::default().replay_window_events,
    )
    .expect("store");
    let batch = |i: usize| -> Vec<NewEvent> {
        (0..5)
            .map(|j| {
                let mut e = NewEvent::new(LogLineData {
                    level: LogLevel::Info,
                    message: format!("{i}-{j}"),
                    source: None,
                });
                e.idempotency_key = Some(format!("k-{i}-{j}"));
                e
            })
            .collect()
    };
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut refused = 0u32;
    let started = Instant::now();
    let mut killed_at = None;
    let mut rejoin = None;
    for i in 0..60 {
        if i == 20 {
            // The master dies between two acknowledged requests (SIGKILL).
            let node = &mut cluster.nodes[0];
            let _ = node.child.kill();
            let _ = node.child.wait();
            killed_at = Some(Instant::now());
            // Its replica takes over once the other masters agree it failed; the
            // dead node is then started again (as an operator would) and rejoins
            // as the new master's replica, which `wait_replicas=1` needs.
            let (dir, port, bus) = (node.dir.path().to_owned(), node.port, node.bus);
            let replica = cluster.nodes[3].port;
            rejoin = Some(std::thread::spawn(move || {
                let deadline = Instant::now() + 4 * WAIT;
                let mut r = conn(replica);
                loop {
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query(&mut r)
                        .expect("info");
                    if info.contains("role:master") {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the replica was not promoted");
                    std::thread::sleep(Duration::from_millis(20));
                }
                start_process(&dir, port, bus).expect("the old master starts again")
            }));
        }
        loop {
            match store.append(&r, batch(i)).await {
                Ok(out) => {
                    for e in &out.response.events {
                        acked.push((e.seq, e.event_id.as_str().to_owned()));
                    }
                    break;
                }
                Err(e) => {
                    assert!(
                        matches!(e, runwire_server::StoreError::Unavailable(_)),
                        "only unavailability while failing over: {e}"
                    );
                    refused += 1;
                    assert!(started.elapsed() < 6 * WAIT, "no failover: {e}");
                    // Paces the retries, as a producer's backoff would.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    if let Some(t) = rejoin {
        cluster.nodes[0].child = t.join().expect("rejoin");
    }
    let back = killed_at.map(|k| k.elapsed());
    eprintln!("failover: {refused} refused appends, all acknowledged {back:?} after the kill");
    let log = store
        .read(&r, 0, runwire_protocol::MAX_SEQ, 10_000)
        .await
        .expect("read after failover");
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>(), "gapless, no duplicate");
    for (seq, id) in &acked {
        let e = log[usize::try_from(*seq - 1).expect("small")]
            .json
            .decode()
            .expect("event");
        assert_eq!(e.event_id.as_str(), id, "acknowledged event {seq}");
    }
    assert_eq!(acked.len(), 300);
}
