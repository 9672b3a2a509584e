//! Membership changes on a real cluster: `paxosctl member add|remove`
//! while `paxosctl torture` runs, with the node driving each change killed
//! in the middle of it and the change finished by the next command.

mod common;

use common::{TestCluster, assert_exit, stderr, stdout};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A cluster of `founding` nodes that knows `joining` more (`joins = true`),
/// all started: the founding ones bootstrapped, the others joining.
fn start_with_joiners(tag: &str, founding: u16, joining: u16) -> TestCluster {
    let mut cluster = TestCluster::configure(tag, usize::from(founding + joining));
    let text = std::fs::read_to_string(&cluster.config_path).expect("read config");
    let mut out = String::new();
    for block in text.split_inclusive("\n") {
        out += block;
        if let Some(id) = block.strip_prefix("id = ").and_then(|v| v.trim().parse::<u16>().ok())
            && id > founding
        {
            out += "joins = true\n";
        }
    }
    std::fs::write(&cluster.config_path, out).expect("write config");
    for id in 1..=founding {
        cluster.start_node_flags(id, &["--bootstrap"]);
    }
    for id in founding + 1..=founding + joining {
        cluster.start_node_flags(id, &["--join"]);
    }
    cluster.wait_until_all_answer();
    cluster
}

fn address(cluster: &TestCluster, id: u16) -> String {
    format!("127.0.0.1:{}", cluster.ports[usize::from(id) - 1])
}

/// `paxosctl member list`'s member ids, from its first lines.
fn listed_members(cluster: &TestCluster) -> Vec<u16> {
    let out = cluster.ctl(&["member", "list"]);
    assert_exit(&out, 0);
    stdout(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("node "))
        .filter(|rest| !rest.contains("sees"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

fn spawn_ctl(cluster: &TestCluster, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_paxosctl"))
        .arg("--config")
        .arg(&cluster.config_path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn paxosctl")
}

#[test]
fn the_cluster_goes_from_three_to_five_members_and_back_to_three_under_torture() {
    let mut cluster = start_with_joiners("members", 3, 2);
    assert_eq!(listed_members(&cluster), vec![1, 2, 3]);
    let history = cluster.dir.join("torture.jsonl");
    let torture = spawn_ctl(
        &cluster,
        &[
            "torture",
            "--duration",
            "45",
            "--clients",
            "6",
            "--keys",
            "12",
            "--history",
            history.to_str().expect("utf-8"),
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    // (driver, command, members after it, the step its driver dies in).
    let steps: [(u16, Vec<String>, Vec<u16>, &str); 4] = [
        (1, vec!["add".into(), "4".into(), address(&cluster, 4)], vec![1, 2, 3, 4], "scanning"),
        (2, vec!["add".into(), "5".into(), address(&cluster, 5)], vec![1, 2, 3, 4, 5], "seeding"),
        (4, vec!["remove".into(), "1".into()], vec![2, 3, 4, 5], "installing"),
        (3, vec!["remove".into(), "2".into()], vec![3, 4, 5], "freezing"),
    ];
    for (driver, command, expected, step) in &steps {
        // The driver crashes (aborts) when its change reaches `step`.
        cluster.stop(*driver);
        cluster.start_node_env(*driver, &[], &[("PAXOSD_CRASH_WHILE_DRIVING", step)]);
        cluster.wait_until_answers(*driver);
        let driver_arg = driver.to_string();
        let mut args = vec!["--node", driver_arg.as_str(), "member"];
        args.extend(command.iter().map(String::as_str));
        let mut pinned = spawn_ctl(&cluster, &args);
        let died = cluster.wait_exit(*driver, Duration::from_secs(20));
        let _ = pinned.kill();
        let _ = pinned.wait();
        assert!(died.is_some(), "node {driver} did not crash while {step}");
        assert!(
            cluster.stderr(*driver).contains(&format!("crashing while {step}")),
            "{}",
            cluster.stderr(*driver)
        );
        let frozen: Vec<u16> = (1..=5).filter(|id| cluster.status_line(*id).contains("FROZEN")).collect();
        println!("{command:?}: driver {driver} died {step}; frozen then: {frozen:?}");
        cluster.start_node(*driver);
        cluster.wait_until_answers(*driver);
        // The same command, through any node, finishes the change.
        let mut again = vec!["member"];
        again.extend(command.iter().map(String::as_str));
        let out = cluster.ctl(&again);
        assert_exit(&out, 0);
        assert_eq!(&listed_members(&cluster), expected, "after {command:?}");
    }
    // The removed nodes know it, and every member votes in the last
    // configuration.
    for id in [1, 2] {
        assert!(cluster.status_line(id).contains("NOT A MEMBER"), "{}", cluster.status_line(id));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = |c: &TestCluster| {
        (3..=5).all(|id| c.status_line(id).contains("config=") && c.status_line(id).contains(":{3,4,5}"))
    };
    while !last(&cluster) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(last(&cluster), "{}", cluster.status_line(3));
    let out = torture.wait_with_output().expect("torture ends");
    let report = stdout(&out);
    assert!(out.status.success(), "torture failed:\n{report}\n{}", stderr(&out));
    assert!(report.contains("linearizable=yes") && report.contains("lost_acked=0"), "{report}");
    // The cluster of nodes 3, 4 and 5 serves on its own.
    cluster.kill(1);
    cluster.kill(2);
    assert_exit(&cluster.ctl(&["propose", "after", "change"]), 0);
}

#[test]
fn member_commands_refuse_what_cannot_be_done_and_say_why() {
    let cluster = start_with_joiners("member-errors", 3, 1);
    let out = cluster.ctl(&["member", "add", "9", "127.0.0.1:9"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("node 9 is not in"), "{}", stderr(&out));
    let out = cluster.ctl(&["member", "add", "4", "127.0.0.1:1"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("not 127.0.0.1:1"), "{}", stderr(&out));
    let out = cluster.ctl(&["member", "remove", "4"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("node 4 is not a member"), "{}", stdout(&out));
    // Node 4 joins but votes on nothing until added.
    assert!(cluster.status_line(4).contains("JOINING"), "{}", cluster.status_line(4));
    let out = cluster.ctl(&["member", "add", "4", &address(&cluster, 4)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("installed at epoch"), "{}", stdout(&out));
    assert!(cluster.status_line(4).contains("  up  "), "{}", cluster.status_line(4));
    let out = cluster.ctl(&["member", "add", "4", &address(&cluster, 4)]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("a member already"), "{}", stdout(&out));
}
