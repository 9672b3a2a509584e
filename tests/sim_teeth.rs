//! The simulator has teeth: each deliberately broken variant of the
//! protocol is caught within a bounded number of seeds. A simulator that
//! passes a broken protocol proves nothing about a correct one.

#![cfg(feature = "planted-bugs")]

use paxosd::core::PlantedBugs;
use paxosd::sim::{self, SimOptions};

/// Seeds tried per bug before the test fails.
const SEEDS_MAX: u64 = 200;

/// Runs seeds 0.. with `bugs` until one fails; returns that seed and its
/// first violation.
fn first_catch(bugs: PlantedBugs, ops: u64) -> Option<(u64, String)> {
    (0..SEEDS_MAX).find_map(|seed| {
        let mut options = SimOptions::new(seed);
        options.bugs = bugs;
        options.ops = ops;
        let report = sim::run_seed(&options);
        report.violations.first().map(|v| (seed, v.clone()))
    })
}

fn assert_caught(name: &str, bugs: PlantedBugs, ops: u64) {
    match first_catch(bugs, ops) {
        Some((seed, violation)) => println!("{name}: caught by seed {seed}: {violation}"),
        None => panic!("{name}: not caught in {SEEDS_MAX} seeds"),
    }
}

#[test]
fn acceptor_accepting_below_its_promise_is_caught() {
    let bugs = PlantedBugs { accept_below_promise: true, ..PlantedBugs::default() };
    assert_caught("accept_below_promise", bugs, 1000);
}

#[test]
fn proposer_ignoring_accepted_state_is_caught() {
    let bugs = PlantedBugs { ignore_accepted_state: true, ..PlantedBugs::default() };
    assert_caught("ignore_accepted_state", bugs, 1000);
}

#[test]
fn driver_replying_before_sync_is_caught() {
    let bugs = PlantedBugs { reply_before_sync: true, ..PlantedBugs::default() };
    assert_caught("reply_before_sync", bugs, 1000);
}

#[test]
fn a_retried_request_applied_twice_when_it_moves_to_another_node_is_caught() {
    let bugs = PlantedBugs { reapply_resent: true, ..PlantedBugs::default() };
    assert_caught("reapply_resent", bugs, 1000);
}

#[test]
fn dedupe_forgotten_across_a_restart_is_caught() {
    let bugs = PlantedBugs { log_forgets_recent: true, ..PlantedBugs::default() };
    assert_caught("log_forgets_recent", bugs, 1000);
}

#[test]
fn a_not_run_answer_that_a_later_copy_makes_false_is_caught() {
    let bugs = PlantedBugs { forget_refusals: true, ..PlantedBugs::default() };
    assert_caught("forget_refusals", bugs, 1000);
}

#[test]
fn a_promise_dropped_without_widening_it_to_keys_without_a_slot_is_caught() {
    let bugs = PlantedBugs { forget_dropped_promises: true, ..PlantedBugs::default() };
    assert_caught("forget_dropped_promises", bugs, 1000);
}

#[test]
fn one_round_writes_that_skip_the_prepare_after_a_conflict_are_caught() {
    let bugs = PlantedBugs { fast_path_after_conflict: true, ..PlantedBugs::default() };
    assert_caught("fast_path_after_conflict", bugs, 1000);
}

#[test]
fn one_round_reads_that_trust_one_acceptor_are_caught() {
    let bugs = PlantedBugs { read_from_one_acceptor: true, ..PlantedBugs::default() };
    assert_caught("read_from_one_acceptor", bugs, 1000);
}

#[test]
fn a_membership_change_that_installs_before_seeding_is_caught() {
    let bugs = PlantedBugs { install_before_seed: true, ..PlantedBugs::default() };
    assert_caught("install_before_seed", bugs, 1000);
}

#[test]
fn a_node_that_votes_before_catching_up_after_losing_data_is_caught() {
    let bugs = PlantedBugs { vote_while_catching_up: true, ..PlantedBugs::default() };
    assert_caught("vote_while_catching_up", bugs, 1000);
}

#[test]
fn an_acquire_that_does_not_wait_for_the_lease_to_run_out_is_caught() {
    let bugs = PlantedBugs { lease_take_without_waiting: true, ..PlantedBugs::default() };
    let (seed, violation) =
        first_catch(bugs, 1000).expect("lease_take_without_waiting: not caught in 200 seeds");
    println!("lease_take_without_waiting: caught by seed {seed}: {violation}");
    assert!(violation.starts_with("lock safety"), "caught, but not by the lock checker: {violation}");
}

#[test]
fn a_lease_counted_from_the_answer_instead_of_the_send_is_caught() {
    let bugs = PlantedBugs { lease_counted_from_answer: true, ..PlantedBugs::default() };
    let (seed, violation) =
        first_catch(bugs, 1000).expect("lease_counted_from_answer: not caught in 200 seeds");
    println!("lease_counted_from_answer: caught by seed {seed}: {violation}");
    assert!(violation.starts_with("lock safety"), "caught, but not by the lock checker: {violation}");
}
