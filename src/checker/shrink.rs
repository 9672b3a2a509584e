//! Narrowing a key's non-linearizable history down to a small stretch that
//! is still not linearizable on its own, so a reader can see the violation.
//!
//! First the shortest prefix that is not linearizable: a prefix of a
//! linearizable history is linearizable (operations still open at the cut
//! become ones of unknown outcome), so a binary search finds it. Then whole
//! operations are dropped, in halving chunks, as long as what is left is
//! still not linearizable.
//!
//! Dropping must not invent a violation. Dropping a read or a failed cas
//! never does: it only removes a constraint. Dropping a write can: a read
//! that saw its value would then have seen a value nobody wrote. So an
//! operation that writes `v` is dropped together with every operation that
//! may have seen it as the register's latest value and depends on that: a
//! read of `v`, a cas expecting `v`, or a failed cas expecting something
//! else; and so on for what those write. An operation cannot have seen the
//! write as latest if another write, still in the stretch, surely came in
//! between: one that was invoked after the write returned and returned
//! before the operation was invoked. With that rule, if the original history
//! were linearizable, so would every stretch be (drop the same operations
//! from its linearization: every operation left sees the state it saw
//! before); a stretch that is not linearizable is therefore a proof about
//! the original history.
//!
//! A proof can still tell the wrong story: a stale read shown without the
//! write it saw looks like a read of a value nobody wrote. So a drop is also
//! refused if it takes away the last write of a value that some read left
//! in the stretch could have seen.
//!
//! Every search here runs within the shrinking budget; when it runs out, the
//! stretch found so far (proved not linearizable) is the answer.

use std::collections::HashMap;

use super::history::{KeyHistory, Observation, Role};
use super::search::{Budget, Outcome, ValueId, search};

struct Shrinker<'a> {
    key: &'a KeyHistory,
    search_budget: Budget,
    steps_left: u64,
    /// Events in the shortest prefix (which are events 0..prefix_len).
    prefix_len: usize,
    /// Per operation, what it does in the shortest prefix.
    facts: Vec<Facts>,
    /// Operations that read a value or expect it in a cas, by value.
    observers_equal: HashMap<ValueId, Vec<usize>>,
    /// Failed cas operations, with the value they expected.
    observers_not_equal: Vec<(usize, ValueId)>,
}

#[derive(Debug, Clone, Copy)]
struct Facts {
    role: Role,
    invoke_at: usize,
    /// Position of the completion, or `usize::MAX` if the operation need
    /// not be linearized at all.
    return_at: usize,
}

/// The events (indices into the key's history) of a small stretch that is
/// not linearizable. `key` must not be linearizable as a whole.
pub(crate) fn shrink(key: &KeyHistory, search_budget: Budget, steps_max: u64) -> Vec<usize> {
    let mut shrinker = Shrinker {
        key,
        search_budget,
        steps_left: steps_max,
        prefix_len: 0,
        facts: Vec::new(),
        observers_equal: HashMap::new(),
        observers_not_equal: Vec::new(),
    };
    let prefix = shrinker.shortest_prefix();
    shrinker.learn_roles(&prefix);
    shrinker.drop_operations(prefix)
}

impl Shrinker<'_> {
    /// True only if `events` is proved not linearizable within the budget.
    fn violates(&mut self, events: &[usize]) -> bool {
        if self.steps_left == 0 || events.is_empty() {
            return false;
        }
        let budget =
            Budget { steps_max: self.search_budget.steps_max.min(self.steps_left), ..self.search_budget };
        let report = search(&self.key.problem(events), &budget);
        self.steps_left = self.steps_left.saturating_sub(report.steps);
        report.outcome == Outcome::Violation
    }

    /// The events of the shortest non-linearizable prefix found.
    fn shortest_prefix(&mut self) -> Vec<usize> {
        let all: Vec<usize> = (0..self.key.event_count()).collect();
        // Invariant: all[..high] is known not to be linearizable, and
        // all[..low - 1] is not known to be non-linearizable.
        let (mut low, mut high) = (1, all.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.violates(&all[..middle]) {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        all[..high].to_vec()
    }

    /// Drops operations from `events` while it stays non-linearizable.
    fn drop_operations(&mut self, events: Vec<usize>) -> Vec<usize> {
        let invoked: Vec<usize> = events.iter().map(|&e| self.key.event_op(e)).collect();
        let mut ops = first_occurrences(&invoked, self.key.op_count());
        let mut chunk = ops.len().div_ceil(2).max(1);
        loop {
            let dropped = self.drop_pass(&events, &mut ops, chunk);
            // Single drops repeat until none helps: a drop may become
            // possible once another one is made.
            if self.steps_left == 0 || (chunk == 1 && !dropped) {
                break;
            }
            chunk = (chunk / 2).min(ops.len().div_ceil(2)).max(1);
        }
        self.events_of(&events, &ops)
    }

    /// One pass over `ops` trying to drop `chunk` consecutive operations at
    /// a time, with what depends on them; returns whether anything was
    /// dropped.
    fn drop_pass(&mut self, events: &[usize], ops: &mut Vec<usize>, chunk: usize) -> bool {
        let mut dropped = false;
        let mut start = 0;
        while start < ops.len() && self.steps_left > 0 {
            let end = (start + chunk).min(ops.len());
            let gone = self.dependents(&ops[start..end], ops);
            let candidate: Vec<usize> = ops.iter().copied().filter(|&op| !gone[op]).collect();
            if self.keeps_provenance(ops, &candidate) && self.violates(&self.events_of(events, &candidate)) {
                *ops = candidate;
                dropped = true;
            } else {
                start = end;
            }
        }
        dropped
    }

    fn learn_roles(&mut self, prefix: &[usize]) {
        self.prefix_len = prefix.len();
        let completed = self.key.completed_in(prefix);
        self.facts = (0..self.key.op_count())
            .map(|op| Facts {
                role: self.key.op_role(op, completed[op]),
                invoke_at: usize::MAX,
                return_at: usize::MAX,
            })
            .collect();
        for &e in prefix {
            let facts = &mut self.facts[self.key.event_op(e)];
            if self.key.event_is_invoke(e) {
                facts.invoke_at = e;
            } else if facts.role.required {
                facts.return_at = e;
            }
        }
        for (op, facts) in self.facts.iter().enumerate() {
            match facts.role.observes {
                Observation::Nothing => {}
                Observation::Equal(value) => self.observers_equal.entry(value).or_default().push(op),
                Observation::NotEqual(value) => self.observers_not_equal.push((op, value)),
            }
        }
    }

    /// `seeds`, and every operation of `kept` that depends on a value one of
    /// them may have written, transitively: the least that can be dropped
    /// with the seeds without inventing a violation. Indexed by operation.
    fn dependents(&mut self, seeds: &[usize], kept: &[usize]) -> Vec<bool> {
        let mut left = vec![false; self.key.op_count()];
        for &op in kept {
            left[op] = true;
        }
        for &op in seeds {
            left[op] = false;
        }
        let mut gone = seeds.to_vec();
        let mut work = 0;
        loop {
            // Only writes that stay in the stretch may show that a dropped
            // write was overwritten, so the cuts change as writes go.
            let cut = self.cuts(&left);
            let gone_before = gone.len();
            for index in 0..gone_before {
                let writer = gone[index];
                let Some(value) = self.facts[writer].role.writes else {
                    continue;
                };
                let equal = self.observers_equal.get(&value).into_iter().flatten();
                let not_equal = self.observers_not_equal.iter().filter(|&&(_, e)| e != value);
                for op in equal.copied().chain(not_equal.map(|&(op, _)| op)) {
                    work += 1;
                    if left[op] && self.may_have_seen(op, writer, &cut) {
                        left[op] = false;
                        gone.push(op);
                    }
                }
            }
            if gone.len() == gone_before {
                break;
            }
        }
        self.steps_left = self.steps_left.saturating_sub(work);
        let mut dropped = vec![false; self.key.op_count()];
        for op in gone {
            dropped[op] = true;
        }
        dropped
    }

    /// Whether every read of a value (or cas expecting it) in `candidate`
    /// that had a possible writer of it in `kept` still has one. Without
    /// this, a stale read would be shown as a read of a value nobody
    /// wrote: still a proof, but of the wrong story.
    fn keeps_provenance(&self, kept: &[usize], candidate: &[usize]) -> bool {
        let first_writes = |ops: &[usize]| {
            let mut first: HashMap<ValueId, usize> = HashMap::new();
            for &op in ops {
                if let Some(value) = self.facts[op].role.writes {
                    let at = first.entry(value).or_insert(usize::MAX);
                    *at = (*at).min(self.facts[op].invoke_at);
                }
            }
            first
        };
        let (before, after) = (first_writes(kept), first_writes(candidate));
        candidate.iter().all(|&op| {
            let Observation::Equal(value) = self.facts[op].role.observes else {
                return true;
            };
            let return_at = self.facts[op].return_at;
            let wrote_before =
                |first: &HashMap<ValueId, usize>| first.get(&value).is_some_and(|&at| at < return_at);
            value == ValueId::ABSENT || !wrote_before(&before) || wrote_before(&after)
        })
    }

    /// Whether `op` may have seen `writer`'s value as the latest.
    fn may_have_seen(&self, op: usize, writer: usize, cut: &[Option<usize>]) -> bool {
        let writer = self.facts[writer];
        writer.invoke_at < self.facts[op].return_at && cut[op].is_none_or(|c| writer.return_at > c)
    }

    /// For each operation left, the latest invoke of a write (or ok cas) left
    /// that returned before the operation was invoked: a write that returned
    /// before that invoke was surely overwritten before the operation.
    fn cuts(&self, left: &[bool]) -> Vec<Option<usize>> {
        let mut cut = vec![None; self.key.op_count()];
        let mut latest = None;
        for e in 0..self.prefix_len {
            let op = self.key.event_op(e);
            let facts = &self.facts[op];
            if !left[op] {
                continue;
            }
            if self.key.event_is_invoke(e) {
                cut[op] = latest;
            } else if facts.return_at == e && facts.role.writes.is_some() {
                latest = latest.max(Some(facts.invoke_at));
            }
        }
        cut
    }

    /// The events of `events` that belong to one of `ops`.
    fn events_of(&self, events: &[usize], ops: &[usize]) -> Vec<usize> {
        let mut member = vec![false; self.key.op_count()];
        for &op in ops {
            member[op] = true;
        }
        events.iter().copied().filter(|&e| member[self.key.event_op(e)]).collect()
    }
}

/// `ops` without repeats, in order of first occurrence.
fn first_occurrences(ops: &[usize], op_count: usize) -> Vec<usize> {
    let mut seen = vec![false; op_count];
    ops.iter().copied().filter(|&op| !std::mem::replace(&mut seen[op], true)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::history::History;
    use crate::checker::testing::parse;

    fn shrinker(history: &History) -> Shrinker<'_> {
        let key = &history.keys()[0];
        let mut shrinker = Shrinker {
            key,
            search_budget: Budget { steps_max: 1_000_000, cache_words_max: 1 << 20 },
            steps_left: 1_000_000,
            prefix_len: 0,
            facts: Vec::new(),
            observers_equal: HashMap::new(),
            observers_not_equal: Vec::new(),
        };
        let all: Vec<usize> = (0..key.event_count()).collect();
        shrinker.learn_roles(&all);
        shrinker
    }

    /// The operations dropped along with `seeds` when all are kept.
    fn dependents(history: &History, seeds: &[usize]) -> Vec<usize> {
        let mut shrinker = shrinker(history);
        let all: Vec<usize> = (0..shrinker.key.op_count()).collect();
        let dropped = shrinker.dependents(seeds, &all);
        all.into_iter().filter(|&op| dropped[op]).collect()
    }

    #[test]
    fn shortest_prefix_ends_at_the_first_impossible_completion() {
        let history = parse(
            "0 invoke write x 1
             0 ok     write x 1
             1 invoke read  x _
             1 ok     read  x 2
             0 invoke write x 3
             0 ok     write x 3",
        );
        assert_eq!(shrinker(&history).shortest_prefix(), [0, 1, 2, 3]);
    }

    #[test]
    fn a_write_goes_with_the_reads_that_may_have_seen_it() {
        let history = parse(
            "0 invoke write x 1
             0 ok     write x 1
             1 invoke read  x _
             1 ok     read  x 1
             2 invoke read  x _
             2 ok     read  x _",
        );
        assert_eq!(dependents(&history, &[0]), [0, 1]);
        // Reads can go alone.
        assert_eq!(dependents(&history, &[1]), [1]);
    }

    #[test]
    fn a_write_surely_overwritten_goes_alone() {
        let history = parse(
            "0 invoke write x 1
             0 ok     write x 1
             0 invoke write x 2
             0 ok     write x 2
             1 invoke read  x _
             1 ok     read  x 1",
        );
        // The read cannot have seen the first write as the latest ...
        assert_eq!(dependents(&history, &[0]), [0]);
        // ... unless the write in between goes too.
        assert_eq!(dependents(&history, &[0, 1]), [0, 1, 2]);
    }

    #[test]
    fn a_failed_cas_depends_on_writes_of_other_values() {
        let history = parse(
            "0 invoke write x 1
             1 invoke cas   x 2,3
             0 ok     write x 1
             1 fail   cas   x 2,3
             0 invoke write x 2
             0 ok     write x 2",
        );
        assert_eq!(dependents(&history, &[0]), [0, 1]);
        assert_eq!(dependents(&history, &[2]), [2]);
    }

    #[test]
    fn dependents_are_followed_through_cas() {
        let history = parse(
            "0 invoke write x 1
             0 ok     write x 1
             0 invoke cas   x 1,2
             0 ok     cas   x 1,2
             1 invoke read  x _
             1 ok     read  x 2",
        );
        assert_eq!(dependents(&history, &[0]), [0, 1, 2]);
    }

    #[test]
    fn a_stale_read_keeps_the_write_it_saw() {
        let history = parse(
            "0 invoke write x 1
             0 ok     write x 1
             0 invoke write x 2
             0 ok     write x 2
             1 invoke read  x _
             1 ok     read  x 1",
        );
        let shrinker = shrinker(&history);
        // Dropping the first write alone is sound, but would leave a read of
        // a value nobody wrote.
        assert!(!shrinker.keeps_provenance(&[0, 1, 2], &[1, 2]));
        assert!(shrinker.keeps_provenance(&[0, 1, 2], &[0, 1, 2]));
        let key = &history.keys()[0];
        let stretch = shrink(key, shrinker.search_budget, 1_000_000);
        assert_eq!(stretch, [0, 1, 2, 3, 4, 5]);
    }

    /// Random single-key histories in the compact notation, events sorted
    /// by time.
    fn random_history(seed: &mut u64) -> String {
        let mut below = |n: u64| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (*seed >> 33) % n
        };
        let mut events = Vec::new();
        for process in 0..2 + below(6) {
            let invoke_at = below(12);
            let complete_at = invoke_at + 1 + below(6);
            let f = ["read", "write", "cas", "delete"][below(4) as usize];
            let outcome = ["ok", "ok", "ok", "fail", "info"][below(5) as usize];
            let value = |v: u64| ["_", "1", "2"][v as usize];
            let (invoked, completed) = match f {
                "read" => ("_".to_owned(), value(below(3)).to_owned()),
                "write" => (value(1 + below(2)).to_owned(), value(0).to_owned()),
                "cas" => (format!("{},{}", value(below(3)), value(1 + below(2))), String::new()),
                _ => ("_".to_owned(), "_".to_owned()),
            };
            let completed = if completed.is_empty() || f == "write" { invoked.clone() } else { completed };
            events.push((invoke_at, 0, format!("{process} invoke {f} x {invoked}")));
            events.push((complete_at, 1, format!("{process} {outcome} {f} x {completed}")));
        }
        events.sort();
        events.into_iter().map(|(_, _, line)| line + "\n").collect()
    }

    /// The claim the shrinking rests on: dropping operations with their
    /// dependents never makes a linearizable history non-linearizable.
    #[test]
    fn dropping_with_dependents_keeps_linearizable_histories_linearizable() {
        let mut seed = 11;
        let mut checked = 0;
        for _ in 0..3000 {
            let text = random_history(&mut seed);
            let history = parse(&text);
            let Some(key) = history.keys().first() else {
                continue;
            };
            let mut shrinker = shrinker(&history);
            let all_events: Vec<usize> = (0..key.event_count()).collect();
            if !matches!(outcome(&shrinker, &all_events), Outcome::Linearizable) {
                continue;
            }
            let all: Vec<usize> = (0..key.op_count()).collect();
            let seeds = all.iter().map(|&op| vec![op]).chain(all.windows(2).map(<[usize]>::to_vec));
            for seed_ops in seeds {
                let dropped = shrinker.dependents(&seed_ops, &all);
                let kept: Vec<usize> = all.iter().copied().filter(|&op| !dropped[op]).collect();
                let events = shrinker.events_of(&all_events, &kept);
                assert_eq!(
                    outcome(&shrinker, &events),
                    Outcome::Linearizable,
                    "dropping {seed_ops:?} (and {kept:?} left) from\n{text}"
                );
                checked += 1;
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    fn outcome(shrinker: &Shrinker<'_>, events: &[usize]) -> Outcome {
        search(&shrinker.key.problem(events), &shrinker.search_budget).outcome
    }
}
