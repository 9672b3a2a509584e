//! Hostile datagrams against a real cluster over loopback: forgeries
//! without the cluster secret, a forged ballot at the end of the rounds,
//! recorded client datagrams replayed later, and a key rotation under load.

mod common;

use common::{TestCluster, assert_exit, stderr, stdout};
use paxosd::auth::{Keyring, read_secret};
use paxosd::change::Change;
use paxosd::members::Configuration;
use paxosd::types::{
    Ballot, ClusterId, Epoch, Incarnation, Key, NodeId, RegisterState, RequestId, SessionId,
};
use paxosd::types::{Time, Value, Version};
use paxosd::wire::{self, Header, Message, Outcome, Refusal};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Writes a new key file at `path` with `paxosctl secret new`.
fn new_secret(path: &Path) {
    let out = std::process::Command::new(common::PAXOSCTL)
        .args(["secret", "new"])
        .arg(path)
        .output()
        .expect("run paxosctl");
    assert_exit(&out, 0);
}

/// `text` with top-level settings added after its `cluster_id` line.
fn with_settings(text: &str, settings: &str) -> String {
    let (first, rest) = text.split_once('\n').expect("a config of several lines");
    format!("{first}\n{settings}{rest}")
}

/// A cluster of `n` nodes whose config names a fresh secret.
fn secured(tag: &str, n: usize) -> TestCluster {
    let mut cluster = TestCluster::configure(tag, n);
    new_secret(&cluster.dir.join("secret.key"));
    let text = std::fs::read_to_string(&cluster.config_path).expect("config");
    std::fs::write(&cluster.config_path, with_settings(&text, "secret_file = \"secret.key\"\n"))
        .expect("write");
    cluster.start_all();
    cluster
}

fn address(cluster: &TestCluster, id: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], cluster.ports[usize::from(id) - 1]))
}

/// The header peer `sender` of the founding configuration sends to `receiver`.
fn peer_header(cluster: &TestCluster, sender: u16, receiver: u16) -> Header {
    let members = cluster.config().founding_members();
    let tag = Configuration { epoch: Epoch(0), members }.tag();
    Header {
        cluster: ClusterId(cluster.cluster_id),
        sender: NodeId(sender),
        config: tag.digest,
        epoch: tag.epoch,
        sent_unix_ms: paxosd::driver::unix_ms_now(),
        receiver: NodeId(receiver),
    }
}

fn state(value: &str, version: u64) -> RegisterState {
    RegisterState { value: Some(Value::from(value)), version: Version(version), ..Default::default() }
}

/// An accept of `value` for `key` at a ballot of node `from` far above
/// anything the cluster used (yet within reach of the acceptors' counters):
/// once one acceptor has it, the next read adopts it.
fn accept(key: &str, value: &str, from: u16) -> Message {
    let ballot = Ballot::new(1_000_000, NodeId(from));
    Message::Accept { key: Key::from(key), ballot, state: state(value, 99), next: ballot }
}

fn client_write(key: &str, value: &str) -> Message {
    Message::Request(wire::Request {
        id: RequestId { session: SessionId(0xF0F0), seq: 1 },
        key: Key::from(key),
        change: Change::Put(Value::from(value)),
        timeout_ms: 1000,
        incarnation: Incarnation::UNKNOWN,
        sent_at: Time(0),
        resent: true,
        floor: Version(0),
    })
}

/// Runs paxosctl with another config than the cluster's.
fn ctl_with(config: &Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(common::PAXOSCTL);
    command.arg("--config").arg(config).args(args).output().expect("run paxosctl")
}

fn read(cluster: &TestCluster, key: &str) -> String {
    let out = cluster.ctl(&["read", key]);
    assert_exit(&out, 0);
    stdout(&out)
}

/// The number after `name=` in node `id`'s status line.
fn status_count(cluster: &TestCluster, id: u16, name: &str) -> u64 {
    let line = cluster.status_line(id);
    let field = line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}=")));
    field.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// Whether anything arrives on `socket` within `wait`.
fn anything_arrives(socket: &UdpSocket, wait: Duration) -> bool {
    socket.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 65536];
    socket.recv_from(&mut buf).is_ok()
}

#[test]
fn forgeries_without_the_secret_change_nothing_and_are_counted() {
    let mut cluster = secured("auth-forged", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "good"]), 0);
    // Node 3 goes away and the forger takes its address, as a spoofer would.
    cluster.kill(3);
    let forger = UdpSocket::bind(address(&cluster, 3)).expect("bind node 3's address");
    let header = |to: u16| peer_header(&cluster, 3, to);
    let wrong_key = Keyring::new(paxosd::auth::Secret::from_bytes([7; 32]), None);
    let promise = Message::Promise {
        key: Key::from("k"),
        ballot: Ballot::new(5, NodeId(1)),
        accepted: Ballot::new(1_000_000, NodeId(3)),
        state: state("forged", 99),
    };
    let forgeries = [accept("k", "forged", 3), promise, accept("victim", "forged", 3)];
    let mut sent = 0;
    for keys in [Keyring::none(), wrong_key] {
        for target in [1, 2] {
            let datagram = wire::encode_datagram(header(target), &forgeries, &keys);
            forger.send_to(&datagram, address(&cluster, target)).expect("send");
            sent += u64::from(target == 1);
        }
    }
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let client_header = Header { sender: NodeId::CLIENT, ..header(1) };
    let datagram = wire::encode_datagram(client_header, &[client_write("k", "forged")], &Keyring::none());
    client.send_to(&datagram, address(&cluster, 1)).expect("send");
    sent += 1;
    assert!(!anything_arrives(&client, Duration::from_millis(500)), "a forged request was answered");
    assert!(!anything_arrives(&forger, Duration::from_millis(100)), "a forged vote was answered");

    assert_eq!(read(&cluster, "k"), "good\n");
    assert_eq!(read(&cluster, "victim"), "", "the forged accept was not adopted");
    assert!(status_count(&cluster, 1, "dropped_unauthenticated") >= sent);
    assert!(cluster.status_line(1).contains("secret=on"), "{}", cluster.status_line(1));

    // The control: the same accept sealed with the cluster's key is taken,
    // and a read adopts it. Without the key, then, it was the MAC that
    // kept the forgeries out.
    let key = read_secret(&cluster.dir.join("secret.key")).expect("key");
    let datagram =
        wire::encode_datagram(header(1), &[accept("victim", "insider", 3)], &Keyring::new(key, None));
    forger.send_to(&datagram, address(&cluster, 1)).expect("send");
    assert!(anything_arrives(&forger, Duration::from_secs(2)), "node 1 answers a sealed accept");
    assert_eq!(read(&cluster, "victim"), "insider\n");

    // A client without the secret hears nothing and says so.
    let plain = cluster.dir.join("plain.toml");
    let text = std::fs::read_to_string(&cluster.config_path).expect("config");
    std::fs::write(&plain, text.replace("secret_file = \"secret.key\"\n", "")).expect("write");
    let out = ctl_with(&plain, &["--timeout-ms", "500", "propose", "k", "outsider"]);
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(read(&cluster, "k"), "good\n");
}

#[test]
fn a_forged_ballot_at_the_end_of_the_rounds_disables_nothing() {
    let mut cluster = TestCluster::start("auth-ballot", 3);
    assert!(cluster.stderr(1).contains("NO CLUSTER SECRET"), "no loud warning:\n{}", cluster.stderr(1));
    cluster.kill(3);
    let forger = UdpSocket::bind(address(&cluster, 3)).expect("bind node 3's address");
    let end = Ballot::new(u64::MAX, NodeId(3));
    let poison =
        |key: &str| Message::Accept { key: Key::from(key), ballot: end, state: state("x", 1), next: end };
    for target in [1, 2] {
        let poisons = [poison("poisoned"), poison("other")];
        let datagram = wire::encode_datagram(peer_header(&cluster, 3, target), &poisons, &Keyring::none());
        forger.send_to(&datagram, address(&cluster, target)).expect("send");
    }
    drop(forger);
    std::thread::sleep(Duration::from_millis(200));
    cluster.start_node(3);
    cluster.wait_until_all_answer();
    for id in ["1", "2", "3"] {
        for key in ["poisoned", "other", "fresh"] {
            let out = cluster.ctl(&["--node", id, "propose", key, id]);
            assert_exit(&out, 0);
        }
    }
    for id in [1, 2] {
        assert!(status_count(&cluster, id, "ballots_out_of_range") >= 2, "{}", cluster.status_line(id));
    }
    // And after a restart, which reads the acceptor's log again.
    cluster.stop(1);
    cluster.start_node(1);
    cluster.wait_until_answers(1);
    assert_exit(&cluster.ctl(&["--node", "1", "propose", "poisoned", "after"]), 0);
    assert_eq!(read(&cluster, "poisoned"), "after\n");
}

/// A relay between a client and node 1 that keeps a copy of every datagram
/// the client sends: what someone on the path would record.
struct Recorder {
    address: SocketAddr,
    recorded: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    fn start(node: SocketAddr) -> Recorder {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let address = socket.local_addr().expect("address");
        let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (copies, stopped) = (recorded.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut client = None;
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
                if from == node {
                    if let Some(c) = client {
                        let _ = socket.send_to(&buf[..len], c);
                    }
                } else {
                    client = Some(from);
                    copies.lock().expect("lock").push(buf[..len].to_vec());
                    let _ = socket.send_to(&buf[..len], node);
                }
            }
        });
        Recorder { address, recorded, stop, thread: Some(thread) }
    }

    fn datagrams(&self) -> Vec<Vec<u8>> {
        self.recorded.lock().expect("lock").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The outcomes of the replies `socket` receives within `wait`.
fn outcomes(socket: &UdpSocket, keys: &Keyring, cluster: u64, wait: Duration) -> Vec<Outcome> {
    let deadline = Instant::now() + wait;
    let mut buf = vec![0u8; 65536];
    let mut found = Vec::new();
    while Instant::now() < deadline {
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let Ok((len, _)) = socket.recv_from(&mut buf) else { continue };
        let Ok((_, messages)) = wire::decode_datagram(keys, ClusterId(cluster), &buf[..len]) else {
            continue;
        };
        found.extend(messages.into_iter().filter_map(|m| match m {
            Message::Reply { outcome, .. } => Some(outcome),
            _ => None,
        }));
    }
    found
}

#[test]
fn recorded_client_datagrams_replayed_later_change_nothing() {
    let mut cluster = secured("auth-replay", 3);
    let recorder = Recorder::start(address(&cluster, 1));
    // A client whose only node is the relay in front of node 1.
    let text = std::fs::read_to_string(&cluster.config_path).expect("config");
    let node1 = format!("127.0.0.1:{}", cluster.ports[0]);
    let relayed = cluster.dir.join("relayed.toml");
    std::fs::write(&relayed, text.replace(&node1, &recorder.address.to_string())).expect("write");
    let out = ctl_with(&relayed, &["--node", "1", "propose", "k", "recorded"]);
    assert_exit(&out, 0);
    let recorded = recorder.datagrams();
    drop(recorder);
    assert!(!recorded.is_empty());
    assert_exit(&cluster.ctl(&["propose", "k", "newer"]), 0);

    // Replayed a moment later to the same node: its sessions and the
    // key's memory of its writes answer the copies without running them.
    let key = read_secret(&cluster.dir.join("secret.key")).expect("key");
    let keys = Keyring::new(key, None);
    let replayer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for datagram in &recorded {
        replayer.send_to(datagram, address(&cluster, 1)).expect("send");
    }
    let answers = outcomes(&replayer, &keys, cluster.cluster_id, Duration::from_millis(500));
    let ran = |o: &Outcome| matches!(o, Outcome::Done { precondition_held: true, version, .. } if *version > Version(2));
    assert!(!answers.iter().any(ran), "a replay ran: {answers:?}");
    assert_eq!(read(&cluster, "k"), "newer\n");

    // To the other nodes: the datagrams name node 1, and are dropped.
    let dropped = |id| status_count(&cluster, id, "dropped_malformed");
    let before = [dropped(2), dropped(3)];
    for target in [2, 3] {
        for datagram in &recorded {
            replayer.send_to(datagram, address(&cluster, target)).expect("send");
        }
    }
    assert!(outcomes(&replayer, &keys, cluster.cluster_id, Duration::from_millis(500)).is_empty());
    let n = recorded.len() as u64;
    assert_eq!([dropped(2), dropped(3)], [before[0] + n, before[1] + n], "each dropped");
    assert_eq!(read(&cluster, "k"), "newer\n");

    // A day later: node 1, restarted, now lives a day after the recording.
    cluster.stop(1);
    let day = (24 * 3600 * 1000).to_string();
    cluster.start_node_env(1, &[], &[("PAXOSD_WALL_CLOCK_OFFSET_MS", &day)]);
    std::thread::sleep(Duration::from_millis(300));
    for datagram in &recorded {
        replayer.send_to(datagram, address(&cluster, 1)).expect("send");
    }
    let answers = outcomes(&replayer, &keys, cluster.cluster_id, Duration::from_millis(500));
    assert!(answers.contains(&Outcome::Refused(Refusal::Expired)), "{answers:?}");
    assert!(answers.iter().all(|o| *o == Outcome::Refused(Refusal::Expired)), "{answers:?}");
    let out = cluster.ctl(&["--node", "2", "read", "k"]);
    assert_eq!(stdout(&out), "newer\n", "{}", stderr(&out));
    assert!(cluster.stderr(1).contains("outside the replay window"), "the node says why");
}

/// Puts the key in `from` into `to` the way an operator should: a new file
/// renamed over the old, so a reader never sees half a key.
fn install_key(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).expect("copy key");
    std::fs::rename(&staged, to).expect("rename key");
}

#[test]
fn the_cluster_moves_from_key_a_to_key_b_node_by_node_under_torture() {
    let mut cluster = TestCluster::configure("auth-rotate", 3);
    let keys = cluster.dir.join("keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let (a, b) = (keys.join("a"), keys.join("b"));
    new_secret(&a);
    new_secret(&b);
    // Every node and the client have key files of their own, as hosts do.
    let text = std::fs::read_to_string(&cluster.config_path).expect("config");
    let parties = ["node1", "node2", "node3", "client"];
    for party in parties {
        install_key(&a, &keys.join(format!("{party}.current")));
        install_key(&a, &keys.join(format!("{party}.previous")));
        let settings = format!(
            "secret_file = \"keys/{party}.current\"\nprevious_secret_file = \"keys/{party}.previous\"\n"
        );
        std::fs::write(cluster.dir.join(format!("{party}.toml")), with_settings(&text, &settings))
            .expect("write");
    }
    std::fs::copy(cluster.dir.join("client.toml"), &cluster.config_path).expect("client config");
    for id in 1..=3u16 {
        let config = cluster.dir.join(format!("node{id}.toml"));
        cluster.start_node_config_flags(id, &config, &["--bootstrap"]);
    }
    cluster.wait_until_all_answer();
    let history = cluster.dir.join("rotation.jsonl");
    let history_arg = history.to_str().expect("utf-8 path");
    let torture = cluster
        .ctl_command(&["torture", "--duration", "24", "--clients", "4", "--history", history_arg])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn torture");
    // Each step waits out the key files' check period on every party.
    let pause = || std::thread::sleep(Duration::from_millis(1_600));
    pause();
    for party in parties {
        install_key(&b, &keys.join(format!("{party}.previous"))); // 1. accept B too
        pause();
    }
    for party in parties {
        install_key(&b, &keys.join(format!("{party}.current"))); // 2. send with B
        install_key(&a, &keys.join(format!("{party}.previous")));
        pause();
    }
    for party in parties {
        install_key(&b, &keys.join(format!("{party}.previous"))); // 3. A is gone
        pause();
    }
    let out = torture.wait_with_output().expect("torture ends");
    let report = stdout(&out);
    assert!(out.status.success(), "torture failed:\n{report}\n{}", stderr(&out));
    assert!(report.contains("linearizable=yes") && report.contains(" info=0 "), "{report}");
    let text = std::fs::read_to_string(&history).expect("history");
    let failed: Vec<&str> = text.lines().filter(|l| l.contains(r#""type":"fail""#)).collect();
    assert!(
        failed.iter().all(|l| l.contains(r#""f":"cas""#)),
        "operations other than a cas that found another value failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    for id in 1..=3 {
        assert!(cluster.stderr(id).matches("keys reloaded").count() >= 3, "node {id}");
    }
    // Key A opens nothing any more.
    let old = Keyring::new(read_secret(&a).expect("key a"), None);
    let before = status_count(&cluster, 1, "dropped_unauthenticated");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let header = Header { sender: NodeId::CLIENT, ..peer_header(&cluster, 3, 1) };
    let probe = Message::StatusRequest { session: SessionId(1), probe: 1 };
    socket.send_to(&wire::encode_datagram(header, &[probe], &old), address(&cluster, 1)).expect("send");
    assert!(!anything_arrives(&socket, Duration::from_millis(300)));
    assert_eq!(status_count(&cluster, 1, "dropped_unauthenticated"), before + 1);
}
