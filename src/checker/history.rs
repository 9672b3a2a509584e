//! Reading a Jepsen-style history (JSON Lines) and splitting it by key.
//!
//! Every key is an independent register, so a history is linearizable
//! exactly when each key's sub-history is (P-compositionality). Parsing
//! therefore files every operation under its key at once; the search never
//! sees more than one key.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};
use std::ops::Range;

use serde::Deserialize;
use serde_json::Value;

use super::search::{Problem, Step, ValueId};

/// A parsed history: the original text (to quote lines back) and one
/// sub-history per key, in order of first appearance.
#[derive(Debug, Clone)]
pub struct History {
    source: String,
    keys: Vec<KeyHistory>,
}

/// One line of the original history, quoted back in a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    /// 1-based line number in the input.
    pub line: usize,
    /// The line's text as it was read, without the line break.
    pub text: String,
}

/// Why a history could not be read; `line` is 1-based.
#[derive(Debug)]
pub struct HistoryError {
    pub line: usize,
    pub kind: HistoryErrorKind,
}

#[derive(Debug)]
pub enum HistoryErrorKind {
    Read(io::Error),
    Json(serde_json::Error),
    NotAnObject,
    MissingField(&'static str),
    WrongType { field: &'static str, expected: &'static str },
    UnknownType(String),
    UnknownFunction(String),
    BadValue { function: Function, expected: &'static str },
    AlreadyPending { process: i64, invoke_line: usize },
    NothingPending { process: i64 },
    CompletionMismatch { process: i64, field: &'static str, invoke_line: usize },
}

/// The operations a register offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Read,
    Write,
    Cas,
    Delete,
}

/// What an operation would do to the register, with values interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Read { seen: ValueId },
    Write { value: ValueId },
    Cas { expected: ValueId, new: ValueId },
}

/// What an operation needs to have seen in the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    Nothing,
    /// A read of this value, or a cas expecting it.
    Equal(ValueId),
    /// A cas that found something other than this value.
    NotEqual(ValueId),
}

/// An operation's dependence on and effect on the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) observes: Observation,
    pub(crate) writes: Option<ValueId>,
    /// Whether every linearization must include it (its outcome is known).
    pub(crate) required: bool,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// A cas that ran and found another value than the expected one.
    Failed,
    /// `info`, or no completion at all: it may or may not have happened.
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Operation {
    effect: Effect,
    outcome: Outcome,
}

/// One line of a key's sub-history.
#[derive(Debug, Clone)]
struct Event {
    op: u32,
    is_invoke: bool,
    line: usize,
    text: Range<usize>,
}

/// The sub-history of one key.
#[derive(Debug, Clone)]
pub(crate) struct KeyHistory {
    pub(crate) key: String,
    ops: Vec<Operation>,
    events: Vec<Event>,
}

impl History {
    /// Operations that take part in the check (failed reads, writes and
    /// deletes, and reads with unknown outcome, are not counted).
    pub fn operation_count(&self) -> usize {
        self.keys.iter().map(|k| k.ops.len()).sum()
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn keys(&self) -> &[KeyHistory] {
        &self.keys
    }

    pub(crate) fn quote(&self, key: &KeyHistory, events: &[usize]) -> Vec<HistoryLine> {
        events
            .iter()
            .map(|&e| {
                let event = &key.events[e];
                HistoryLine { line: event.line, text: self.source[event.text.clone()].to_owned() }
            })
            .collect()
    }
}

impl KeyHistory {
    pub(crate) fn event_count(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn op_count(&self) -> usize {
        self.ops.len()
    }

    pub(crate) fn event_op(&self, event: usize) -> usize {
        self.events[event].op as usize
    }

    pub(crate) fn event_is_invoke(&self, event: usize) -> bool {
        self.events[event].is_invoke
    }

    /// What an operation needs from the register and what it puts there,
    /// in a sub-history where its completion is present or not.
    pub(crate) fn op_role(&self, op: usize, completed: bool) -> Role {
        let (observes, writes) = match self.ops[op].step(completed) {
            None => (Observation::Nothing, None),
            Some(Step::Read { seen }) => (Observation::Equal(seen), None),
            Some(Step::Write { value }) => (Observation::Nothing, Some(value)),
            Some(Step::Cas { expected, new } | Step::CasUnknown { expected, new }) => {
                (Observation::Equal(expected), Some(new))
            }
            Some(Step::CasFailed { expected }) => (Observation::NotEqual(expected), None),
        };
        Role { observes, writes, required: completed && self.ops[op].outcome != Outcome::Unknown }
    }

    /// For each operation, whether its completion is among `events`.
    pub(crate) fn completed_in(&self, events: &[usize]) -> Vec<bool> {
        let mut completed = vec![false; self.ops.len()];
        for &e in events {
            let event = &self.events[e];
            if !event.is_invoke {
                completed[event.op as usize] = true;
            }
        }
        completed
    }

    /// The search problem for the sub-history made of `events` (indices in
    /// increasing order, closed under "an op's completion needs its
    /// invoke"). An operation whose completion is left out becomes one of
    /// unknown outcome, which is what it looks like to an observer who
    /// stopped watching there.
    pub(crate) fn problem(&self, events: &[usize]) -> Problem {
        let completed = self.completed_in(events);
        let mut problem = Problem::default();
        let mut search_op = vec![u32::MAX; self.ops.len()];
        for &e in events {
            let event = &self.events[e];
            let op = event.op as usize;
            if event.is_invoke {
                if let Some(step) = self.ops[op].step(completed[op]) {
                    search_op[op] = problem.push_call(step);
                }
            } else if self.ops[op].outcome != Outcome::Unknown && search_op[op] != u32::MAX {
                problem.push_return(search_op[op]);
            }
        }
        problem
    }
}

impl Operation {
    /// The step the search takes for this operation, or None if it tells
    /// nothing (a read whose result was not seen).
    fn step(&self, completed: bool) -> Option<Step> {
        let known = completed && self.outcome != Outcome::Unknown;
        match (self.effect, known) {
            (Effect::Read { seen }, true) => Some(Step::Read { seen }),
            (Effect::Read { .. }, false) => None,
            (Effect::Write { value }, _) => Some(Step::Write { value }),
            (Effect::Cas { expected, new }, true) => Some(match self.outcome {
                Outcome::Failed => Step::CasFailed { expected },
                _ => Step::Cas { expected, new },
            }),
            (Effect::Cas { expected, new }, false) => Some(Step::CasUnknown { expected, new }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// The fields of a line as serde sees them; types are checked by hand so an
/// error names the field. Absent and `null` look the same here, which only
/// matters for `value`, where both mean "no value".
#[derive(Deserialize)]
struct RawEvent {
    process: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    f: Option<Value>,
    key: Option<Value>,
    value: Option<Value>,
}

/// One line, checked field by field.
struct Line {
    process: i64,
    kind: EventType,
    function: Function,
    key: String,
    value: Option<Value>,
}

/// An invoke waiting for its completion.
struct Pending {
    key: usize,
    op: u32,
    function: Function,
    line: usize,
}

/// Builds the history line by line.
#[derive(Default)]
struct Builder {
    source: String,
    keys: Vec<KeyHistory>,
    key_index: HashMap<String, usize>,
    /// Per key: value text to id; id 0 is "absent".
    values: Vec<HashMap<String, ValueId>>,
    pending: HashMap<i64, Pending>,
    /// Per key, per op: false once the op is known to tell nothing.
    kept: Vec<Vec<bool>>,
}

/// Reads a whole history. Blank lines are skipped.
pub fn parse_history(mut reader: impl BufRead) -> Result<History, HistoryError> {
    let mut builder = Builder::default();
    let mut buffer = String::new();
    let mut line = 0;
    loop {
        line += 1;
        buffer.clear();
        let read =
            reader.read_line(&mut buffer).map_err(|e| HistoryError::new(line, HistoryErrorKind::Read(e)))?;
        if read == 0 {
            break;
        }
        let text = buffer.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let parsed = parse_line(text).map_err(|kind| HistoryError::new(line, kind))?;
        builder.add(line, text, parsed).map_err(|kind| HistoryError::new(line, kind))?;
    }
    Ok(builder.finish())
}

fn parse_line(text: &str) -> Result<Line, HistoryErrorKind> {
    // serde would also accept a struct written as an array; a history line
    // is always an object.
    if !text.trim_start().starts_with('{') {
        return Err(HistoryErrorKind::NotAnObject);
    }
    let raw: RawEvent = serde_json::from_str(text).map_err(HistoryErrorKind::Json)?;
    let process = required(raw.process, "process")?;
    let process =
        process.as_i64().ok_or(HistoryErrorKind::WrongType { field: "process", expected: "an integer" })?;
    let kind = match required_str(raw.kind, "type")?.as_str() {
        "invoke" => EventType::Invoke,
        "ok" => EventType::Ok,
        "fail" => EventType::Fail,
        "info" => EventType::Info,
        other => return Err(HistoryErrorKind::UnknownType(other.to_owned())),
    };
    let function = match required_str(raw.f, "f")?.as_str() {
        "read" => Function::Read,
        "write" => Function::Write,
        "cas" => Function::Cas,
        "delete" => Function::Delete,
        other => return Err(HistoryErrorKind::UnknownFunction(other.to_owned())),
    };
    let key = required_str(raw.key, "key")?;
    Ok(Line { process, kind, function, key, value: raw.value })
}

fn required(value: Option<Value>, field: &'static str) -> Result<Value, HistoryErrorKind> {
    value.ok_or(HistoryErrorKind::MissingField(field))
}

fn required_str(value: Option<Value>, field: &'static str) -> Result<String, HistoryErrorKind> {
    match required(value, field)? {
        Value::String(s) => Ok(s),
        _ => Err(HistoryErrorKind::WrongType { field, expected: "a string" }),
    }
}

/// The id of a value (`None` and `null` are "absent"), or None if the JSON
/// value is neither a string nor null.
fn intern(values: &mut HashMap<String, ValueId>, value: Option<&Value>) -> Option<ValueId> {
    match value {
        None | Some(Value::Null) => Some(ValueId::ABSENT),
        Some(Value::String(s)) => {
            if let Some(&id) = values.get(s) {
                return Some(id);
            }
            let id = ValueId::from_index(values.len() + 1);
            values.insert(s.clone(), id);
            Some(id)
        }
        Some(_) => None,
    }
}

impl Builder {
    fn add(&mut self, line: usize, text: &str, parsed: Line) -> Result<(), HistoryErrorKind> {
        let start = self.source.len();
        self.source.push_str(text);
        self.source.push('\n');
        let range = start..start + text.len();
        if parsed.kind == EventType::Invoke {
            self.invoke(line, range, parsed)
        } else {
            self.complete(line, range, parsed)
        }
    }

    fn invoke(&mut self, line: usize, text: Range<usize>, ev: Line) -> Result<(), HistoryErrorKind> {
        if let Some(p) = self.pending.get(&ev.process) {
            return Err(HistoryErrorKind::AlreadyPending { process: ev.process, invoke_line: p.line });
        }
        let key = self.key_index(&ev.key);
        let effect = self.effect(key, ev.function, ev.value.as_ref())?;
        let history = &mut self.keys[key];
        let op = u32::try_from(history.ops.len()).expect("fewer than 2^32 operations per key");
        // Unknown until a completion says otherwise: an invoke that never
        // completes may or may not have taken effect.
        history.ops.push(Operation { effect, outcome: Outcome::Unknown });
        history.events.push(Event { op, is_invoke: true, line, text });
        // A read that never completes tells nothing.
        self.kept[key].push(ev.function != Function::Read);
        let pending = Pending { key, op, function: ev.function, line };
        self.pending.insert(ev.process, pending);
        Ok(())
    }

    fn complete(&mut self, line: usize, text: Range<usize>, ev: Line) -> Result<(), HistoryErrorKind> {
        let pending = self
            .pending
            .remove(&ev.process)
            .ok_or(HistoryErrorKind::NothingPending { process: ev.process })?;
        let mismatch = |field| HistoryErrorKind::CompletionMismatch {
            process: ev.process,
            field,
            invoke_line: pending.line,
        };
        if pending.function != ev.function {
            return Err(mismatch("f"));
        }
        if self.keys[pending.key].key != ev.key {
            return Err(mismatch("key"));
        }
        let (outcome, kept) = match (ev.kind, ev.function) {
            (EventType::Ok, _) => (Outcome::Ok, true),
            (EventType::Fail, Function::Cas) => (Outcome::Failed, true),
            (EventType::Info, Function::Write | Function::Cas | Function::Delete) => (Outcome::Unknown, true),
            // Did not happen, or a read nobody saw the result of.
            _ => (Outcome::Unknown, false),
        };
        let op = &mut self.keys[pending.key].ops[pending.op as usize];
        op.outcome = outcome;
        if ev.function == Function::Read && outcome == Outcome::Ok {
            // A read's result is on its completion; other operations carry
            // their arguments on the invoke.
            let seen = intern(&mut self.values[pending.key], ev.value.as_ref()).ok_or(
                HistoryErrorKind::BadValue { function: Function::Read, expected: "a string or null" },
            )?;
            self.keys[pending.key].ops[pending.op as usize].effect = Effect::Read { seen };
        }
        self.kept[pending.key][pending.op as usize] = kept;
        self.keys[pending.key].events.push(Event { op: pending.op, is_invoke: false, line, text });
        Ok(())
    }

    fn key_index(&mut self, key: &str) -> usize {
        if let Some(&index) = self.key_index.get(key) {
            return index;
        }
        let index = self.keys.len();
        self.key_index.insert(key.to_owned(), index);
        self.keys.push(KeyHistory { key: key.to_owned(), ops: Vec::new(), events: Vec::new() });
        self.values.push(HashMap::new());
        self.kept.push(Vec::new());
        index
    }

    /// Interprets an invoke's value. A read's is ignored: its result comes
    /// with the completion.
    fn effect(
        &mut self,
        key: usize,
        function: Function,
        value: Option<&Value>,
    ) -> Result<Effect, HistoryErrorKind> {
        let bad = |expected| HistoryErrorKind::BadValue { function, expected };
        let values = &mut self.values[key];
        match function {
            Function::Read => Ok(Effect::Read { seen: ValueId::ABSENT }),
            Function::Delete => Ok(Effect::Write { value: ValueId::ABSENT }),
            Function::Write => match value {
                Some(Value::String(_)) => {
                    Ok(Effect::Write { value: intern(values, value).ok_or(bad("a string"))? })
                }
                _ => Err(bad("a string")),
            },
            Function::Cas => {
                let expected = "[expected, new], each a string or null";
                let Some(Value::Array(pair)) = value else {
                    return Err(bad(expected));
                };
                let [old, new] = pair.as_slice() else {
                    return Err(bad(expected));
                };
                Ok(Effect::Cas {
                    expected: intern(values, Some(old)).ok_or(bad(expected))?,
                    new: intern(values, Some(new)).ok_or(bad(expected))?,
                })
            }
        }
    }

    fn finish(self) -> History {
        let keys =
            self.keys.into_iter().zip(self.kept).map(|(history, kept)| compact(history, &kept)).collect();
        History { source: self.source, keys }
    }
}

/// Removes the operations that tell nothing and renumbers the rest.
fn compact(history: KeyHistory, kept: &[bool]) -> KeyHistory {
    let mut renumbered = vec![u32::MAX; history.ops.len()];
    let mut ops = Vec::with_capacity(history.ops.len());
    for (index, op) in history.ops.into_iter().enumerate() {
        if kept[index] {
            renumbered[index] = ops.len() as u32;
            ops.push(op);
        }
    }
    let events = history
        .events
        .into_iter()
        .filter(|e| kept[e.op as usize])
        .map(|e| Event { op: renumbered[e.op as usize], ..e })
        .collect();
    KeyHistory { key: history.key, ops, events }
}

impl HistoryError {
    fn new(line: usize, kind: HistoryErrorKind) -> Self {
        Self { line, kind }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.kind)
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            HistoryErrorKind::Read(e) => Some(e),
            HistoryErrorKind::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for HistoryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => write!(f, "cannot read: {e}"),
            Self::Json(e) => {
                // serde_json counts lines within the one line it was given;
                // only the column means anything here.
                let message = e.to_string();
                let position = format!(" at line {} column {}", e.line(), e.column());
                let message = message.strip_suffix(&position).unwrap_or(&message);
                write!(f, "bad JSON at column {}: {message}", e.column())
            }
            Self::NotAnObject => write!(f, "not a JSON object"),
            Self::MissingField(field) => write!(f, "field `{field}` is missing or null"),
            Self::WrongType { field, expected } => {
                write!(f, "field `{field}` must be {expected}")
            }
            Self::UnknownType(t) => {
                write!(f, "unknown type {t:?} (expected invoke, ok, fail or info)")
            }
            Self::UnknownFunction(name) => {
                write!(f, "unknown f {name:?} (expected read, write, cas or delete)")
            }
            Self::BadValue { function, expected } => {
                write!(f, "the value of a {function} must be {expected}")
            }
            Self::AlreadyPending { process, invoke_line } => write!(
                f,
                "process {process} invokes while its operation from line {invoke_line} is still pending"
            ),
            Self::NothingPending { process } => {
                write!(f, "completion for process {process}, which has no pending invoke")
            }
            Self::CompletionMismatch { process, field, invoke_line } => write!(
                f,
                "completion for process {process} has another `{field}` than its invoke on line {invoke_line}"
            ),
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Cas => "cas",
            Self::Delete => "delete",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testing::parse;

    fn roles(history: &History, key: usize) -> Vec<Role> {
        let key = &history.keys()[key];
        let all: Vec<usize> = (0..key.event_count()).collect();
        let completed = key.completed_in(&all);
        (0..key.op_count()).map(|op| key.op_role(op, completed[op])).collect()
    }

    #[test]
    fn operations_that_tell_nothing_are_left_out() {
        let history = parse(
            "0 invoke write  x 1
             0 fail   write  x 1
             0 invoke delete x _
             0 fail   delete x _
             0 invoke read   x _
             0 fail   read   x _
             0 invoke read   x _
             0 info   read   x _
             1 invoke read   x _",
        );
        assert_eq!(history.operation_count(), 0);
        assert_eq!(history.keys()[0].event_count(), 0);
    }

    #[test]
    fn roles_follow_outcomes() {
        let history = parse(
            "0 invoke write x 1
             0 ok     write x 1
             0 invoke cas   x 1,2
             0 fail   cas   x 1,2
             0 invoke cas   x 1,2
             0 info   cas   x 1,2
             1 invoke read  x _
             1 ok     read  x _
             2 invoke delete x _",
        );
        let (one, two) = (ValueId::from_index(1), ValueId::from_index(2));
        let role = |observes, writes, required| Role { observes, writes, required };
        let expected = [
            role(Observation::Nothing, Some(one), true),
            role(Observation::NotEqual(one), None, true),
            role(Observation::Equal(one), Some(two), false),
            role(Observation::Equal(ValueId::ABSENT), None, true),
            role(Observation::Nothing, Some(ValueId::ABSENT), false),
        ];
        assert_eq!(roles(&history, 0), expected);
    }

    #[test]
    fn keys_are_listed_in_order_of_first_appearance() {
        let history = parse(
            "0 invoke write b 1
             1 invoke write a 1
             0 ok     write b 1
             1 ok     write a 1
             0 invoke read  b _
             0 ok     read  b 1",
        );
        let keys: Vec<&str> = history.keys().iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["b", "a"]);
        assert_eq!(history.keys()[0].event_count(), 4);
        assert_eq!(history.operation_count(), 3);
    }

    #[test]
    fn values_are_interned_per_key() {
        let history = parse(
            "0 invoke write a x
             0 ok     write a x
             0 invoke write b y
             0 ok     write b y
             0 invoke write b x
             0 ok     write b x",
        );
        let writes =
            |key| -> Vec<Option<ValueId>> { roles(&history, key).iter().map(|r| r.writes).collect() };
        let id = |i| Some(ValueId::from_index(i));
        assert_eq!(writes(0), [id(1)]);
        assert_eq!(writes(1), [id(1), id(2)]);
    }

    #[test]
    fn completion_must_name_the_key_of_its_invoke() {
        let text = "{\"process\":0,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"a\",\"value\":\"1\"}\n\
                    {\"process\":0,\"type\":\"ok\",\"f\":\"write\",\"key\":\"b\",\"value\":\"1\"}\n";
        let error = parse_history(text.as_bytes()).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(matches!(
            error.kind,
            HistoryErrorKind::CompletionMismatch { process: 0, field: "key", invoke_line: 1 }
        ));
    }

    #[test]
    fn a_read_completion_must_carry_a_string_or_null() {
        let text = "{\"process\":0,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\",\"value\":null}\n\
                    {\"process\":0,\"type\":\"ok\",\"f\":\"read\",\"key\":\"a\",\"value\":[1]}\n";
        let error = parse_history(text.as_bytes()).unwrap_err();
        assert_eq!(error.to_string(), "line 2: the value of a read must be a string or null");
    }
}
