//! What the checks of both models share: running a checker (one check at a
//! time, two threads each, since the machine they are sized for has two
//! cores), and reporting what it found and what it cost.

#![allow(dead_code)] // each test file uses its own part of it

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stateright::{Checker, HasDiscoveries, Model, Path};

/// Prints a counterexample path of model `M`.
pub type Trace<M> = fn(&M, Path<<M as Model>::State, <M as Model>::Action>) -> String;

static ONE_CHECK_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a check found, and what it cost.
pub struct Outcome<C> {
    pub checker: C,
    pub elapsed: Duration,
}

/// The bounds a model's states and actions need for a checker to run.
pub trait Checkable: Model<State = Self::S, Action = Self::A> + Send + Sync + 'static {
    type S: Clone + Debug + Eq + Hash + Send + Sync + 'static;
    type A: Clone + Debug + Eq + Send + Sync + 'static;
}

impl<M> Checkable for M
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + Debug + Eq + Hash + Send + Sync + 'static,
    M::Action: Clone + Debug + Eq + Send + Sync + 'static,
{
    type S = M::State;
    type A = M::Action;
}

/// Runs `check` alone (one check at a time) and times it.
fn timed<C>(check: impl FnOnce() -> C) -> Outcome<C> {
    let _turn = ONE_CHECK_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    let checker = check();
    Outcome { checker, elapsed: start.elapsed() }
}

/// Breadth-first search over the whole state space, or until a safety
/// violation is found if `stop_at_violation`.
pub fn bfs<M: Checkable>(model: M, stop_at_violation: bool) -> Outcome<impl Checker<M>> {
    timed(|| {
        let builder = model.checker().threads(2);
        let builder =
            if stop_at_violation { builder.finish_when(HasDiscoveries::AnyFailures) } else { builder };
        builder.spawn_bfs().join()
    })
}

/// Depth-first search until a safety violation is found: far quicker than
/// breadth-first where the violation lies deep, at the price of a longer
/// counterexample.
pub fn dfs_until_violation<M: Checkable>(model: M) -> Outcome<impl Checker<M>> {
    timed(|| model.checker().threads(2).finish_when(HasDiscoveries::AnyFailures).spawn_dfs().join())
}

/// The properties a whole exploration of `model` finds something for,
/// sorted: what it concludes.
pub fn verdicts<M: Checkable>(model: M) -> Vec<&'static str> {
    let checker = bfs(model, false).checker;
    assert!(checker.is_done());
    let mut found: Vec<_> = checker.discoveries().into_keys().collect();
    found.sort();
    found
}

pub fn report<M: Model, C: Checker<M>>(name: &str, checker: &C, elapsed: Duration) {
    println!(
        "{name}: {} unique states ({} generated), depth {}, {:.1} s",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        elapsed.as_secs_f64(),
    );
}

/// Asserts that the checker found the property `agreement` violated (two
/// different values chosen), and prints how with `trace`.
pub fn assert_unsafe<M: Model, C: Checker<M>>(
    name: &str,
    outcome: Outcome<C>,
    agreement: &'static str,
    trace: Trace<M>,
) where
    M::State: Clone + Debug + Eq + Hash,
    M::Action: Clone + Debug + Eq,
{
    report(name, &outcome.checker, outcome.elapsed);
    let checker = outcome.checker;
    let path = checker.discovery(agreement).expect("two different values chosen");
    println!("counterexample:\n{}", trace(checker.model(), path));
}

/// Asserts that the whole state space was explored and `agreement` never
/// violated (the trace says how, if it was).
pub fn assert_exhausted_and_safe<M: Model, C: Checker<M>>(
    name: &str,
    checker: &C,
    elapsed: Duration,
    agreement: &'static str,
    trace: Trace<M>,
) where
    M::State: Clone + Debug + Eq + Hash,
    M::Action: Clone + Debug + Eq,
{
    report(name, checker, elapsed);
    assert!(checker.is_done(), "the state space was not exhausted");
    if let Some(path) = checker.discovery(agreement) {
        panic!("two different values chosen:\n{}", trace(checker.model(), path));
    }
}
