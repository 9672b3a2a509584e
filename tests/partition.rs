//! A long-lived client whose node is cut off from its peers, but not from
//! the client, keeps being served by the other nodes: every request
//! completes within 250 ms of the cut or of its own start.
//!
//! The cluster and the client run in a network namespace the test creates
//! (the test binary runs itself again inside it), and the cut is made with
//! iptables inside that namespace, so nothing outside it is touched. It
//! needs root, `ip` and `iptables`, so `cargo test` skips it and
//! `scripts/test.sh` runs it (installing iptables when missing):
//!
//! ```text
//! cargo test --test partition -- --ignored
//! ```

mod common;

use common::TestCluster;
use paxosd::types::{Key, NodeId, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the copy of the test that runs inside the namespace.
const INNER: &str = "PAXOSD_PARTITION_TEST_INNER";
const NAME: &str = "a_client_whose_node_is_cut_off_from_its_peers_is_served_by_the_others_within_250_ms";
/// What the issue asks: a request completes this soon after the cut or its start.
const BOUND: Duration = Duration::from_millis(250);
/// How long the client runs before and after the cut.
const BEFORE_CUT: Duration = Duration::from_millis(1000);
const AFTER_CUT: Duration = Duration::from_millis(3000);

#[test]
#[ignore = "needs root and network namespaces: scripts/test.sh runs it"]
fn a_client_whose_node_is_cut_off_from_its_peers_is_served_by_the_others_within_250_ms() {
    if std::env::var_os(INNER).is_some() {
        return inside_the_namespace();
    }
    let ns = Namespace::create();
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(exe)
        .args(["--exact", NAME, "--ignored", "--nocapture", "--test-threads", "1"])
        .env(INNER, "1")
        .output()
        .expect("run the test inside the namespace");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    // The inner panic's message, repeated where a truncated log keeps it.
    let why: Vec<&str> = text.lines().skip_while(|l| !l.contains("panicked at")).take(2).collect();
    assert!(out.status.success(), "the test failed inside the namespace: {}", why.join(" "));
    assert!(text.contains("1 passed"), "the test did not run inside the namespace");
}

/// One operation the client ran: when it started and ended, and which
/// node answered (or the error).
struct Op {
    /// On the key homed at node 1 (the others are fresh keys).
    home_key: bool,
    started: Instant,
    ended: Instant,
    result: Result<NodeId, String>,
}

fn inside_the_namespace() {
    let addresses = (1..=3).map(|i| format!("127.0.0.1{i}:7001")).collect();
    let mut cluster = TestCluster::configure_at("partition", addresses);
    cluster.start_all();
    // A key homed at node 1 (its clients' first choice), which is cut off.
    let key = cluster.key_homed_at(1, "k");
    let mut client = cluster.client(None);
    let (ops, cut_at) = std::thread::scope(|scope| {
        let worker = scope.spawn(move || run_client(&mut client, &key));
        std::thread::sleep(BEFORE_CUT);
        cut_off("127.0.0.11", &["127.0.0.12", "127.0.0.13"]);
        // The rules take effect one by one: the cut is whole from here.
        let cut_at = Instant::now();
        (worker.join().expect("client thread"), cut_at)
    });
    check(&ops, cut_at);
}

/// Writes, reads and compare-and-sets, one after the other, for the whole
/// run; every write of a fresh value, so each answer is checkable.
fn run_client(client: &mut paxosd::client::Client, key: &Key) -> Vec<Op> {
    let until = Instant::now() + BEFORE_CUT + AFTER_CUT;
    let mut ops = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let started = Instant::now();
        let result = match n % 4 {
            0 => client.read(key),
            1 => client.put(key, Value(format!("v{n}").into_bytes())),
            2 => client.put(&Key(format!("fresh-{n}").into_bytes()), Value::from("x")),
            _ => client.cas_version(key, paxosd::types::Version(u64::MAX), Value::from("never")),
        };
        let result = result.map(|answer| answer.node).map_err(|e| e.to_string());
        ops.push(Op { home_key: n % 4 != 2, started, ended: Instant::now(), result });
    }
    ops
}

fn check(ops: &[Op], cut_at: Instant) {
    let served_by_home = ops.iter().any(|op| op.home_key && op.ended <= cut_at && op.result == Ok(NodeId(1)));
    assert!(served_by_home, "before the cut, node 1 (the key's home) never answered for the key");
    let after: Vec<&Op> = ops.iter().filter(|op| op.ended > cut_at).collect();
    assert!(after.len() >= 10, "only {} operations after the cut", after.len());
    // Only the slow answers are printed, so that a failure's message stays
    // in view: a healthy run has one or two (the operations the cut caught).
    println!("{} operations, {} after the cut", ops.len(), after.len());
    for (i, op) in ops.iter().enumerate() {
        assert!(op.result.is_ok(), "op {i} failed: {:?}", op.result);
        if op.ended > cut_at {
            let took = op.ended - op.started.max(cut_at);
            if took >= Duration::from_millis(20) {
                println!("op {i}: answered by {:?} {took:?} after the cut or its start", op.result);
            }
            assert!(took <= BOUND, "op {i} took {took:?} after the cut or its start");
        }
    }
    for (i, op) in ops.iter().enumerate().filter(|(_, op)| op.started > cut_at) {
        assert_ne!(op.result.as_ref().ok(), Some(&NodeId(1)), "op {i}: node 1 cannot serve once cut off");
    }
}

/// Drops every datagram between `node` and `peers`, both ways.
fn cut_off(node: &str, peers: &[&str]) {
    for peer in peers {
        for (from, to) in [(node, *peer), (*peer, node)] {
            let status = Command::new("iptables")
                .args(["-A", "INPUT", "-s", from, "-d", to, "-j", "DROP"])
                .status()
                .expect("run iptables");
            assert!(status.success(), "iptables refused a rule");
        }
    }
}

/// A network namespace with loopback up, deleted when dropped.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> Namespace {
        let name = format!("paxosd-partition-{}", std::process::id());
        let ok = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        assert!(ok(&["netns", "add", &name]), "cannot create a network namespace (needs root)");
        let ns = Namespace { name };
        assert!(ok(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]), "cannot bring lo up");
        ns
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
