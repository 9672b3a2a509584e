//! A node whose data was lost or damaged comes back with `paxosd --rejoin`
//! and catches up from its peers before it votes; storage that never lies
//! (one daemon per data dir); peers with another member list are refused.
//! Real processes on loopback.

mod common;

use common::{TestCluster, assert_exit, stderr, stdout};
use std::time::Duration;

const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);

fn wipe(cluster: &TestCluster, id: u16) {
    std::fs::remove_dir_all(cluster.data_dir(id)).expect("wipe the data dir");
}

#[test]
fn a_wiped_node_rejoins_catches_up_and_serves_every_key() {
    let mut cluster = TestCluster::start("rejoin-wiped", 3);
    for i in 0..50 {
        assert_exit(&cluster.ctl(&["propose", &format!("k{i}"), &format!("v{i}")]), 0);
    }
    cluster.stop(3);
    wipe(&cluster, 3);
    cluster.start_node_flags(3, &["--rejoin"]);
    cluster.wait_until_caught_up(3, CATCH_UP_LIMIT);
    let line = cluster.status_line(3);
    let keys: u64 = line.split("keys=").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap_or(0);
    assert!(keys >= 50, "node 3 adopted the keys: {line}");
    assert!(!line.contains("epoch=0 "), "node 3 votes in a fresh epoch: {line}");
    // With node 1 down, every write and read needs node 3's vote.
    cluster.stop(1);
    for i in 0..50 {
        let out = cluster.ctl(&["--node", "3", "read", &format!("k{i}")]);
        assert_eq!(stdout(&out), format!("v{i}\n"), "k{i}: {}", stderr(&out));
    }
    assert_exit(&cluster.ctl(&["--node", "3", "propose", "after", "rejoin"]), 0);
    assert_eq!(stdout(&cluster.ctl(&["--node", "2", "read", "after"])), "rejoin\n");
    assert!(cluster.stderr(3).contains("caught up in epoch"), "{}", cluster.stderr(3));
}

#[test]
fn until_it_has_caught_up_a_rejoining_node_does_not_vote() {
    let mut cluster = TestCluster::start("rejoin-no-vote", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "before"]), 0);
    cluster.stop(3);
    wipe(&cluster, 3);
    cluster.stop(1);
    cluster.start_node_flags(3, &["--rejoin"]);
    cluster.wait_until_answers(3);
    assert!(cluster.status_line(3).contains("CATCHING UP"), "{}", cluster.status_line(3));
    // Nodes 2 and 3 are a majority, but node 3 cannot have caught up without
    // node 1 (it needs both others in a cluster of three), so it votes on
    // nothing: a write through node 2 cannot succeed.
    let out = cluster.ctl(&["--node", "2", "--timeout-ms", "1500", "propose", "k", "lost?"]);
    assert_exit(&out, 4);
    let out = cluster.ctl(&["--node", "3", "--timeout-ms", "1500", "propose", "k", "lost?"]);
    assert_ne!(out.status.code(), Some(0), "a node catching up serves no write: {}", stdout(&out));
    assert!(cluster.status_line(3).contains("CATCHING UP"), "{}", cluster.status_line(3));
    // Node 1 back: node 3 catches up, and the cluster serves again.
    cluster.start_node(1);
    cluster.wait_until_caught_up(3, CATCH_UP_LIMIT);
    assert_eq!(stdout(&cluster.ctl(&["--node", "3", "read", "k"])), "before\n");
    assert_exit(&cluster.ctl(&["--node", "2", "propose", "k", "after"]), 0);
    cluster.stop(1);
    assert_eq!(stdout(&cluster.ctl(&["--node", "3", "read", "k"])), "after\n");
}

#[test]
fn a_flipped_byte_mid_log_is_refused_naming_rejoin_which_brings_the_node_back() {
    let mut cluster = TestCluster::start("rejoin-flipped", 3);
    for i in 0..20 {
        assert_exit(&cluster.ctl(&["--node", "3", "propose", &format!("k{i}"), "v"]), 0);
    }
    cluster.stop(3);
    let log = cluster.log_path(3);
    let mut bytes = std::fs::read(&log).expect("read log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(&log, &bytes).expect("write damaged log");
    cluster.start_node(3);
    let status = cluster.wait_exit(3, Duration::from_secs(10)).expect("node 3 must exit");
    assert_eq!(status.code(), Some(1));
    let err = cluster.stderr(3);
    assert!(err.contains("corrupt") && err.contains("paxosd --id 3 --rejoin"), "{err}");
    cluster.start_node_flags(3, &["--rejoin"]);
    cluster.wait_until_caught_up(3, CATCH_UP_LIMIT);
    let kept: Vec<_> = std::fs::read_dir(cluster.data_dir(3))
        .expect("list data dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("acceptor.log.damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "the damaged log is kept aside");
    cluster.stop(1);
    for i in 0..20 {
        assert_eq!(stdout(&cluster.ctl(&["--node", "3", "read", &format!("k{i}")])), "v\n", "k{i}");
    }
}

/// Every file in a data dir with its bytes.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list data dir")
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap_or_default()))
        .collect();
    files.sort();
    files
}

/// Waits (at most 5 s) until the files of `dir` stay the same for 300 ms.
fn wait_until_unchanged(dir: &std::path::Path) {
    let mut last = snapshot(dir);
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = snapshot(dir);
        if now == last {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if snapshot(dir) == now {
                return;
            }
        }
        last = snapshot(dir);
    }
    panic!("{} kept changing", dir.display());
}

#[test]
fn a_second_daemon_for_a_running_node_exits_and_changes_no_file() {
    let mut cluster = TestCluster::start("second-daemon", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "v"]), 0);
    let dir = cluster.data_dir(1);
    // The write may still reach node 1 after the client's answer (a
    // majority without it answered first): wait until it wrote it, so that
    // every change to the files below is the second daemon's.
    wait_until_unchanged(&dir);
    // A leftover compaction file and a torn tail: what recovery would delete
    // and truncate if it ran.
    std::fs::write(dir.join("acceptor.log.compact"), b"leftover").expect("write leftover");
    let mut log = std::fs::OpenOptions::new().append(true).open(cluster.log_path(1)).expect("open log");
    std::io::Write::write_all(&mut log, &[0xAB; 7]).expect("append garbage");
    let before = snapshot(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paxosd"))
        .arg("--config")
        .arg(&cluster.config_path)
        .args(["--id", "1"])
        .output()
        .expect("run a second paxosd");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("another paxosd is running as node 1"), "{err}");
    assert_eq!(snapshot(&dir), before, "the second daemon changed a file");
    assert!(cluster.is_running(1));
}

#[test]
fn a_node_with_another_member_list_is_refused() {
    let mut cluster = TestCluster::start("other-config", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "v"]), 0);
    // Node 2 restarts with a config that names a fourth member: it would
    // count quorums of 3 out of 4, which need not meet ours of 2 out of 3.
    cluster.stop(2);
    let text = std::fs::read_to_string(&cluster.config_path).expect("read config");
    let other = cluster.config_path.with_file_name("other.toml");
    let extra = "\n[[node]]\nid = 4\naddress = \"127.0.0.1:9\"\ndata_dir = \"node4\"\n";
    std::fs::write(&other, format!("{text}{extra}")).expect("write other config");
    cluster.start_node_config(2, &other);
    cluster.stop(3);
    // Nodes 1 and 2 alone: node 1 must not count node 2's votes.
    let out = cluster.ctl(&["--node", "1", "--timeout-ms", "1500", "propose", "k", "split"]);
    assert_exit(&out, 4);
    // Node 2 got node 1's prepares, and says why it ignored them.
    assert!(cluster.stderr(2).contains("another member list"), "{}", cluster.stderr(2));
}
