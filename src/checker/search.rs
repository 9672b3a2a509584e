//! The search for a linearization of one key's history: Wing & Gong's
//! backtracking with Lowe's memoization, as Porcupine does it.
//!
//! The history is a doubly linked list of call and return entries in real
//! time order. The search walks it from the front; at a call it tries to
//! linearize that operation next ("lift" it out of the list with its return)
//! and starts again from the front. Reaching a return means the operation it
//! closes should have been linearized already, so the search backtracks
//! ("unlift"). A cache of (linearized set, register state) pairs already
//! explored keeps the search from redoing work it has proved fruitless.
//!
//! Operations of unknown outcome have a call and no return: the search may
//! linearize them anywhere after their call, and succeeds once every
//! operation that has a return is linearized, whether or not they were.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

/// A value of the register, interned per key. The register starts absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ValueId(u32);

impl ValueId {
    pub(crate) const ABSENT: Self = Self(0);

    pub(crate) fn from_index(index: usize) -> Self {
        Self(u32::try_from(index).expect("fewer than 2^32 distinct values per key"))
    }
}

/// What linearizing an operation does to the register, and when it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A read that returned `seen`.
    Read { seen: ValueId },
    /// A write or (with `ABSENT`) a delete.
    Write { value: ValueId },
    /// A cas that found `expected` and wrote `new`.
    Cas { expected: ValueId, new: ValueId },
    /// A cas that ran and found something other than `expected`.
    CasFailed { expected: ValueId },
    /// A cas whose outcome nobody saw: it writes `new` if it finds
    /// `expected`, and fits any state.
    CasUnknown { expected: ValueId, new: ValueId },
}

impl Step {
    /// The state after this step, or None if it cannot happen in `state`.
    fn apply(self, state: ValueId) -> Option<ValueId> {
        match self {
            Self::Read { seen } => (state == seen).then_some(state),
            Self::Write { value } => Some(value),
            Self::Cas { expected, new } => (state == expected).then_some(new),
            Self::CasFailed { expected } => (state != expected).then_some(state),
            Self::CasUnknown { expected, new } => Some(if state == expected { new } else { state }),
        }
    }
}

/// One key's history as the search sees it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Problem {
    steps: Vec<Step>,
    /// (operation, is_call) in real time order.
    entries: Vec<(u32, bool)>,
    returns: usize,
}

impl Problem {
    /// Adds an operation's call; returns the operation's index.
    pub(crate) fn push_call(&mut self, step: Step) -> u32 {
        let op = u32::try_from(self.steps.len()).expect("fewer than 2^32 operations per key");
        self.steps.push(step);
        self.entries.push((op, true));
        op
    }

    /// Adds the return of an operation whose call is already in.
    pub(crate) fn push_return(&mut self, op: u32) {
        assert!((op as usize) < self.steps.len(), "return before its call");
        self.entries.push((op, false));
        self.returns += 1;
    }
}

/// How much work one search may do before it gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) steps_max: u64,
    pub(crate) cache_words_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    Violation,
    /// The budget ran out first.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchReport {
    pub(crate) outcome: Outcome,
    pub(crate) steps: u64,
}

const NIL: u32 = u32::MAX;

/// A list node; node 0 is the head.
#[derive(Debug, Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    op: u32,
    is_call: bool,
    /// For a call: its return node, or NIL if it has none.
    matching: u32,
}

struct List {
    nodes: Vec<Node>,
}

impl List {
    fn new(problem: &Problem) -> Self {
        let count = problem.entries.len() as u32;
        // The head (node 0) carries no operation.
        let head = (NIL, false);
        let mut call_node = vec![NIL; problem.steps.len()];
        let mut nodes: Vec<Node> = std::iter::once(&head)
            .chain(&problem.entries)
            .zip(0u32..)
            .map(|(&(op, is_call), n)| Node {
                // The head's prev wraps to NIL.
                prev: n.wrapping_sub(1),
                next: if n < count { n + 1 } else { NIL },
                op,
                is_call,
                matching: NIL,
            })
            .collect();
        for n in 1..nodes.len() {
            let Node { op, is_call, .. } = nodes[n];
            if is_call {
                call_node[op as usize] = n as u32;
            } else {
                nodes[call_node[op as usize] as usize].matching = n as u32;
            }
        }
        Self { nodes }
    }

    fn first(&self) -> u32 {
        self.nodes[0].next
    }

    fn unlink(&mut self, n: u32) {
        let Node { prev, next, .. } = self.nodes[n as usize];
        self.nodes[prev as usize].next = next;
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    /// Undoes `unlink(n)`, provided everything unlinked since was relinked.
    fn relink(&mut self, n: u32) {
        let Node { prev, next, .. } = self.nodes[n as usize];
        self.nodes[prev as usize].next = n;
        if next != NIL {
            self.nodes[next as usize].prev = n;
        }
    }

    fn lift(&mut self, call: u32) {
        self.unlink(call);
        let matching = self.nodes[call as usize].matching;
        if matching != NIL {
            self.unlink(matching);
        }
    }

    fn unlift(&mut self, call: u32) {
        let matching = self.nodes[call as usize].matching;
        if matching != NIL {
            self.relink(matching);
        }
        self.relink(call);
    }
}

/// Searches for a linearization of `problem` within `budget`.
pub(crate) fn search(problem: &Problem, budget: &Budget) -> SearchReport {
    let mut list = List::new(problem);
    let mut set = Linearized::new(problem.steps.len());
    let mut cache = Cache::new(set.bits.len());
    let mut calls: Vec<(u32, ValueId)> = Vec::new();
    let mut state = ValueId::ABSENT;
    let mut returns_left = problem.returns;
    let mut node = list.first();
    let mut steps = 0;
    let report = |outcome, steps| SearchReport { outcome, steps };
    loop {
        if returns_left == 0 {
            return report(Outcome::Linearizable, steps);
        }
        steps += 1;
        if steps > budget.steps_max || cache.bits.len() > budget.cache_words_max {
            return report(Outcome::Unknown, steps);
        }
        let entry = list.nodes.get(node as usize).copied();
        if let Some(entry) = entry.filter(|e| e.is_call) {
            // An operation of unknown outcome that would not change the
            // state is never worth linearizing: leaving it out is as good.
            let next_state = problem.steps[entry.op as usize]
                .apply(state)
                .filter(|&next| entry.matching != NIL || next != state);
            if let Some(next_state) = next_state {
                set.flip(entry.op);
                if cache.insert(set.hash, next_state, &set.bits) {
                    calls.push((node, state));
                    state = next_state;
                    returns_left -= usize::from(entry.matching != NIL);
                    list.lift(node);
                    node = list.first();
                    continue;
                }
                set.flip(entry.op);
            }
            node = entry.next;
        } else {
            // A return (or, defensively, the end of the list): the
            // operation it closes should have been linearized by now.
            let Some((call, previous)) = calls.pop() else {
                return report(Outcome::Violation, steps);
            };
            let entry = list.nodes[call as usize];
            list.unlift(call);
            set.flip(entry.op);
            state = previous;
            returns_left += usize::from(entry.matching != NIL);
            node = entry.next;
        }
    }
}

/// The set of linearized operations, with a Zobrist hash kept up to date so
/// the cache never hashes the whole bitset.
struct Linearized {
    bits: Vec<u64>,
    zobrist: Vec<u64>,
    hash: u64,
}

impl Linearized {
    fn new(ops: usize) -> Self {
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        let zobrist = (0..ops).map(|_| splitmix64(&mut seed)).collect();
        Self { bits: vec![0; ops.div_ceil(64).max(1)], zobrist, hash: 0 }
    }

    fn flip(&mut self, op: u32) {
        let op = op as usize;
        self.bits[op / 64] ^= 1 << (op % 64);
        self.hash ^= self.zobrist[op];
    }
}

fn splitmix64(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// (linearized set, state) pairs already explored. The sets live in one
/// flat arena; entries with the same (hash, state) are chained.
struct Cache {
    words: usize,
    heads: HashMap<(u64, ValueId), u32, BuildHasherDefault<MixHasher>>,
    bits: Vec<u64>,
    chain: Vec<u32>,
}

impl Cache {
    fn new(words: usize) -> Self {
        Self { words, heads: HashMap::default(), bits: Vec::new(), chain: Vec::new() }
    }

    /// Adds the pair; false if it was already there.
    fn insert(&mut self, hash: u64, state: ValueId, set: &[u64]) -> bool {
        let entry = u32::try_from(self.chain.len()).expect("cache within budget");
        match self.heads.entry((hash, state)) {
            Entry::Occupied(mut head) => {
                let mut at = *head.get();
                while at != NIL {
                    let start = at as usize * self.words;
                    if self.bits[start..start + self.words] == *set {
                        return false;
                    }
                    at = self.chain[at as usize];
                }
                self.chain.push(*head.get());
                head.insert(entry);
            }
            Entry::Vacant(head) => {
                head.insert(entry);
                self.chain.push(NIL);
            }
        }
        self.bits.extend_from_slice(set);
        true
    }
}

/// The cache keys are already well mixed (Zobrist hashes), so a cheap
/// multiplicative hasher is enough; SipHash would dominate the search.
#[derive(Default)]
struct MixHasher(u64);

impl MixHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u32(&mut self, word: u32) {
        self.add(u64::from(word));
    }

    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ValueId = ValueId(1);
    const B: ValueId = ValueId(2);
    const ABSENT: ValueId = ValueId::ABSENT;

    fn budget() -> Budget {
        Budget { steps_max: 1_000_000, cache_words_max: 1 << 20 }
    }

    /// A problem from entries written as (step, or None for the return of
    /// the n-th call).
    fn problem(entries: &[Result<Step, u32>]) -> Problem {
        let mut problem = Problem::default();
        for entry in entries {
            match *entry {
                Ok(step) => {
                    problem.push_call(step);
                }
                Err(op) => problem.push_return(op),
            }
        }
        problem
    }

    fn outcome(entries: &[Result<Step, u32>]) -> Outcome {
        search(&problem(entries), &budget()).outcome
    }

    #[test]
    fn steps_behave_like_a_register() {
        let cases = [
            (Step::Read { seen: A }, A, Some(A)),
            (Step::Read { seen: A }, B, None),
            (Step::Write { value: A }, B, Some(A)),
            (Step::Write { value: ABSENT }, A, Some(ABSENT)),
            (Step::Cas { expected: A, new: B }, A, Some(B)),
            (Step::Cas { expected: A, new: B }, B, None),
            (Step::CasFailed { expected: A }, A, None),
            (Step::CasFailed { expected: A }, B, Some(B)),
            (Step::CasUnknown { expected: A, new: B }, A, Some(B)),
            (Step::CasUnknown { expected: A, new: B }, ABSENT, Some(ABSENT)),
        ];
        for (step, state, after) in cases {
            assert_eq!(step.apply(state), after, "{step:?} in state {state:?}");
        }
    }

    #[test]
    fn overlapping_operations_take_effect_in_either_order() {
        let write = Ok(Step::Write { value: A });
        for seen in [ABSENT, A] {
            let read = Ok(Step::Read { seen });
            let entries = [write, read, Err(1), Err(0)];
            assert_eq!(outcome(&entries), Outcome::Linearizable, "read saw {seen:?}");
        }
    }

    #[test]
    fn real_time_order_is_kept() {
        let entries = [Ok(Step::Write { value: A }), Err(0), Ok(Step::Read { seen: ABSENT }), Err(1)];
        assert_eq!(outcome(&entries), Outcome::Violation);
    }

    #[test]
    fn operation_of_unknown_outcome_may_take_effect_or_not() {
        let unknown_write = Ok(Step::Write { value: A });
        for seen in [ABSENT, A] {
            let entries = [unknown_write, Ok(Step::Read { seen }), Err(1)];
            assert_eq!(outcome(&entries), Outcome::Linearizable, "read saw {seen:?}");
        }
        // But not before it was invoked.
        let entries = [Ok(Step::Read { seen: A }), Err(0), unknown_write];
        assert_eq!(outcome(&entries), Outcome::Violation);
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(outcome(&[]), Outcome::Linearizable);
    }

    #[test]
    fn search_stops_at_its_step_budget() {
        let entries = [
            Ok(Step::Write { value: A }),
            Ok(Step::Write { value: B }),
            Err(0),
            Err(1),
            Ok(Step::Read { seen: A }),
            Err(2),
        ];
        let tight = Budget { steps_max: 3, ..budget() };
        let report = search(&problem(&entries), &tight);
        assert_eq!(report.outcome, Outcome::Unknown);
        assert_eq!(outcome(&entries), Outcome::Linearizable);
    }

    #[test]
    fn cache_refuses_a_pair_it_has_seen() {
        let mut cache = Cache::new(2);
        assert!(cache.insert(7, A, &[1, 2]));
        assert!(!cache.insert(7, A, &[1, 2]));
        // Same hash, other set or other state: new.
        assert!(cache.insert(7, A, &[1, 3]));
        assert!(cache.insert(7, B, &[1, 2]));
        assert!(!cache.insert(7, A, &[1, 3]));
    }

    #[test]
    fn lift_and_unlift_restore_the_list() {
        let entries = [Ok(Step::Write { value: A }), Ok(Step::Read { seen: A }), Err(0), Err(1)];
        let mut list = List::new(&problem(&entries));
        let order = |list: &List| {
            let mut order = Vec::new();
            let mut node = list.first();
            while node != NIL {
                order.push(node);
                node = list.nodes[node as usize].next;
            }
            order
        };
        list.lift(1);
        assert_eq!(order(&list), [2, 4]);
        list.lift(2);
        assert_eq!(order(&list), Vec::<u32>::new());
        list.unlift(2);
        list.unlift(1);
        assert_eq!(order(&list), [1, 2, 3, 4]);
    }
}
