//! Locks, fencing and leader election end to end: real `paxosd` processes
//! on loopback, the real `paxosctl lock` / `elect` / `fenced-put`, and the
//! library examples built on `paxosd::lock`.

mod common;

use common::*;
use paxosd::types::{Key, Version};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn signal(pid: u32, signal: i32) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    // SAFETY: kill(2) on a process this test started and has not reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Waits for `child` to exit, at most `limit`; kills it and panics after.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> i32 {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code().unwrap_or(-1);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not exit within {limit:?}");
}

fn output_of(mut child: Child, limit: Duration, what: &str) -> (i32, String, String) {
    let code = wait_exit(&mut child, limit, what);
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut text);
        }
        text
    };
    let out = read(child.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let err = read(child.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    (code, out, err)
}

/// One `paxosctl lock` run of the command of "Done when" 1, with the
/// command's start and end times added: (token, start ns, end ns).
fn holder_times(stdout: &str) -> (u64, u128, u128) {
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let number =
        |i: usize| words.get(i).and_then(|w| w.parse::<u128>().ok()).unwrap_or_else(|| panic!("{stdout:?}"));
    (number(0) as u64, number(1), number(2))
}

#[test]
fn two_holders_at_once_take_turns_and_the_second_token_is_larger() {
    let cluster = TestCluster::start("lock-turns", 3);
    let script = "echo $PAXOSD_LOCK_TOKEN; date +%s%N; sleep 5; date +%s%N";
    let spawn = || {
        cluster
            .ctl_command(&["lock", "demo", "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn paxosctl lock")
    };
    let (first, second) = (spawn(), spawn());
    let (code_a, out_a, err_a) = output_of(first, Duration::from_secs(40), "first lock");
    let (code_b, out_b, err_b) = output_of(second, Duration::from_secs(40), "second lock");
    assert_eq!((code_a, code_b), (0, 0), "{err_a}\n{err_b}");
    let (mut a, mut b) = (holder_times(&out_a), holder_times(&out_b));
    if b.1 < a.1 {
        std::mem::swap(&mut a, &mut b);
    }
    assert!(a.2 <= b.1, "the commands overlapped: {a:?} {b:?}");
    assert!(b.0 > a.0, "the later holder's token is not larger: {a:?} {b:?}");
    // Released on exit: the lock key is gone.
    assert_eq!(stdout(&cluster.ctl(&["read", "demo"])), "");
}

/// The holder's command writes the protected key under its token every
/// 100 ms until a write is refused (exit 9).
const FENCED_WRITER: &str = "while true; do \
    $PAXOSCTL --config $CONFIG fenced-put fdata old --token $PAXOSD_LOCK_TOKEN >/dev/null 2>&1 \
    || { echo refused > $MARK; exit 9; }; sleep 0.1; done";

/// Starts the holder; its command writes "refused" to `mark` when a write
/// is refused.
fn start_fenced_holder(cluster: &TestCluster, ttl: &str, mark: &std::path::Path) -> Child {
    cluster
        .ctl_command(&["lock", "fdemo", "--ttl", ttl, "--", "sh", "-c", FENCED_WRITER])
        .env("PAXOSCTL", PAXOSCTL)
        .env("CONFIG", cluster.config_path())
        .env("MARK", mark)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn paxosctl lock")
}

/// The token and value the protected key holds.
fn protected(cluster: &TestCluster) -> Option<(Version, String)> {
    let answer = cluster.client(None).read(&Key::from("fdata")).expect("read fdata");
    let value = answer.value?;
    let (token, v) = paxosd::lock::fenced_value(&value)?;
    Some((token, String::from_utf8_lossy(v).into_owned()))
}

fn wait_for_write(cluster: &TestCluster, value: &str) -> Version {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some((token, v)) = protected(cluster)
            && v == value
        {
            return token;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nobody wrote {value:?} to fdata");
}

/// A second session takes the lock (after the paused holder's lease ran
/// out) and writes the protected key under its token.
fn take_over(cluster: &TestCluster) -> Version {
    let script = "$PAXOSCTL --config $CONFIG fenced-put fdata new --token $PAXOSD_LOCK_TOKEN";
    let out = cluster
        .ctl_command(&["lock", "fdemo", "--ttl", "1", "--wait", "20", "--", "sh", "-c", script])
        .env("PAXOSCTL", PAXOSCTL)
        .env("CONFIG", cluster.config_path())
        .output()
        .expect("run the second holder");
    assert_exit(&out, 0);
    let (token, value) = protected(cluster).expect("fdata written");
    assert_eq!(value, "new");
    token
}

#[test]
fn a_holder_stopped_past_its_ttl_loses_the_lock_and_its_old_token_is_refused() {
    let cluster = TestCluster::start("lock-stopped", 3);
    let holder = start_fenced_holder(&cluster, "1", &temp_dir("lock-stopped-mark").join("mark"));
    let old = wait_for_write(&cluster, "old");
    // SIGSTOP the holder and its command (paxosctl's process group, and the
    // group of its own the command runs in) past the TTL.
    let groups = [holder.id(), command_of(holder.id())];
    groups.iter().for_each(|&g| unsafe_group_signal(g, libc::SIGSTOP));
    let stopped_at = Instant::now();
    let new = take_over(&cluster);
    assert!(stopped_at.elapsed() >= Duration::from_millis(1010), "taken before the lease ran out");
    assert!(new > old, "new token {new} not above the old {old}");
    groups.iter().for_each(|&g| unsafe_group_signal(g, libc::SIGCONT));
    let (code, _, err) = output_of(holder, Duration::from_secs(20), "the stopped holder");
    assert_eq!(code, 6, "paxosctl lock must report the lost lease: {err}");
    assert!(err.contains("lock lost"), "{err}");
    // The old holder's writes, with its old token, are refused by the check.
    let out = cluster.ctl(&["fenced-put", "fdata", "old", "--token", &old.0.to_string()]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("refused"), "{}", stderr(&out));
    assert_eq!(protected(&cluster).map(|(_, v)| v).as_deref(), Some("new"));
}

#[test]
fn a_command_whose_holder_is_stopped_is_fenced_off_when_it_writes() {
    let cluster = TestCluster::start("lock-fenced", 3);
    let mark = temp_dir("lock-fenced-mark").join("mark");
    let holder = start_fenced_holder(&cluster, "1", &mark);
    wait_for_write(&cluster, "old");
    // Only paxosctl stops: the command goes on writing with its old token
    // while nobody renews the lease.
    signal(holder.id(), libc::SIGSTOP);
    take_over(&cluster);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the command's write with the old token was not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(holder.id(), libc::SIGCONT);
    let (code, _, err) = output_of(holder, Duration::from_secs(20), "the stopped holder");
    assert_eq!(code, 6, "paxosctl lock must report the lost lease: {err}");
    assert!(err.contains("lock lost"), "{err}");
    assert_eq!(protected(&cluster).map(|(_, v)| v).as_deref(), Some("new"));
}

/// The pid of the command `paxosctl lock` (pid `holder`) runs: its child.
fn command_of(holder: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{holder}/task/{holder}/children")).unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "paxosctl lock started no command");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie (state Z) has exited; only its parent has not reaped it.
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn a_lost_lease_stops_everything_the_command_started() {
    let cluster = TestCluster::start("lock-grandchild", 3);
    let script = "sleep 300 & echo $! > $PIDFILE; wait";
    let pidfile = temp_dir("lock-grandchild-pid").join("pid");
    let mut holder = cluster
        .ctl_command(&["lock", "g", "--ttl", "1", "--grace", "1", "--", "sh", "-c", script])
        .env("PIDFILE", &pidfile)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paxosctl lock");
    let deadline = Instant::now() + Duration::from_secs(20);
    let grandchild: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the command never started its child");
        std::thread::sleep(Duration::from_millis(20));
    };
    signal(holder.id(), libc::SIGSTOP);
    let out = cluster.ctl(&["lock", "g", "--ttl", "1", "--wait", "20", "--", "true"]);
    assert_exit(&out, 0);
    signal(holder.id(), libc::SIGCONT);
    assert_eq!(wait_exit(&mut holder, Duration::from_secs(20), "the holder"), 6);
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !is_alive(grandchild)
    });
    if !gone {
        signal(grandchild, libc::SIGKILL);
    }
    assert!(gone, "the command's child ran on after the lease was lost");
}

#[test]
fn a_free_lock_is_taken_even_with_no_time_to_wait() {
    let cluster = TestCluster::start("lock-wait0", 3);
    assert_exit(&cluster.ctl(&["lock", "free", "--wait", "0", "--", "true"]), 0);
}

fn unsafe_group_signal(group: u32, sig: i32) {
    let pgid = libc::pid_t::try_from(group).expect("pid fits");
    // SAFETY: kill(2) on the process group this test created.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

#[test]
fn lock_exit_codes_say_what_happened() {
    let cluster = TestCluster::start("lock-codes", 3);
    // The command's own exit code.
    assert_exit(&cluster.ctl(&["lock", "codes", "--", "sh", "-c", "exit 5"]), 5);
    // Held by another for longer than --wait: 7, and the command never ran.
    let holder = cluster.ctl_command(&["lock", "codes", "--", "sleep", "3"]).spawn().expect("spawn");
    std::thread::sleep(Duration::from_millis(500));
    let out = cluster.ctl(&["lock", "codes", "--wait", "0.5", "--", "sh", "-c", "echo ran"]);
    assert_exit(&out, 7);
    assert_eq!(stdout(&out), "");
    let mut holder = holder;
    assert_eq!(wait_exit(&mut holder, Duration::from_secs(20), "holder"), 0);
    // A key that holds an ordinary value is not taken for a lock.
    assert_exit(&cluster.ctl(&["propose", "plain", "value"]), 0);
    let out = cluster.ctl(&["lock", "plain", "--", "true"]);
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("not a lock"), "{}", stderr(&out));
    assert_eq!(stdout(&cluster.ctl(&["read", "plain"])), "value\n");
    // A command that cannot be started.
    assert_exit(&cluster.ctl(&["lock", "codes", "--", "/nonexistent/command"]), 127);
    // Bad TTLs are usage errors.
    assert_exit(&cluster.ctl(&["lock", "codes", "--ttl", "0", "--", "true"]), 2);
}

#[test]
fn observers_see_each_leader_and_the_vacancy() {
    let cluster = TestCluster::start("elect", 3);
    let seen = temp_dir("elect-observer").join("stdout");
    let observe = || {
        let out = std::fs::File::create(&seen).expect("observer's output file");
        cluster.ctl_command(&["elect", "office", "--observe"]).stdout(out).spawn().expect("observer")
    };
    // Vacant at first.
    let (code, out, _) = output_of(
        cluster
            .ctl_command(&["elect", "office", "--observe", "--count", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("observer"),
        Duration::from_secs(10),
        "observer",
    );
    assert_eq!((code, out.as_str()), (0, "-\n"));
    let campaign = |value: &str| {
        cluster
            .ctl_command(&["elect", "office", value, "--ttl", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("campaign")
    };
    let mut a = campaign("alpha");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&cluster.ctl(&["read", "office"])).contains("alpha") {
        assert!(Instant::now() < deadline, "alpha was never elected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut observer = observe();
    let mut b = campaign("beta");
    std::thread::sleep(Duration::from_millis(500));
    // alpha dies without stepping down: beta takes over once its lease ran out.
    let _ = a.kill();
    let _ = a.wait();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stdout(&cluster.ctl(&["read", "office"])).contains("beta") {
        assert!(Instant::now() < deadline, "beta was never elected");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // beta steps down on SIGTERM.
    signal(b.id(), libc::SIGTERM);
    assert_eq!(wait_exit(&mut b, Duration::from_secs(10), "beta"), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&seen).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 3 && lines.last().map(String::as_str) == Some("-") {
            break lines;
        }
        assert!(Instant::now() < deadline, "the observer printed {lines:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = observer.kill();
    let _ = observer.wait();
    // Between alpha's lease running out and beta's take landing the office
    // may be seen vacant for a moment: the one line allowed beyond these.
    let leaders: Vec<&str> = match lines.as_slice() {
        [a, v, b, rest @ ..] if v == "-" && a != "-" && b != "-" => {
            [a.as_str(), b.as_str()].into_iter().chain(rest.iter().map(String::as_str)).collect()
        }
        _ => lines.iter().map(String::as_str).collect(),
    };
    assert_eq!(leaders, ["alpha", "beta", "-"], "the observer printed {lines:?}");
}

#[path = "../examples/fenced_lock.rs"]
#[allow(dead_code)]
mod fenced_lock;

#[test]
fn the_fenced_lock_example_refuses_the_paused_holder() {
    let cluster = TestCluster::start("fenced-example", 3);
    let (name, key) = (Key::from("ex-lock"), Key::from("ex-data"));
    let ttl = Duration::from_millis(500);
    let (paused, other) = std::thread::scope(|scope| {
        let first = scope.spawn(|| {
            let mut client = cluster.client(None);
            fenced_lock::run(&mut client, &name, &key, ttl, Duration::from_secs(2), "first")
        });
        std::thread::sleep(Duration::from_millis(300));
        let second = scope.spawn(|| {
            let mut client = cluster.client(None);
            fenced_lock::run(&mut client, &name, &key, ttl, Duration::ZERO, "second")
        });
        (first.join().expect("first"), second.join().expect("second"))
    });
    let (paused, other) = (paused.expect("first run"), other.expect("second run"));
    assert!(other.token > paused.token, "{paused:?} {other:?}");
    assert_eq!(paused.written.len(), 2, "{paused:?}");
    assert_eq!(paused.refused_by, Some(other.token), "{paused:?} {other:?}");
    assert!(paused.lost, "{paused:?}");
    assert_eq!(other.written.len(), 3, "{other:?}");
}

#[path = "../examples/failover.rs"]
#[allow(dead_code)]
mod failover;

#[test]
fn the_failover_example_moves_the_primary_when_the_leader_goes() {
    let cluster = TestCluster::start("failover-example", 3);
    let all = ["db1", "db2", "db3"];
    let terms = std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .iter()
            .map(|name| {
                let cluster = &cluster;
                scope.spawn(move || {
                    let mut client = cluster.client(None);
                    failover::serve(
                        &mut client,
                        name,
                        &all,
                        Duration::from_millis(500),
                        Duration::from_millis(800),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("instance")).collect::<Vec<_>>()
    });
    let mut tokens: Vec<Version> = terms
        .into_iter()
        .map(|t| match t.expect("a term") {
            failover::Term::SteppedDown { token } => token,
            other => panic!("an instance lost its office: {other:?}"),
        })
        .collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "each instance served one term with its own token");
    let table = stdout(&cluster.ctl(&["read", failover::TABLE]));
    let (token, text) = table.trim_end().split_once(' ').expect("TOKEN TABLE");
    assert_eq!(token, tokens[2].0.to_string(), "the last primary wrote the table last");
    assert!(all.iter().any(|p| text == failover::table(p, &all)), "{table}");
}

#[path = "../examples/shard_map.rs"]
#[allow(dead_code)]
mod shard_map;

#[test]
fn the_shard_map_example_loses_no_move_under_contention() {
    let cluster = TestCluster::start("shard-example", 3);
    let key = Key::from("shards/map");
    std::thread::scope(|scope| {
        for operator in 0..4u32 {
            let (cluster, key) = (&cluster, &key);
            scope.spawn(move || {
                let mut client = cluster.client(None);
                for round in 0..10 {
                    let to = format!("op{operator}-r{round}");
                    // Operator k owns shards k and k + 4.
                    let shard = operator + 4 * (round % 2);
                    shard_map::move_shard(&mut client, key, 8, "none", shard, &to).expect("move");
                }
            });
        }
    });
    let answer = cluster.client(None).read(&key).expect("read map");
    let map = shard_map::parse(answer.value.as_ref(), 8, "none");
    for operator in 0..4u32 {
        assert_eq!(map.get(&operator).map(String::as_str), Some(format!("op{operator}-r8").as_str()));
        assert_eq!(map.get(&(operator + 4)).map(String::as_str), Some(format!("op{operator}-r9").as_str()));
    }
    assert_eq!(answer.version, Version(40), "every move is one write");
}
