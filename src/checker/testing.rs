//! Compact histories for unit tests: one event per line as
//! `process type f key value`, where the value is `_` for null, `old,new`
//! for a cas, or a string.

use serde_json::{Value, json};

use super::history::{History, parse_history};

pub(crate) fn parse(compact: &str) -> History {
    let text: String = compact
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 5, "bad test line {l:?}");
            let process: i64 = w[0].parse().expect("a process number");
            let event =
                json!({"process": process, "type": w[1], "f": w[2], "key": w[3], "value": value(w[4])});
            format!("{event}\n")
        })
        .collect();
    parse_history(text.as_bytes()).expect("test history parses")
}

fn value(token: &str) -> Value {
    let one = |t: &str| match t {
        "_" => Value::Null,
        t => Value::String(t.to_owned()),
    };
    match token.split_once(',') {
        Some((old, new)) => json!([one(old), one(new)]),
        None => one(token),
    }
}
