//! Watches end to end: the real `paxosctl watch` and `read --wait-version`
//! as child processes against a cluster of real `paxosd` processes on
//! loopback. Every process a test starts is killed by its own handle.

mod common;

use common::*;
use paxosd::change::Change;
use paxosd::client::Client;
use paxosd::types::{Key, Value, Version};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `paxosctl` child whose stdout lines arrive on a channel and whose
/// stderr collects in a string; killed when dropped.
struct Ctl {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Ctl {
    fn start(cluster: &TestCluster, args: &[&str]) -> Ctl {
        let mut child = Command::new(PAXOSCTL)
            .arg("--config")
            .arg(&cluster.config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paxosctl");
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                collected.lock().expect("stderr lock").push_str(&text);
            }
        });
        Ctl { child, lines, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Whether stderr holds `text` by `deadline`: the thread that collects
    /// it may lag behind the process, even once the process has exited.
    fn stderr_holds(&self, text: &str, deadline: Instant) -> bool {
        while !self.stderr().contains(text) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The next stdout line, waiting at most until `deadline`.
    fn line_by(&self, deadline: Instant) -> Option<String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        // A timeout, or the process closed its stdout.
        self.lines.recv_timeout(wait).ok()
    }

    /// The nodes it said it listens to, in order.
    fn listened(&self) -> Vec<u16> {
        let prefix = "paxosctl: watch: listening to node ";
        let text = self.stderr();
        text.lines().filter_map(|l| l.strip_prefix(prefix)?.trim().parse().ok()).collect()
    }

    /// The last node it said it listens to once that is not `node`, waiting
    /// until `deadline` at most (stderr comes through a thread of its own,
    /// so it may trail stdout).
    fn listening_other_than(&self, node: u16, deadline: Instant) -> Option<u16> {
        loop {
            if let Some(&last) = self.listened().last().filter(|last| **last != node) {
                return Some(last);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for the process to exit; its exit code.
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(i: u64) -> Value {
    Value(format!("value-{i}").into_bytes())
}

fn write_versions(client: &mut Client, key: &Key, versions: std::ops::RangeInclusive<u64>) {
    for i in versions {
        let answer = client.put(key, value(i)).unwrap_or_else(|e| panic!("write of version {i}: {e}"));
        assert_eq!(answer.version, Version(i), "the test is the key's only writer");
    }
}

/// Asserts the watcher prints exactly `versions`, in order, by `deadline`.
fn expect_lines(watch: &Ctl, versions: std::ops::RangeInclusive<u64>, deadline: Instant) {
    for i in versions {
        let line = watch.line_by(deadline).unwrap_or_else(|| {
            panic!("version {i} never printed; the watcher's stderr:\n{}", watch.stderr())
        });
        assert_eq!(line, format!("{i}\tvalue-{i}"), "stderr:\n{}", watch.stderr());
    }
}

#[test]
fn watch_prints_every_version_in_order_and_survives_the_death_of_its_node() {
    let mut cluster = TestCluster::start("watch", 3);
    let key = Key::from("watched");
    let mut writer = cluster.client(None);
    let watch = Ctl::start(&cluster, &["watch", "watched"]);
    // Version 1 is printed whether the watch's first poll comes before the
    // write (it is told of it) or after (it starts at the current state);
    // either way the key's history is on from then.
    write_versions(&mut writer, &key, 1..=1);
    expect_lines(&watch, 1..=1, Instant::now() + Duration::from_secs(10));

    let started = Instant::now();
    write_versions(&mut writer, &key, 2..=1000);
    expect_lines(&watch, 2..=1000, Instant::now() + Duration::from_secs(10));
    eprintln!("1,000 versions written and watched in {:?}", started.elapsed());

    let listened = watch.listened();
    let node = *listened.last().expect("the watcher names its node");
    cluster.kill(node);
    write_versions(&mut writer, &key, 1001..=1020);
    expect_lines(&watch, 1001..=1020, Instant::now() + Duration::from_secs(15));
    let moved = watch.listening_other_than(node, Instant::now() + Duration::from_secs(5));
    assert!(moved.is_some(), "the watcher moved to a live node; stderr:\n{}", watch.stderr());
    assert!(!watch.stderr().contains("gap"), "no gap: {}", watch.stderr());
    assert!(watch.line_by(Instant::now() + Duration::from_millis(300)).is_none(), "nothing more");
}

#[test]
fn a_watcher_further_behind_than_the_history_is_told_of_the_gap_and_goes_on() {
    let cluster = TestCluster::start("watchgap", 3);
    let key = Key::from("busy");
    let mut writer = cluster.client(None);
    // The history is switched on once the key exists: a watch of a key
    // that does not exist leaves nothing behind.
    write_versions(&mut writer, &key, 1..=1);
    writer.execute(&key, Change::Watch).expect("switch the history on");
    write_versions(&mut writer, &key, 2..=100);
    let held = 100 - paxosd::limits::WATCH_HISTORY_VERSIONS_MAX as u64;
    let count = (100 - held + 1).to_string();
    let mut watch = Ctl::start(&cluster, &["watch", "busy", "--from-version", "5", "--count", &count]);
    expect_lines(&watch, held..=100, Instant::now() + Duration::from_secs(10));
    assert_eq!(watch.exit_code(Duration::from_secs(10)), Some(0), "--count ends it");
    let gap = format!("gap: versions 6 to {} of busy", held - 1);
    let told = watch.stderr_holds(&gap, Instant::now() + Duration::from_secs(5));
    assert!(told, "stderr: {}", watch.stderr());
}

#[test]
fn a_watch_without_a_version_starts_at_the_current_state_and_shows_deletes() {
    let cluster = TestCluster::start("watchnow", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "a"]), 0);
    assert_exit(&cluster.ctl(&["propose", "k", "b"]), 0);
    let mut watch = Ctl::start(&cluster, &["watch", "k", "--count", "3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(watch.line_by(deadline).as_deref(), Some("2\tb"));
    assert_exit(&cluster.ctl(&["delete", "k"]), 0);
    assert_eq!(watch.line_by(deadline).as_deref(), Some("3"), "a deleted state has no tab");
    assert_exit(&cluster.ctl(&["propose", "k", ""]), 0);
    assert_eq!(watch.line_by(deadline).as_deref(), Some("4\t"), "an empty value has one");
    assert_eq!(watch.exit_code(Duration::from_secs(10)), Some(0));
}

#[test]
fn read_wait_version_returns_once_the_version_is_there_or_times_out() {
    let cluster = TestCluster::start("waitversion", 3);
    let mut wait = Ctl::start(&cluster, &["read", "k", "--wait-version", "3", "--json"]);
    for v in ["a", "b", "c"] {
        assert_exit(&cluster.ctl(&["propose", "k", v]), 0);
    }
    let line = wait.line_by(Instant::now() + Duration::from_secs(10));
    assert_eq!(line.as_deref(), Some("{\"key\":\"k\",\"value\":\"c\",\"version\":3}"), "{}", wait.stderr());
    assert_eq!(wait.exit_code(Duration::from_secs(10)), Some(0));
    // Reached already: at once.
    let out = cluster.ctl(&["read", "k", "--wait-version", "2"]);
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "c\n");
    let out = cluster.ctl(&["--timeout-ms", "700", "read", "k", "--wait-version", "9"]);
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("did not reach version 9"), "{}", stderr(&out));
}

#[test]
fn a_watch_from_a_version_the_key_never_reached_says_so_and_goes_on_from_the_key() {
    let cluster = TestCluster::start("watchbehind", 3);
    assert_exit(&cluster.ctl(&["propose", "k", "a"]), 0);
    assert_exit(&cluster.ctl(&["propose", "k", "b"]), 0);
    let mut watch = Ctl::start(&cluster, &["watch", "k", "--from-version", "10", "--count", "1"]);
    let said =
        "paxosctl: watch: k is at version 2, below 10: it was recreated or restored; going on from version 2";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !watch.stderr().contains(said) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(watch.stderr().contains(said), "stderr: {}", watch.stderr());
    assert_exit(&cluster.ctl(&["propose", "k", "c"]), 0);
    assert_eq!(watch.line_by(deadline).as_deref(), Some("3\tc"), "stderr: {}", watch.stderr());
    assert_eq!(watch.exit_code(Duration::from_secs(10)), Some(0));
}
