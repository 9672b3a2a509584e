//! The checker against small histories with known verdicts, and against the
//! Jepsen etcd corpus (102 histories with verdicts from Porcupine).

use std::fs;
use std::path::{Path, PathBuf};

use paxosd::checker::{
    CheckOptions, KeyViolation, Report, Verdict, check, check_file, check_with, parse_history,
};

/// Turns a compact history, one event per line as
/// `process type f key value`, into JSON Lines. The value is `_` for null,
/// `old,new` for a cas, or a string.
fn jsonl(compact: &str) -> String {
    compact
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 5, "bad test line {l:?}");
            let value = value_json(w[4]);
            let event = serde_json::json!({
                "process": w[0].parse::<i64>().unwrap(),
                "type": w[1], "f": w[2], "key": w[3], "value": value,
            });
            format!("{event}\n")
        })
        .collect()
}

fn value_json(token: &str) -> serde_json::Value {
    let one = |t: &str| match t {
        "_" => serde_json::Value::Null,
        t => serde_json::Value::String(t.to_owned()),
    };
    match token.split_once(',') {
        Some((old, new)) => serde_json::json!([one(old), one(new)]),
        None => one(token),
    }
}

fn verdict(compact: &str) -> Verdict {
    check(&parse_history(jsonl(compact).as_bytes()).expect("test history parses"))
}

fn violations(compact: &str) -> Vec<KeyViolation> {
    match verdict(compact) {
        Verdict::Violation(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

/// Line numbers of the reported stretch for each violating key.
fn stretch_lines(compact: &str) -> Vec<(String, Vec<usize>)> {
    violations(compact).into_iter().map(|v| (v.key, v.stretch.iter().map(|l| l.line).collect())).collect()
}

fn stretch_is_violation(violation: &KeyViolation) -> bool {
    let text: String = violation.stretch.iter().map(|l| format!("{}\n", l.text)).collect();
    let history = parse_history(text.as_bytes()).expect("a stretch parses");
    matches!(check(&history), Verdict::Violation(_))
}

#[test]
fn sequential_write_then_read_is_linearizable() {
    let history = "
        0 invoke write x 1
        0 ok     write x 1
        1 invoke read  x _
        1 ok     read  x 1";
    assert_eq!(verdict(history), Verdict::Linearizable);
}

#[test]
fn stale_read_after_completed_write_is_a_violation() {
    let history = "
        0 invoke write x 1
        0 ok     write x 1
        0 invoke write x 2
        0 ok     write x 2
        1 invoke read  x _
        1 ok     read  x 1";
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![1, 2, 3, 4, 5, 6])]);
    let report = Report { operations: 3, keys: 1, verdict: verdict(history) };
    let expected = [
        r#"NOT linearizable: key "x""#,
        r#"line 1: {"f":"write","key":"x","process":0,"type":"invoke","value":"1"}"#,
        r#"line 2: {"f":"write","key":"x","process":0,"type":"ok","value":"1"}"#,
        r#"line 3: {"f":"write","key":"x","process":0,"type":"invoke","value":"2"}"#,
        r#"line 4: {"f":"write","key":"x","process":0,"type":"ok","value":"2"}"#,
        r#"line 5: {"f":"read","key":"x","process":1,"type":"invoke","value":null}"#,
        r#"line 6: {"f":"read","key":"x","process":1,"type":"ok","value":"1"}"#,
    ];
    assert_eq!(report.to_string(), expected.join("\n"));
}

#[test]
fn read_concurrent_with_write_may_see_either_value() {
    for seen in ["1", "2"] {
        let history = format!(
            "0 invoke write x 1
             0 ok     write x 1
             0 invoke write x 2
             1 invoke read  x _
             1 ok     read  x {seen}
             0 ok     write x 2"
        );
        assert_eq!(verdict(&history), Verdict::Linearizable, "read saw {seen}");
    }
}

#[test]
fn read_of_a_value_nobody_wrote_is_a_violation() {
    let history = "
        0 invoke write x 1
        1 invoke read  x _
        1 ok     read  x 7
        0 ok     write x 1";
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![2, 3])]);
}

#[test]
fn cas_ok_needs_the_expected_value() {
    let matched = "
        0 invoke write x 1
        0 ok     write x 1
        1 invoke cas   x 1,2
        1 ok     cas   x 1,2
        2 invoke read  x _
        2 ok     read  x 2";
    assert_eq!(verdict(matched), Verdict::Linearizable);
    let unmatched = "
        0 invoke write x 1
        0 ok     write x 1
        1 invoke cas   x 3,2
        1 ok     cas   x 3,2";
    // Nobody wrote 3, so the cas alone is the violation.
    assert_eq!(stretch_lines(unmatched), [("x".to_owned(), vec![3, 4])]);
}

#[test]
fn cas_may_expect_absent() {
    let history = "
        1 invoke cas   x _,5
        1 ok     cas   x _,5
        2 invoke read  x _
        2 ok     read  x 5";
    assert_eq!(verdict(history), Verdict::Linearizable);
}

#[test]
fn failed_cas_that_must_have_seen_its_expected_value_is_a_violation() {
    let history = "
        0 invoke write x 1
        0 ok     write x 1
        1 invoke cas   x 1,2
        1 fail   cas   x 1,2";
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![1, 2, 3, 4])]);
}

#[test]
fn failed_cas_is_fine_if_a_concurrent_write_could_have_changed_the_value() {
    let history = "
        0 invoke write x 1
        0 ok     write x 1
        1 invoke cas   x 1,2
        2 invoke write x 3
        1 fail   cas   x 1,2
        2 ok     write x 3";
    assert_eq!(verdict(history), Verdict::Linearizable);
}

#[test]
fn failed_cas_does_not_change_the_value() {
    let history = "
        0 invoke cas   x 1,2
        0 fail   cas   x 1,2
        1 invoke read  x _
        1 ok     read  x 2";
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![3, 4])]);
}

#[test]
fn delete_then_read_sees_absent() {
    let history = "
        0 invoke write  x 1
        0 ok     write  x 1
        0 invoke delete x _
        0 ok     delete x _
        1 invoke read   x _
        1 ok     read   x _";
    assert_eq!(verdict(history), Verdict::Linearizable);
    let stale = history.replace("ok     read   x _", "ok     read   x 1");
    assert_eq!(stretch_lines(&stale), [("x".to_owned(), vec![1, 2, 3, 4, 5, 6])]);
}

#[test]
fn info_write_may_appear_later() {
    let history = "
        0 invoke write x 1
        0 info   write x 1
        1 invoke read  x _
        1 ok     read  x _
        1 invoke read  x _
        1 ok     read  x 1";
    assert_eq!(verdict(history), Verdict::Linearizable);
}

#[test]
fn info_write_may_never_appear() {
    let history = "
        0 invoke write x 1
        0 info   write x 1
        1 invoke read  x _
        1 ok     read  x _";
    assert_eq!(verdict(history), Verdict::Linearizable);
}

#[test]
fn info_write_cannot_take_effect_before_its_invoke() {
    let history = "
        1 invoke read  x _
        1 ok     read  x 1
        0 invoke write x 1
        0 info   write x 1";
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![1, 2])]);
}

#[test]
fn info_write_once_seen_cannot_be_unseen() {
    // Taking effect is a single point in time: after a read saw the info
    // write, a later read cannot see the older value again.
    let history = "
        0 invoke write x 1
        0 ok     write x 1
        0 invoke write x 2
        0 info   write x 2
        1 invoke read  x _
        1 ok     read  x 2
        1 invoke read  x _
        1 ok     read  x 1";
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![1, 2, 3, 4, 5, 6, 7, 8])]);
}

#[test]
fn invoke_that_never_completes_is_of_unknown_outcome() {
    let history = "
        0 invoke write x 1
        1 invoke read  x _
        1 ok     read  x 1
        1 invoke read  x _
        1 ok     read  x _";
    // The write never completes; the second read cannot undo it.
    assert_eq!(stretch_lines(history), [("x".to_owned(), vec![1, 2, 3, 4, 5])]);
    let history = "
        0 invoke write x 1
        1 invoke read  x _
        1 ok     read  x 1";
    assert_eq!(verdict(history), Verdict::Linearizable);
}

#[test]
fn failed_write_did_not_happen() {
    let history = "
        0 invoke write x 1
        0 fail   write x 1
        1 invoke read  x _
        1 ok     read  x _";
    assert_eq!(verdict(history), Verdict::Linearizable);
    let seen = history.replace("ok     read  x _", "ok     read  x 1");
    assert_eq!(stretch_lines(&seen), [("x".to_owned(), vec![3, 4])]);
}

#[test]
fn keys_are_checked_independently() {
    let history = "
        0 invoke write x 1
        0 ok     write x 1
        1 invoke write y 1
        1 ok     write y 1
        1 invoke read  y _
        1 ok     read  y _
        2 invoke read  x _
        2 ok     read  x 1";
    assert_eq!(stretch_lines(history), [("y".to_owned(), vec![3, 4, 5, 6])]);
}

#[test]
fn every_bad_key_gets_its_own_block() {
    let history = "
        0 invoke read  a _
        0 ok     read  a 1
        0 invoke read  b _
        0 ok     read  b 2";
    let report = Report { operations: 2, keys: 2, verdict: verdict(history) };
    let expected = [
        r#"NOT linearizable: key "a""#,
        r#"line 2: {"f":"read","key":"a","process":0,"type":"ok","value":"1"}"#,
        r#"NOT linearizable: key "b""#,
        r#"line 4: {"f":"read","key":"b","process":0,"type":"ok","value":"2"}"#,
    ];
    let printed = report.to_string();
    assert!(printed.starts_with(expected[0]), "{printed}");
    for line in expected {
        assert!(printed.contains(line), "{line} missing from\n{printed}");
    }
}

#[test]
fn linearizable_report_counts_operations_and_keys() {
    let text = jsonl(
        "0 invoke write x 1
         0 ok     write x 1
         1 invoke read  y _
         1 fail   read  y _
         1 invoke read  y _
         1 ok     read  y _",
    );
    let history = parse_history(text.as_bytes()).unwrap();
    let report =
        Report { operations: history.operation_count(), keys: history.key_count(), verdict: check(&history) };
    assert_eq!(report.to_string(), "linearizable: 2 operations over 2 keys");
}

#[test]
fn exhausted_budget_is_reported_as_unknown() {
    let text = jsonl(
        "0 invoke write x 1
         1 invoke write x 2
         0 ok     write x 1
         1 ok     write x 2
         2 invoke read  x _
         2 ok     read  x 2",
    );
    let history = parse_history(text.as_bytes()).unwrap();
    let options = CheckOptions { search_steps_max: 2, ..CheckOptions::default() };
    assert_eq!(check_with(&history, &options), Verdict::Unknown { key: "x".into() });
    assert_eq!(check(&history), Verdict::Linearizable);
}

#[test]
fn time_and_unknown_fields_are_ignored() {
    let text = r#"{"process":0,"type":"invoke","f":"write","key":"x","value":"1","time":17,"node":"n1"}
{"process":0,"type":"ok","f":"write","key":"x","value":"1","time":19}
"#;
    let history = parse_history(text.as_bytes()).unwrap();
    assert_eq!(check(&history), Verdict::Linearizable);
}

/// Parses `lines` and returns the error's text.
fn parse_error(lines: &[&str]) -> String {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    match parse_history(text.as_bytes()) {
        Ok(_) => panic!("expected a parse error for {lines:?}"),
        Err(e) => e.to_string(),
    }
}

const INVOKE_WRITE: &str = r#"{"process":0,"type":"invoke","f":"write","key":"x","value":"1"}"#;
const OK_WRITE: &str = r#"{"process":0,"type":"ok","f":"write","key":"x","value":"1"}"#;

#[test]
fn parse_errors_name_the_line_and_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&[INVOKE_WRITE, "{\"process\":"], "line 2: bad JSON at column 11: EOF while parsing a value"),
        (&[INVOKE_WRITE, OK_WRITE, "[1, 2]"], "line 3: not a JSON object"),
        (
            &[r#"{"process":0,"type":"invoke","f":"write","value":"1"}"#],
            "line 1: field `key` is missing or null",
        ),
        (
            &[r#"{"process":"a","type":"invoke","f":"write","key":"x","value":"1"}"#],
            "line 1: field `process` must be an integer",
        ),
        (
            &[INVOKE_WRITE, r#"{"process":0,"type":"done","f":"write","key":"x"}"#],
            "line 2: unknown type \"done\"",
        ),
        (
            &[r#"{"process":0,"type":"invoke","f":"incr","key":"x","value":"1"}"#],
            "line 1: unknown f \"incr\"",
        ),
        (
            &[INVOKE_WRITE, OK_WRITE, OK_WRITE],
            "line 3: completion for process 0, which has no pending invoke",
        ),
        (
            &["", INVOKE_WRITE, INVOKE_WRITE],
            "line 3: process 0 invokes while its operation from line 2 is still pending",
        ),
        (
            &[r#"{"process":0,"type":"invoke","f":"cas","key":"x","value":["1"]}"#],
            "line 1: the value of a cas must be [expected, new]",
        ),
        (
            &[r#"{"process":0,"type":"invoke","f":"write","key":"x","value":3}"#],
            "line 1: the value of a write must be a string",
        ),
        (
            &[INVOKE_WRITE, r#"{"process":0,"type":"ok","f":"read","key":"x","value":"1"}"#],
            "line 2: completion for process 0 has another `f` than its invoke on line 1",
        ),
    ];
    for (lines, expected) in cases {
        let error = parse_error(lines);
        assert!(error.starts_with(expected), "expected {expected:?}, got {error:?}");
    }
}

/// Where the Jepsen etcd corpus lives: `$PAXOSD_CHECKER_DATA` (the
/// checker-data directory, or the corpus directory itself) or
/// `../shared/checker-data/porcupine-etcd` next to the crate.
fn corpus_dir() -> PathBuf {
    let dir = match std::env::var_os("PAXOSD_CHECKER_DATA") {
        Some(root) => {
            let root = PathBuf::from(root);
            if root.join("expected.tsv").is_file() { root } else { root.join("porcupine-etcd") }
        }
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/checker-data/porcupine-etcd"),
    };
    assert!(
        dir.join("expected.tsv").is_file(),
        "the Jepsen etcd corpus is missing: no expected.tsv in {} \
         (set PAXOSD_CHECKER_DATA to the checker-data directory)",
        dir.display()
    );
    dir
}

/// (file, expected to be linearizable) for every history in the corpus.
fn corpus() -> Vec<(PathBuf, bool)> {
    let dir = corpus_dir();
    let listing = fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv is readable");
    listing
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (file, verdict) = l.split_once('\t').expect("file<TAB>verdict");
            let linearizable = match verdict.trim() {
                "linearizable" => true,
                "violation" => false,
                other => panic!("unknown verdict {other:?} in expected.tsv"),
            };
            (dir.join(file), linearizable)
        })
        .collect()
}

#[test]
fn corpus_verdicts_match_porcupine() {
    let corpus = corpus();
    assert_eq!(corpus.len(), 102, "expected.tsv lists 102 histories");
    let mut disagreements = Vec::new();
    for (path, linearizable) in &corpus {
        let report = check_file(path).unwrap_or_else(|e| panic!("{e}"));
        let agrees = match report.verdict {
            Verdict::Linearizable => *linearizable,
            Verdict::Violation(_) => !linearizable,
            Verdict::Unknown { .. } => false,
        };
        if !agrees {
            disagreements.push(format!(
                "{}: expected {}, got {:?}",
                path.display(),
                if *linearizable { "linearizable" } else { "violation" },
                report.verdict
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} disagree:\n{}",
        disagreements.len(),
        corpus.len(),
        disagreements.join("\n")
    );
}

#[test]
fn corpus_violation_stretches_are_violations_by_themselves() {
    let mut checked = 0;
    for (path, _) in corpus().iter().filter(|(_, linearizable)| !linearizable) {
        let Verdict::Violation(violations) = check_file(path).unwrap().verdict else {
            panic!("{} should be a violation", path.display());
        };
        for violation in &violations {
            assert!(
                stretch_is_violation(violation),
                "{}: the reported stretch is linearizable:\n{violation}",
                path.display()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 79);
}

#[test]
fn corrupting_one_read_in_a_linearizable_corpus_history_is_caught() {
    let (path, _) = corpus()
        .into_iter()
        .find(|(_, linearizable)| *linearizable)
        .expect("a linearizable history in the corpus");
    let text = fs::read_to_string(&path).unwrap();
    let original = parse_history(text.as_bytes()).unwrap();
    assert_eq!(check(&original), Verdict::Linearizable);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let (index, read) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(r#""type":"ok","f":"read""#))
        .nth(5)
        .expect("a sixth ok read");
    let mut event: serde_json::Value = serde_json::from_str(read).unwrap();
    event["value"] = "never-written".into();
    lines[index] = event.to_string();
    let corrupted = parse_history(lines.join("\n").as_bytes()).unwrap();
    let Verdict::Violation(violations) = check(&corrupted) else {
        panic!("a read of a value never written went unnoticed");
    };
    assert_eq!(violations.len(), 1);
    assert!(stretch_is_violation(&violations[0]));
    let lines_shown: Vec<usize> = violations[0].stretch.iter().map(|l| l.line).collect();
    assert!(lines_shown.contains(&(index + 1)), "{}", violations[0]);
}

/// A tiny random operation for the brute-force comparison.
#[derive(Debug, Clone, Copy)]
struct RandomOp {
    f: &'static str,
    outcome: &'static str,
    /// Argument (write), expected and new (cas), or what was read.
    a: Option<u8>,
    b: Option<u8>,
    invoke_at: usize,
    complete_at: usize,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn value(&mut self) -> Option<u8> {
        [None, Some(1), Some(2)][self.below(3) as usize]
    }
}

fn random_ops(rng: &mut Rng) -> Vec<RandomOp> {
    let count = 2 + rng.below(5) as usize;
    (0..count)
        .map(|_| {
            let invoke_at = rng.below(12) as usize;
            let f = ["read", "write", "cas", "delete"][rng.below(4) as usize];
            let outcome = ["ok", "ok", "ok", "fail", "info"][rng.below(5) as usize];
            RandomOp {
                f,
                outcome,
                a: if f == "write" { Some(1 + rng.below(2) as u8) } else { rng.value() },
                b: Some(1 + rng.below(2) as u8),
                invoke_at,
                complete_at: invoke_at + 1 + rng.below(6) as usize,
            }
        })
        .collect()
}

/// The history's lines, and each op's (invoke line, completion line)
/// positions in it.
fn random_history(ops: &[RandomOp]) -> (String, Vec<(usize, usize)>) {
    let mut events: Vec<(usize, bool, usize)> = ops
        .iter()
        .enumerate()
        .flat_map(|(i, op)| [(op.invoke_at, false, i), (op.complete_at, true, i)])
        .collect();
    events.sort();
    let mut positions = vec![(0, 0); ops.len()];
    let mut text = String::new();
    for (position, &(_, is_completion, i)) in events.iter().enumerate() {
        let op = &ops[i];
        let s = |v: Option<u8>| v.map_or(serde_json::Value::Null, |v| v.to_string().into());
        let value = match op.f {
            "read" if is_completion => s(op.a),
            "read" | "delete" => serde_json::Value::Null,
            "write" => s(op.a),
            _ => serde_json::json!([s(op.a), s(op.b)]),
        };
        let kind = if is_completion { op.outcome } else { "invoke" };
        let event = serde_json::json!({"process": i, "type": kind, "f": op.f, "key": "x", "value": value});
        text.push_str(&format!("{event}\n"));
        if is_completion {
            positions[i].1 = position;
        } else {
            positions[i].0 = position;
        }
    }
    (text, positions)
}

/// Linearizability by trying every order, straight from the definitions.
fn brute_force(ops: &[RandomOp], positions: &[(usize, usize)]) -> bool {
    // (required, return position or MAX) of the ops that take part.
    let part: Vec<(usize, bool, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match (op.f, op.outcome) {
            ("read", "ok") | ("cas", "ok" | "fail") | ("write" | "delete", "ok") => {
                Some((i, true, positions[i].1))
            }
            ("cas" | "write" | "delete", "info") => Some((i, false, usize::MAX)),
            _ => None,
        })
        .collect();
    let mut done = vec![false; part.len()];
    explore(ops, positions, &part, &mut done, None)
}

fn explore(
    ops: &[RandomOp],
    positions: &[(usize, usize)],
    part: &[(usize, bool, usize)],
    done: &mut Vec<bool>,
    state: Option<u8>,
) -> bool {
    if part.iter().zip(done.iter()).all(|(&(_, required, _), &d)| d || !required) {
        return true;
    }
    for next in 0..part.len() {
        let (i, _, _) = part[next];
        // Everything that returned before `next` was invoked comes first.
        let blocked = part.iter().zip(done.iter()).any(|(&(_, _, ret), &d)| !d && ret < positions[i].0);
        if done[next] || blocked {
            continue;
        }
        let op = ops[i];
        let after = match (op.f, op.outcome) {
            ("read", _) => (state == op.a).then_some(state),
            ("write", _) => Some(op.a),
            ("delete", _) => Some(None),
            ("cas", "ok") => (state == op.a).then_some(op.b),
            ("cas", "fail") => (state != op.a).then_some(state),
            _ => Some(if state == op.a { op.b } else { state }),
        };
        if let Some(after) = after {
            done[next] = true;
            let found = explore(ops, positions, part, done, after);
            done[next] = false;
            if found {
                return true;
            }
        }
    }
    false
}

#[test]
fn random_small_histories_agree_with_brute_force() {
    let mut rng = Rng(7);
    let (mut linearizable, mut violations) = (0, 0);
    for round in 0..3000 {
        let ops = random_ops(&mut rng);
        let (text, positions) = random_history(&ops);
        let expected = brute_force(&ops, &positions);
        let verdict = check(&parse_history(text.as_bytes()).unwrap());
        match &verdict {
            Verdict::Linearizable => linearizable += 1,
            Verdict::Violation(v) => {
                violations += 1;
                assert!(stretch_is_violation(&v[0]), "round {round}:\n{text}\n{}", v[0]);
            }
            Verdict::Unknown { .. } => panic!("round {round}: unknown"),
        }
        assert_eq!(verdict == Verdict::Linearizable, expected, "round {round}:\n{text}");
    }
    // Both verdicts are exercised.
    assert!(linearizable > 300 && violations > 300, "{linearizable} / {violations}");
}
