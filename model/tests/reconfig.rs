//! Exhaustive checks of the membership change and of its planted faults.
//! Each check uses two threads, and the checks take turns, since the
//! machine they are sized for has two cores.

mod common;

use common::{Outcome, bfs, verdicts};
use paxosd_model::reconfig::{
    AGREEMENT, CARRIED_OVER, CHOSEN_IN_C0_BEFORE_FREEZE, CHOSEN_IN_C1, ReconfigModel, Variant, trace,
};
use stateright::Checker;

fn assert_unsafe<C: Checker<ReconfigModel>>(name: &str, outcome: Outcome<C>) {
    common::assert_unsafe(name, outcome, AGREEMENT, trace);
}

/// Asserts that the whole state space was explored with no violation, and
/// that it is not vacuous: some run chooses a value in `C0` before the
/// freeze, some chooses one in `C1`, and some does both.
fn assert_safe<C: Checker<ReconfigModel>>(name: &str, outcome: Outcome<C>) {
    let checker = outcome.checker;
    common::assert_exhausted_and_safe(name, &checker, outcome.elapsed, AGREEMENT, trace);
    for property in [CHOSEN_IN_C0_BEFORE_FREEZE, CHOSEN_IN_C1, CARRIED_OVER] {
        assert!(checker.discovery(property).is_some(), "never: {property}");
    }
}

/// `{1,2,3} → {2,3,4}`, two drivers each with its own snapshots; node 1
/// proposes in `C0` and may take a late epoch, node 4 proposes in `C1`.
#[test]
fn replace_is_safe_with_two_drivers() {
    let model = ReconfigModel { drivers: 2, late_epoch: Some(1), ..ReconfigModel::replace(Variant::Real) };
    assert_safe("replace, two drivers, late epoch", bfs(model, false));
}

/// `{1,2,3} → {2,3,4}`, one driver; node 2, a member of both, proposes
/// too, in whichever configuration it has active.
#[test]
fn replace_is_safe_with_three_proposers() {
    let model = ReconfigModel {
        proposers: vec![(1, 1), (2, 1), (4, 1)],
        late_epoch: Some(1),
        ..ReconfigModel::replace(Variant::Real)
    };
    assert_safe("replace, three proposers, late epoch", bfs(model, false));
}

/// `{1,2,3} → {1,2,3,4}`, one driver; node 1 proposes twice, before and
/// after it installs `C1`, node 4 once.
#[test]
fn grow_is_safe() {
    let model = ReconfigModel { proposers: vec![(1, 2), (4, 1)], ..ReconfigModel::grow(Variant::Real) };
    assert_safe("grow", bfs(model, false));
}

/// `{1,2,3,4} → {1,2,3}`, one driver; node 4, removed, proposes in `C0`,
/// node 1 in either.
#[test]
fn shrink_is_safe() {
    let model = ReconfigModel { proposers: vec![(4, 1), (1, 1)], ..ReconfigModel::shrink(Variant::Real) };
    assert_safe("shrink", bfs(model, false));
}

/// Scanned nodes go on voting in `C0`: `C0` chooses after the scan a value
/// the seeds do not carry.
#[test]
fn scan_without_freeze_is_unsafe() {
    assert_unsafe("no freeze", bfs(ReconfigModel::replace(Variant::NoFreeze), true));
}

/// Nodes install `C1` before a majority of it is seeded: a majority of
/// `C1` that holds nothing of `C0` chooses another value.
#[test]
fn install_before_seed_is_unsafe() {
    assert_unsafe("install before seed", bfs(ReconfigModel::replace(Variant::InstallBeforeSeed), true));
}

/// Without the epoch check, installed nodes vote for the stale proposer of
/// `C0` once its ballots are of an epoch above the change's.
#[test]
fn no_epoch_check_is_unsafe_with_a_late_epoch() {
    let model = ReconfigModel { late_epoch: Some(1), ..ReconfigModel::replace(Variant::NoEpochCheck) };
    assert_unsafe("no epoch check, late epoch", bfs(model, true));
}

/// While every ballot is of its proposer's configuration's epoch, the
/// floor refuses the stale proposer's ballots of epoch 0 as the epoch check
/// would, and votes of nodes still in `C0` for ballots of epoch 1 count
/// only with those of the seeded majority of `C1`: without the check it is
/// still safe. It is the late epoch that needs the check.
#[test]
fn no_epoch_check_is_safe_while_ballots_are_of_their_configuration() {
    let model = ReconfigModel {
        proposers: vec![(1, 1), (2, 1), (4, 1)],
        ..ReconfigModel::replace(Variant::NoEpochCheck)
    };
    assert_safe("no epoch check, no late epoch", bfs(model, false));
}

/// Pruning dead messages only merges states: with it off, the verdicts of
/// a small configuration are the same.
#[test]
fn pruning_changes_no_verdict() {
    let variants = [Variant::Real, Variant::NoFreeze, Variant::InstallBeforeSeed, Variant::NoEpochCheck];
    for variant in variants {
        let small = ReconfigModel { late_epoch: Some(1), ..ReconfigModel::replace(variant) };
        let unpruned = ReconfigModel { prune: false, ..small.clone() };
        let verdicts = [small, unpruned].map(verdicts);
        assert_eq!(verdicts[0], verdicts[1], "{variant:?}");
    }
}
