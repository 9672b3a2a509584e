//! End-to-end tests: real `paxosd` processes on loopback, driven by the real
//! `paxosctl` and the client library, as a user would.

mod common;

use common::*;
use paxosd::types::{Key, Value};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

#[test]
fn propose_and_read_through_each_node() {
    let cluster = TestCluster::start("each-node", 3);
    for id in ["1", "2", "3"] {
        let value = format!("hello-{id}");
        let out = cluster.ctl(&["--node", id, "propose", "greeting", &value]);
        assert_exit(&out, 0);
        for reader in ["1", "2", "3"] {
            let out = cluster.ctl(&["--node", reader, "read", "greeting"]);
            assert_exit(&out, 0);
            assert_eq!(stdout(&out), format!("{value}\n"), "read through node {reader}");
        }
    }
}

#[test]
fn propose_prints_versions_and_read_json_shows_them() {
    let cluster = TestCluster::start("versions", 3);
    assert_eq!(stdout(&cluster.ctl(&["propose", "k", "a"])), "1\n");
    assert_eq!(stdout(&cluster.ctl(&["propose", "k", "b"])), "2\n");
    let out = cluster.ctl(&["read", "k", "--json"]);
    assert_eq!(stdout(&out), "{\"key\":\"k\",\"value\":\"b\",\"version\":2}\n");
    let out = cluster.ctl(&["read", "absent", "--json"]);
    assert_eq!(stdout(&out), "{\"key\":\"absent\",\"value\":null,\"version\":0}\n");
    let out = cluster.ctl(&["read", "absent"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "");
}

#[test]
fn delete_leaves_the_key_absent_and_counts_the_version() {
    let cluster = TestCluster::start("delete", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "a"]), 0);
    let out = cluster.ctl(&["delete", "k"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "2\n");
    assert_eq!(
        stdout(&cluster.ctl(&["read", "k", "--json"])),
        "{\"key\":\"k\",\"value\":null,\"version\":2}\n"
    );
}

#[test]
fn cas_by_value_and_by_version() {
    let cluster = TestCluster::start("cas", 3);
    assert_exit(&cluster.ctl(&["cas", "k", "first", "--expect-absent"]), 0);
    let out = cluster.ctl(&["cas", "k", "second", "--expect-value", "first"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "2\n");
    let out = cluster.ctl(&["cas", "k", "third", "--expect-version", "2"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&cluster.ctl(&["read", "k"])), "third\n");
}

#[test]
fn append_adds_to_the_value_prints_the_version_and_refuses_to_overflow() {
    let cluster = TestCluster::start("append", 3);
    assert_exit(&cluster.ctl(&["append", "log", "a"]), 0);
    let out = cluster.ctl(&["append", "log", ",b"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "2\n");
    assert_eq!(stdout(&cluster.ctl(&["read", "log"])), "a,b\n");
    let big = "x".repeat(paxosd::limits::VALUE_BYTES_MAX - 2);
    let out = cluster.ctl(&["append", "log", &big]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("value limit"), "{}", stderr(&out));
    assert_eq!(
        stdout(&cluster.ctl(&["read", "log", "--json"])),
        "{\"key\":\"log\",\"value\":\"a,b\",\"version\":2}\n"
    );
}

#[test]
fn status_shows_each_node_with_its_sessions_and_incarnation() {
    let cluster = TestCluster::start("status", 3);
    assert_exit(&cluster.ctl(&["--node", "2", "propose", "k", "v"]), 0);
    let out = cluster.ctl(&["status"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for id in 1..=3 {
        let line =
            text.lines().find(|l| l.starts_with(&format!("node {id} "))).unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains(" up ") && line.contains("sessions=") && line.contains("incarnation="),
            "{line}"
        );
    }
    let node2 = text.lines().find(|l| l.starts_with("node 2 ")).unwrap_or_default();
    assert!(node2.contains("sessions=1 ") || node2.contains("sessions=2 "), "the propose's session: {node2}");
}

#[test]
fn stale_cas_exits_3_and_changes_nothing() {
    let cluster = TestCluster::start("stale-cas", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "new"]), 0);
    let out = cluster.ctl(&["cas", "k", "x", "--expect-value", "old"]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("precondition failed"), "{}", stderr(&out));
    let out = cluster.ctl(&["cas", "k", "x", "--expect-version", "7"]);
    assert_exit(&out, 3);
    assert_exit(&cluster.ctl(&["cas", "k", "x", "--expect-absent"]), 3);
    let out = cluster.ctl(&["read", "k", "--json"]);
    assert_eq!(stdout(&out), "{\"key\":\"k\",\"value\":\"new\",\"version\":1}\n");
}

#[test]
fn survives_a_killed_node_which_catches_up_after_restart() {
    let mut cluster = TestCluster::start("kill-one", 3);
    assert_exit(&cluster.ctl(&["propose", "before", "1"]), 0);
    cluster.kill(2);
    assert_exit(&cluster.ctl(&["propose", "during", "2"]), 0);
    assert_eq!(stdout(&cluster.ctl(&["read", "during"])), "2\n");
    cluster.start_node(2);
    cluster.wait_until_answers(2);
    for key in ["before", "during"] {
        let out = cluster.ctl(&["--node", "2", "read", key]);
        assert_exit(&out, 0);
        assert!(!stdout(&out).is_empty(), "node 2 must read {key}");
    }
    assert_eq!(stdout(&cluster.ctl(&["--node", "2", "read", "during"])), "2\n");
}

#[test]
fn without_a_quorum_propose_exits_4_and_says_whether_it_was_applied() {
    let mut cluster = TestCluster::start("no-quorum", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "before"]), 0);
    cluster.kill(2);
    cluster.kill(3);
    let started = Instant::now();
    let out = cluster.ctl(&["--timeout-ms", "2000", "propose", "k", "after"]);
    let took = started.elapsed();
    assert_exit(&out, 4);
    // Node 1 tried, never reached a majority, so never sent an accept: it
    // says so before the client's deadline, and the client can tell.
    assert!(
        stderr(&out).contains("no quorum within 2000 ms: the change was not applied"),
        "{}",
        stderr(&out)
    );
    // A bound against hanging, not a performance figure: the documented
    // timeout plus generous slack for a loaded machine.
    assert!(took < Duration::from_secs(12), "propose took {took:?}");
    let out = cluster.ctl(&["--timeout-ms", "1000", "read", "k"]);
    assert_exit(&out, 4);
}

#[test]
fn a_long_lived_client_of_a_node_that_restarts_gets_a_definite_answer_for_its_next_write() {
    let mut cluster = TestCluster::start("restart-client", 3);
    // Node ids 1..3 are the members in order, so node 2 is member index 1.
    let key = cluster.key_homed_at(2, "k");
    let key_name = std::str::from_utf8(key.as_bytes()).expect("ascii");
    let mut client = cluster.client(None);
    client.put(&key, Value::from("before")).expect("first write");
    for round in 0..4 {
        // As `scripts/cluster.sh stop 2` (SIGTERM) and `kill 2` (SIGKILL) do.
        if round % 2 == 0 {
            cluster.stop(2)
        } else {
            cluster.kill(2)
        }
        cluster.start_node(2);
        cluster.wait_until_answers(2);
        // The client still names node 2's previous incarnation: the node
        // refuses that copy unrun, and the client sends it again at once.
        let value = format!("after-{round}");
        let answer = client.put(&key, Value(value.clone().into_bytes()));
        let answer = answer.unwrap_or_else(|e| panic!("round {round}: a definite answer, not: {e}"));
        assert_eq!(answer.node, paxosd::types::NodeId(2), "round {round}: served by the node it was using");
        let fresh = cluster.key_homed_at(2, &format!("fresh-{round}-"));
        client.put(&fresh, Value::from("x")).unwrap_or_else(|e| panic!("round {round}: fresh key: {e}"));
        assert_eq!(stdout(&cluster.ctl(&["read", key_name])), format!("{value}\n"));
    }
    let versions = cluster.ctl(&["read", key_name, "--json"]);
    assert!(stdout(&versions).contains("\"version\":5"), "each write applied once: {}", stdout(&versions));
}

#[test]
fn a_thousand_keys_survive_a_full_restart() {
    let mut cluster = TestCluster::start("thousand", 3);
    let mut client = cluster.client(None);
    for i in 0..1000 {
        let key = Key(format!("key-{i}").into_bytes());
        client.put(&key, Value(format!("value-{i}").into_bytes())).expect("put");
    }
    for id in 1..=3 {
        cluster.stop(id);
    }
    for id in 1..=3 {
        cluster.start_node(id);
    }
    cluster.wait_until_all_answer();
    let mut client = cluster.client(None);
    for i in 0..1000 {
        let key = Key(format!("key-{i}").into_bytes());
        let answer = client.read(&key).expect("read");
        assert_eq!(answer.value, Some(Value(format!("value-{i}").into_bytes())), "key-{i}");
    }
    for id in 1..=3 {
        assert!(cluster.stderr(id).contains("recovered"), "node {id} logged its recovery");
    }
}

#[test]
fn a_write_cut_short_by_a_crash_is_truncated_with_a_warning() {
    let mut cluster = TestCluster::start("torn", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "v"]), 0);
    cluster.kill(1);
    let log = cluster.log_path(1);
    let bytes = std::fs::read(&log).expect("read log");
    // The first 12 bytes of a unit: what a crash mid-write leaves. A unit
    // the file ends inside was never synced, so nothing depended on it.
    let tail = bytes[bytes.len() - 40..bytes.len() - 28].to_vec();
    std::fs::write(&log, [bytes.clone(), tail].concat()).expect("write torn log");
    cluster.start_node(1);
    cluster.wait_until_answers(1);
    let err = cluster.stderr(1);
    assert!(err.contains("WARN") && err.contains("torn write of 12 bytes"), "{err}");
    assert!(!err.contains("catches up"), "a write cut short needs no catching up: {err}");
    assert!(cluster.status_line(1).contains("  up  "), "{}", cluster.status_line(1));
    assert_eq!(file_len(&log) as usize, bytes.len(), "torn bytes truncated");
    assert_eq!(stdout(&cluster.ctl(&["--node", "1", "read", "k"])), "v\n");
}

#[test]
fn a_damaged_last_unit_is_dropped_and_the_node_catches_up_before_it_votes() {
    let mut cluster = TestCluster::start("damaged-last", 3);
    let key = cluster.key_homed_at(1, "k");
    let key = String::from_utf8(key.0).expect("utf-8 key");
    assert_exit(&cluster.ctl(&["propose", &key, "v"]), 0);
    cluster.stop(1);
    let log = cluster.log_path(1);
    let mut bytes = std::fs::read(&log).expect("read log");
    // A byte of the last unit damaged: it may have been synced (and its
    // promises acknowledged), so the node must not trust what is left.
    let last = bytes.len() - 6;
    bytes[last] ^= 0x40;
    std::fs::write(&log, &bytes).expect("write damaged log");
    cluster.start_node(1);
    cluster.wait_until_answers(1);
    let err = cluster.stderr(1);
    assert!(err.contains("damaged last unit"), "{err}");
    assert!(err.contains("catches up from its peers before it votes"), "{err}");
    cluster.wait_until_caught_up(1, Duration::from_secs(30));
    cluster.stop(2);
    assert_eq!(stdout(&cluster.ctl(&["--node", "1", "read", &key])), "v\n");
}

#[test]
fn a_flipped_byte_mid_file_makes_the_node_refuse_to_start_naming_file_and_offset() {
    let mut cluster = TestCluster::start("flipped", 3);
    for i in 0..5 {
        assert_exit(&cluster.ctl(&["--node", "1", "propose", &format!("k{i}"), "v"]), 0);
    }
    cluster.stop(1);
    let log = cluster.log_path(1);
    let mut bytes = std::fs::read(&log).expect("read log");
    // The first unit starts after the 16-byte header; damage a record in it.
    bytes[16 + 10] ^= 0xFF;
    std::fs::write(&log, &bytes).expect("write damaged log");
    cluster.start_node(1);
    let status = cluster.wait_exit(1, Duration::from_secs(10)).expect("node 1 must exit");
    assert_eq!(status.code(), Some(1));
    let err = cluster.stderr(1);
    assert!(err.contains(&log.display().to_string()), "names the file: {err}");
    assert!(err.contains("byte offset 16"), "names the offset: {err}");
    assert!(err.contains("refuses to start"), "{err}");
    // The other two still serve.
    assert_exit(&cluster.ctl(&["propose", "k", "still"]), 0);
}

#[test]
fn garbage_datagrams_are_dropped_and_the_node_keeps_serving() {
    let mut cluster = TestCluster::start("garbage", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "before"]), 0);
    let target = format!("127.0.0.1:{}", cluster.ports[0]);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Random bytes of every size class.
    for i in 0..2000 {
        let len = (next() % 1500) as usize + (i % 3) * 20_000;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = socket.send_to(&bytes, &target);
    }
    // Valid datagrams cut short, and with a wrong cluster id.
    let header = paxosd::wire::Header {
        cluster: paxosd::types::ClusterId(cluster.cluster_id),
        sender: paxosd::types::NodeId(2),
        config: paxosd::wire::ConfigDigest::NONE,
        epoch: paxosd::types::Epoch(0),
        sent_unix_ms: paxosd::driver::unix_ms_now(),
        receiver: paxosd::types::NodeId(1),
    };
    let msg = paxosd::wire::Message::Prepare {
        key: Key::from("k"),
        ballot: paxosd::types::Ballot::new(u64::MAX, paxosd::types::NodeId(2)),
    };
    let good =
        paxosd::wire::encode_datagram(header, std::slice::from_ref(&msg), &paxosd::auth::Keyring::none());
    for len in 0..good.len() {
        let _ = socket.send_to(&good[..len], &target);
    }
    let wrong = paxosd::wire::Header { cluster: paxosd::types::ClusterId(cluster.cluster_id + 1), ..header };
    let _ = socket.send_to(
        &paxosd::wire::encode_datagram(wrong, std::slice::from_ref(&msg), &paxosd::auth::Keyring::none()),
        &target,
    );
    // A whole, valid prepare claiming to be node 2 but from another address:
    // it would block every proposer if believed.
    let _ = socket.send_to(&good, &target);
    std::thread::sleep(Duration::from_millis(200));
    assert!(cluster.is_running(1), "node 1 must survive: {}", cluster.stderr(1));
    // With node 3 down, a write needs node 1's vote: had node 1 believed the
    // spoofed prepare, it would have promised the highest ballot and refuse.
    cluster.kill(3);
    assert_exit(&cluster.ctl(&["--node", "1", "propose", "k", "after"]), 0);
    assert_eq!(stdout(&cluster.ctl(&["--node", "1", "read", "k"])), "after\n");
}

#[test]
fn a_data_dir_without_marker_is_refused_unless_bootstrapping() {
    let mut cluster = TestCluster::configure("marker", 3);
    cluster.start_node(1);
    let status = cluster.wait_exit(1, Duration::from_secs(10)).expect("must exit");
    assert_eq!(status.code(), Some(1));
    assert!(cluster.stderr(1).contains("--bootstrap"), "{}", cluster.stderr(1));
}

#[test]
fn a_data_dir_of_another_node_is_refused() {
    let mut cluster = TestCluster::start("mismatch", 3);
    cluster.stop(1);
    cluster.stop(2);
    std::fs::copy(cluster.data_dir(2).join("identity"), cluster.data_dir(1).join("identity")).expect("copy");
    cluster.start_node(1);
    let status = cluster.wait_exit(1, Duration::from_secs(10)).expect("must exit");
    assert_eq!(status.code(), Some(1));
    assert!(cluster.stderr(1).contains("node 2"), "{}", cluster.stderr(1));
}

#[test]
fn a_deleted_log_is_refused() {
    let mut cluster = TestCluster::start("deleted-log", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "v"]), 0);
    cluster.stop(3);
    std::fs::remove_file(cluster.log_path(3)).expect("remove log");
    cluster.start_node(3);
    let status = cluster.wait_exit(3, Duration::from_secs(10)).expect("must exit");
    assert_eq!(status.code(), Some(1));
    assert!(cluster.stderr(3).contains("state is lost"), "{}", cluster.stderr(3));
}

#[test]
fn config_errors_exit_2_with_a_clear_message() {
    let dir = temp_dir("bad-config");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "cluster_id = 1\n[[node]]\nid = 1\naddress = \"nowhere\"\ndata_dir = \"d\"\n")
        .expect("write");
    let out =
        std::process::Command::new(PAXOSCTL).arg("--config").arg(&path).arg("status").output().expect("run");
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("\"nowhere\" is not IP:PORT"), "{}", stderr(&out));
    let out = std::process::Command::new(PAXOSD)
        .arg("--config")
        .arg(&path)
        .args(["--id", "1"])
        .output()
        .expect("run");
    assert_exit(&out, 2);
    let out = std::process::Command::new(PAXOSCTL)
        .arg("--config")
        .arg(dir.join("missing.toml"))
        .arg("status")
        .output()
        .expect("run");
    assert_exit(&out, 2);
    let out = std::process::Command::new(PAXOSCTL).arg("frobnicate").output().expect("run");
    assert_exit(&out, 2);
}

#[test]
fn oversized_values_and_keys_are_refused_clearly() {
    let cluster = TestCluster::start("oversized", 3);
    let big = "x".repeat(paxosd::limits::VALUE_BYTES_MAX + 1);
    let out = cluster.ctl(&["propose", "k", &big]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("value is larger than the limit"), "{}", stderr(&out));
    let long_key = "k".repeat(paxosd::limits::KEY_BYTES_MAX + 1);
    let out = cluster.ctl(&["propose", &long_key, "v"]);
    assert!(stderr(&out).contains("key is larger than the limit"), "{}", stderr(&out));
    let max = "y".repeat(paxosd::limits::VALUE_BYTES_MAX);
    assert_exit(&cluster.ctl(&["propose", "k", &max]), 0);
    assert_eq!(stdout(&cluster.ctl(&["read", "k"])), format!("{max}\n"));
}

/// The counter example's own code, run by three clients at once (threads
/// here, so the test needs no separately built binary).
#[path = "../examples/counter.rs"]
#[allow(dead_code)]
mod counter;

#[test]
fn the_counter_example_loses_no_increment_under_contention() {
    let cluster = TestCluster::start("counter", 3);
    let key = Key::from("shared");
    std::thread::scope(|scope| {
        for writer in 0..3 {
            let (cluster, key) = (&cluster, &key);
            scope.spawn(move || {
                let mut client = cluster.client(None);
                for i in 0..40 {
                    let tag = format!("w{writer}-{i}");
                    if let Err(e) = counter::increment(&mut client, key, &tag, 1000) {
                        panic!("writer {writer}, increment {i}: {e}");
                    }
                }
            });
        }
    });
    let value = stdout(&cluster.ctl(&["read", "shared"]));
    assert!(value.starts_with("120 "), "3 writers x 40 increments: {value}");
}

#[test]
fn overwrites_keep_the_log_bounded_by_compaction() {
    let cluster = TestCluster::start("compaction", 3);
    let mut client = cluster.client(Some(1));
    let key = Key::from("hot");
    // 600 overwrites of a 16 KiB value: about 10 MiB of records per node
    // without compaction.
    for i in 0..600u32 {
        let mut value = vec![b'a' + (i % 26) as u8; paxosd::limits::VALUE_BYTES_MAX];
        value[..4].copy_from_slice(&i.to_le_bytes());
        client.put(&key, Value(value)).unwrap_or_else(|e| panic!("put {i}: {e}"));
    }
    let bound = paxosd::limits::COMPACT_BYTES_MIN + 64 * 1024;
    for id in 1..=3 {
        let len = file_len(&cluster.log_path(id));
        assert!(len < bound, "node {id} log is {len} bytes, bound {bound}");
    }
    assert!(cluster.stderr(1).contains("compacted"), "{}", cluster.stderr(1));
    let answer = client.read(&key).expect("read");
    assert_eq!(answer.version.0, 600);
    assert_eq!(&answer.value.expect("value").0[..4], &599u32.to_le_bytes());
}
