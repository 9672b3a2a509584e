//! `paxosctl export`, `list` and `import` without the I/O: the merge of
//! the nodes' scan pages into one decision per key (`ScanMerge`), over every
//! key or the keys under a prefix; the JSON Lines format of an export file
//! (`Entry`, `parse_file`); and the lines of a listing (`Listed`). The
//! blocking client fetches the pages (`client::Client::scan_page`) and reads
//! the keys the scan leaves open; `paxosctl` writes the file or the listing.
//!
//! # What an export holds, and why
//! The exporter scans every node's acceptor slots (`Message::Scan` at
//! epoch 0, which fences nothing), page by page in key order, all nodes in
//! step, and decides a key once every node still answering has scanned
//! past it:
//! - **Settled by the scan.** When a majority of the cluster's nodes report
//!   the same accepted ballot for a key, the state accepted at it was
//!   chosen: one ballot carries one state (a proposer sends one state per
//!   ballot), and a majority accepted it. A node whose scan passed the key
//!   without it counts as reporting no ballot; a majority of those means no
//!   write of the key was chosen before its pages were served: the key is
//!   absent. This is the one-round read's argument (`core::proposer`,
//!   "Reads in one round"), with scan pages for query replies.
//! - **Otherwise read.** When no majority agrees (a write in flight, or a
//!   node that missed some accepts), the driver reads the key through the
//!   ordinary client, which is linearizable.
//!
//! What that guarantees, for a driver that decides every key this way while
//! the nodes that answer its scans in full are a majority:
//! - **Every write acknowledged before the export began is in it**, with
//!   that state or a newer one. The write was accepted by a majority before
//!   the first page was served. That majority shares a node with every
//!   majority that settles a key, and with the nodes whose scans are
//!   complete: that node's accepted ballot only grows, so it reports the key
//!   at a ballot at least as high. A state chosen at a ballot at least as
//!   high is the acknowledged one or built on it (CASPaxos builds each
//!   chosen state on the highest accepted state of a quorum). A read
//!   returns the latest state at a moment after the export began.
//! - **Every value is one the key really held while the export ran**: a
//!   read's answer, or a chosen state. Nothing newer than that state was
//!   chosen before the export began (a majority that accepted it shares a
//!   node with the majority that settled the key, which would report the
//!   newer ballot), so it was current when the export began, or became so
//!   later; and a majority accepted it by the last page that reported it.
//!   Pages report durable states only: a node sends a page with the
//!   records of its loop turn, after their sync (`core::Ready`).
//! - **Keys are captured one by one**, each at its own moment: an export is
//!   not a snapshot across keys, and a write made while it runs may or may
//!   not be in it.
//!
//! A node that stops answering is dropped from the merge (its reports of
//! the keys decided before stay counted: they were true). Once fewer than a
//! majority of the nodes answer, a key acknowledged by the others alone
//! could be missed, and the merge ends with `TooFewScans`.
//!
//! A merge under a prefix (`ScanMerge::under_prefix`) is the same merge
//! over fewer keys: its scans start right before the prefix's first
//! possible key (`key_before`), and a node whose scan has passed the
//! prefix's last key counts as done. Every key under the prefix is decided
//! as above, so what an export guarantees holds for each of them.
//!
//! A driver calls `poll` in a loop: for `Step::Scan` it fetches that page
//! and hands it to `handle_page` (or reports the node silent with
//! `handle_silent`); for `Step::Decided` it writes the key out, or reads it
//! first; `Step::Finished` ends the loop. `poll` always has a step: the
//! merge cannot stall.

use crate::core::quorum;
use crate::limits;
use crate::types::{Ballot, Key, NodeId, Value, Version};
use crate::wire::ScanSlot;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::{self, Write as _};

/// Whether `key` is one of the cluster's own (its first byte is 0, as in
/// the epoch register `core::rejoin::EPOCH_KEY`): never exported, never
/// imported.
pub fn is_system_key(key: &Key) -> bool {
    key.0.first() == Some(&0)
}

/// The merge of every node's scan into one decision per key, in key order.
#[derive(Debug)]
pub struct ScanMerge {
    majority: usize,
    nodes: BTreeMap<NodeId, NodeScan>,
    /// Only keys that start with these bytes are decided (every key when
    /// empty).
    prefix: Vec<u8>,
}

/// How far one node's scan has come.
#[derive(Debug)]
struct NodeScan {
    /// The last key received; the next page starts after it.
    after: Option<Key>,
    /// Slots received and not merged yet, in key order (system keys left
    /// out).
    pending: VecDeque<ScanSlot>,
    progress: Progress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Scanning,
    /// The node sent its last page, or a page that passed the prefix.
    Done,
    /// The node was silent, or sent a page that breaks the scan's rules:
    /// it counts no more.
    Dropped,
}

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Fetch the page of `node`'s slots after `after`, and hand it to
    /// `handle_page` (or call `handle_silent`).
    Scan { node: NodeId, after: Option<Key> },
    /// A key is decided.
    Decided(Decision),
    /// Every key is decided, or too few nodes answer to decide the rest.
    Finished(Result<(), TooFewScans>),
}

/// How one key's state is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A majority of the nodes accepted this state at one ballot (or, with
    /// `value` `None` at version 0, reported none): it was chosen.
    /// `value` is `None` for a deleted or absent key.
    Chosen { key: Key, value: Option<Value>, version: Version },
    /// The nodes disagree: read the key through the cluster.
    Read { key: Key },
}

/// Fewer nodes answer the scan than a majority of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooFewScans {
    pub answering: usize,
    pub needed: usize,
    pub members: usize,
    pub dropped: Vec<NodeId>,
}

impl fmt::Display for TooFewScans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.dropped.iter().map(NodeId::to_string).collect();
        write!(
            f,
            "only {} of {} nodes could be scanned in full, and a complete scan needs a majority \
             ({}): node {} did not answer",
            self.answering,
            self.members,
            self.needed,
            ids.join(", ")
        )
    }
}

/// What a page handed to `handle_page` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageFate {
    /// Merged.
    Taken,
    /// Not the page awaited from that node (a late copy, or a node not
    /// scanning): nothing changed.
    Ignored,
    /// The page breaks the scan's rules: the node is dropped.
    Refused(BadPage),
}

/// How a page breaks the scan's rules (bytes from the network: checked,
/// never trusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPage {
    /// A key at or before the `after` the page answers.
    NotAfter,
    /// Keys not strictly increasing.
    NotInOrder,
    /// No slot, yet not the last page: the scan would never end.
    Empty,
}

/// What one node reports of one key: the ballot it accepted last and the
/// state it accepted there (no ballot, absent, when it has no slot).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Report {
    accepted: Ballot,
    value: Option<Value>,
    version: Version,
}

impl Report {
    const NONE: Report = Report { accepted: Ballot::ZERO, value: None, version: Version(0) };

    /// What the slot says of the node's vote; `None` when it says nothing:
    /// the node adopted that state while it caught up after losing data,
    /// and may have promised a higher ballot in its earlier life instead of
    /// accepting it, so it is no witness for that ballot.
    fn of(slot: ScanSlot) -> Option<Report> {
        if slot.adopted {
            return None;
        }
        if slot.accepted.is_zero() {
            return Some(Report::NONE);
        }
        Some(Report { accepted: slot.accepted, value: slot.state.value, version: slot.state.version })
    }
}

impl ScanMerge {
    /// A merge of every key over the cluster `members` (every one of them:
    /// the majority is of the whole cluster).
    pub fn new(members: &[NodeId]) -> ScanMerge {
        ScanMerge::under_prefix(members, &[])
    }

    /// A merge of the keys that start with `prefix`: the scans start right
    /// before the first such key, and end once they pass the last.
    pub fn under_prefix(members: &[NodeId], prefix: &[u8]) -> ScanMerge {
        let after = key_before(prefix);
        let scan =
            || NodeScan { after: after.clone(), pending: VecDeque::new(), progress: Progress::Scanning };
        let nodes: BTreeMap<NodeId, NodeScan> = members.iter().map(|m| (*m, scan())).collect();
        ScanMerge { majority: quorum::majority(nodes.len()), nodes, prefix: prefix.to_vec() }
    }

    /// The nodes dropped so far (silent, or sent a bad page).
    pub fn dropped(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, s)| s.progress == Progress::Dropped).map(|(id, _)| *id).collect()
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> Step {
        let answering = self.nodes.values().filter(|s| s.progress != Progress::Dropped).count();
        if answering < self.majority {
            let members = self.nodes.len();
            let needed = self.majority;
            return Step::Finished(Err(TooFewScans { answering, needed, members, dropped: self.dropped() }));
        }
        let waiting =
            self.nodes.iter().find(|(_, s)| s.progress == Progress::Scanning && s.pending.is_empty());
        if let Some((node, scan)) = waiting {
            return Step::Scan { node: *node, after: scan.after.clone() };
        }
        match self.decide_next() {
            Some(decision) => Step::Decided(decision),
            None => Step::Finished(Ok(())),
        }
    }

    /// `node`'s page of the slots after `after`; `done` when no key
    /// follows them.
    pub fn handle_page(
        &mut self,
        node: NodeId,
        after: &Option<Key>,
        slots: Vec<ScanSlot>,
        done: bool,
    ) -> PageFate {
        let Some(scan) = self.nodes.get_mut(&node) else { return PageFate::Ignored };
        if scan.progress != Progress::Scanning || !scan.pending.is_empty() || scan.after != *after {
            return PageFate::Ignored;
        }
        if let Err(bad) = check_page(after, &slots, done) {
            scan.progress = Progress::Dropped;
            scan.pending.clear();
            return PageFate::Refused(bad);
        }
        if let Some(last) = slots.last() {
            scan.after = Some(last.key.clone());
        }
        let prefix = &self.prefix;
        let wanted = |s: &ScanSlot| s.key.0.starts_with(prefix) && !is_system_key(&s.key);
        scan.pending.extend(slots.into_iter().filter(wanted));
        // A node that has shown a key past the prefix has shown every key
        // under it: its later pages hold none.
        if done || scan.after.as_ref().is_some_and(|last| past_prefix(prefix, last)) {
            scan.progress = Progress::Done;
        }
        PageFate::Taken
    }

    /// `node` did not answer (the driver gave up asking): it counts no more.
    pub fn handle_silent(&mut self, node: NodeId) {
        if let Some(scan) = self.nodes.get_mut(&node) {
            scan.progress = Progress::Dropped;
            scan.pending.clear();
        }
    }

    /// Decides the lowest key any answering node still holds: every
    /// answering node has scanned past it (none waits for a page), so each
    /// reports the key's slot or, by leaving it out, no ballot.
    fn decide_next(&mut self) -> Option<Decision> {
        let answering = || self.nodes.values().filter(|s| s.progress != Progress::Dropped);
        let key = answering().filter_map(|s| s.pending.front()).map(|slot| &slot.key).min()?.clone();
        let mut tally: Vec<(Report, usize)> = Vec::new();
        for scan in self.nodes.values_mut().filter(|s| s.progress != Progress::Dropped) {
            let report = match scan.pending.front() {
                Some(slot) if slot.key == key => scan.pending.pop_front().and_then(Report::of),
                _ => Some(Report::NONE),
            };
            let Some(report) = report else { continue };
            match tally.iter_mut().find(|(r, _)| *r == report) {
                Some((_, count)) => *count += 1,
                None => tally.push((report, 1)),
            }
        }
        let chosen = tally.into_iter().find(|(_, count)| *count >= self.majority);
        Some(match chosen {
            Some((report, _)) => Decision::Chosen { key, value: report.value, version: report.version },
            None => Decision::Read { key },
        })
    }
}

/// Whether `key` comes after every key that starts with `prefix`.
fn past_prefix(prefix: &[u8], key: &Key) -> bool {
    key.0.as_slice() > prefix && !key.0.starts_with(prefix)
}

/// The greatest key before every key that starts with `prefix`, so that a
/// scan after it starts at the first of them; `None` for the empty prefix,
/// which no key precedes.
fn key_before(prefix: &[u8]) -> Option<Key> {
    before(prefix, limits::KEY_BYTES_MAX).map(Key)
}

/// The greatest byte string of at most `len_max` bytes that sorts before
/// `p`, in the byte order of keys; `None` when `p` is empty. Nothing sorts
/// between the answer and `p`:
/// - when `p` ends in 0, `p` without it: a string above that either starts
///   with it and goes on with a byte of at least 0, so sorts at or after
///   `p`, or is higher at an earlier byte, and so above `p` too;
/// - otherwise `p` with its last byte one lower, padded with 0xff to
///   `len_max`: a string between them would start as `p` does up to that
///   lower byte, then go on above 0xff repeated to `len_max` bytes, which
///   takes more than `len_max` bytes;
/// - when `p` is longer than `len_max`, its first `len_max` bytes: a string
///   between them would start with those bytes and go on, past `len_max`.
fn before(p: &[u8], len_max: usize) -> Option<Vec<u8>> {
    if p.len() > len_max {
        return Some(p[..len_max].to_vec());
    }
    let (&last, start) = p.split_last()?;
    let mut key = start.to_vec();
    if last != 0 {
        key.push(last - 1);
        key.resize(len_max, 0xff);
    }
    Some(key)
}

/// A page's slots follow `after` in strictly increasing key order, and a
/// page that is not the last has at least one.
fn check_page(after: &Option<Key>, slots: &[ScanSlot], done: bool) -> Result<(), BadPage> {
    if slots.is_empty() && !done {
        return Err(BadPage::Empty);
    }
    if let (Some(after), Some(first)) = (after, slots.first())
        && first.key <= *after
    {
        return Err(BadPage::NotAfter);
    }
    if slots.windows(2).any(|pair| pair[0].key >= pair[1].key) {
        return Err(BadPage::NotInOrder);
    }
    Ok(())
}

/// One key of an export file, one JSON object per line:
/// `{"key":"greeting","value":"hello","version":3}`, with `key_hex` or
/// `value_hex` (lowercase hex) in place of `key` or `value` when the bytes
/// are not UTF-8. `version` is the key's version in the exported cluster;
/// an import reads it and ignores it (and does without it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Key,
    pub value: Value,
    pub version: Option<Version>,
}

/// An export line as JSON: exactly one of each pair, checked after parsing.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

/// Why a line of an import file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    NotUtf8,
    /// Not a JSON object.
    NotAnObject,
    /// Not an object of the export's fields (serde's message).
    Json(String),
    NoKey,
    TwoKeys,
    NoValue,
    TwoValues,
    BadHex {
        field: &'static str,
    },
    SystemKey,
    KeyTooLarge {
        bytes: usize,
    },
    ValueTooLarge {
        bytes: usize,
    },
    Duplicate {
        first_line: usize,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NotUtf8 => write!(f, "not UTF-8"),
            LineError::NotAnObject => write!(f, "not a JSON object"),
            LineError::Json(e) => write!(f, "not an export line ({e})"),
            LineError::NoKey => write!(f, "no \"key\" or \"key_hex\""),
            LineError::TwoKeys => write!(f, "both \"key\" and \"key_hex\""),
            LineError::NoValue => write!(f, "no \"value\" or \"value_hex\""),
            LineError::TwoValues => write!(f, "both \"value\" and \"value_hex\""),
            LineError::BadHex { field } => write!(f, "\"{field}\" is not an even number of hex digits"),
            LineError::SystemKey => {
                write!(f, "the key starts with byte 0, which marks the cluster's own keys")
            }
            LineError::KeyTooLarge { bytes } => {
                write!(f, "the key has {bytes} bytes, over the limit of {}", limits::KEY_BYTES_MAX)
            }
            LineError::ValueTooLarge { bytes } => {
                write!(f, "the value has {bytes} bytes, over the limit of {}", limits::VALUE_BYTES_MAX)
            }
            LineError::Duplicate { first_line } => write!(f, "the key is already on line {first_line}"),
        }
    }
}

/// A refused line of an import file, numbered from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub line: usize,
    pub error: LineError,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.error)
    }
}

impl std::error::Error for FileError {}

impl Entry {
    /// The entry's line, without the newline.
    pub fn to_line(&self) -> String {
        let (key, key_hex) = text_or_hex(&self.key.0);
        let (value, value_hex) = text_or_hex(&self.value.0);
        let line = Line { key, key_hex, value, value_hex, version: self.version.map(|v| v.0) };
        // A struct of strings and a number always serialises.
        serde_json::to_string(&line).expect("an export line serialises")
    }

    /// An entry from one line (without its newline), checked against the
    /// limits.
    pub fn from_line(text: &str) -> Result<Entry, LineError> {
        // serde would also read a struct from an array, by position.
        if !text.trim_start().starts_with('{') {
            return Err(LineError::NotAnObject);
        }
        let line: Line = serde_json::from_str(text).map_err(|e| LineError::Json(e.to_string()))?;
        let key = match (line.key, line.key_hex) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(hex)) => from_hex(&hex).ok_or(LineError::BadHex { field: "key_hex" })?,
            (None, None) => return Err(LineError::NoKey),
            (Some(_), Some(_)) => return Err(LineError::TwoKeys),
        };
        let value = match (line.value, line.value_hex) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(hex)) => from_hex(&hex).ok_or(LineError::BadHex { field: "value_hex" })?,
            (None, None) => return Err(LineError::NoValue),
            (Some(_), Some(_)) => return Err(LineError::TwoValues),
        };
        let entry = Entry { key: Key(key), value: Value(value), version: line.version.map(Version) };
        entry.check()?;
        Ok(entry)
    }

    fn check(&self) -> Result<(), LineError> {
        if is_system_key(&self.key) {
            Err(LineError::SystemKey)
        } else if self.key.0.len() > limits::KEY_BYTES_MAX {
            Err(LineError::KeyTooLarge { bytes: self.key.0.len() })
        } else if self.value.0.len() > limits::VALUE_BYTES_MAX {
            Err(LineError::ValueTooLarge { bytes: self.value.0.len() })
        } else {
            Ok(())
        }
    }
}

/// One key of `paxosctl list`: its key and version, without the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: Key,
    pub version: Version,
}

impl Listed {
    /// `{"key":"greeting","version":3}`, with `key_hex` in place of `key`
    /// when the bytes are not UTF-8, as in an export line.
    pub fn to_json(&self) -> String {
        let (key, key_hex) = text_or_hex(&self.key.0);
        let line = Line { key, key_hex, version: Some(self.version.0), ..Line::default() };
        // A struct of strings and a number always serialises.
        serde_json::to_string(&line).expect("a listing line serialises")
    }

    /// `KEY<TAB>VERSION`, the key escaped by `escape_key` so that every key
    /// takes one line and reads back unambiguously.
    pub fn to_text(&self) -> String {
        format!("{}\t{}", escape_key(&self.key.0), self.version.0)
    }
}

/// A key as text on one line: printable UTF-8 as it is, a backslash as
/// `\\`, and every byte of a control character (tab and newline among
/// them) or of bytes that are not UTF-8 as `\xNN` (lowercase hex). Each
/// escape starts with a backslash, and a backslash is always escaped, so
/// the key's bytes can be read back from the text.
pub fn escape_key(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                c if c.is_control() => push_hex_escapes(&mut text, c.encode_utf8(&mut [0; 4]).as_bytes()),
                c => text.push(c),
            }
        }
        push_hex_escapes(&mut text, chunk.invalid());
    }
    text
}

fn push_hex_escapes(text: &mut String, bytes: &[u8]) {
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "\\x{b:02x}");
    }
}

/// Every entry of an import file, or the first line that is wrong. Blank
/// lines are skipped; a key given twice is an error (the second could only
/// find the first).
pub fn parse_file(bytes: &[u8]) -> Result<Vec<Entry>, FileError> {
    let mut entries = Vec::new();
    let mut lines_of: HashMap<Key, usize> = HashMap::new();
    for (index, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = index + 1;
        let text = std::str::from_utf8(raw).map_err(|_| FileError { line, error: LineError::NotUtf8 })?;
        if text.trim().is_empty() {
            continue;
        }
        let entry = Entry::from_line(text).map_err(|error| FileError { line, error })?;
        if let Some(&first_line) = lines_of.get(&entry.key) {
            return Err(FileError { line, error: LineError::Duplicate { first_line } });
        }
        lines_of.insert(entry.key.clone(), line);
        entries.push(entry);
    }
    Ok(entries)
}

/// `(text, None)` for UTF-8 bytes, else `(None, hex)`.
fn text_or_hex(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(to_hex(bytes))),
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    hex
}

/// Hex digits (either case) to bytes; `None` for an odd count or a
/// non-digit.
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    digits.chunks(2).map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RegisterState;

    fn n(id: u16) -> NodeId {
        NodeId(id)
    }

    fn key(k: &str) -> Key {
        Key::from(k)
    }

    /// A slot of `k` that accepted `value` at version `version`, at ballot
    /// `round` of node 1.
    fn slot(k: &str, round: u64, value: &str, version: u64) -> ScanSlot {
        let state = RegisterState {
            value: Some(Value::from(value)),
            version: Version(version),
            ..Default::default()
        };
        let accepted = Ballot::new(round, n(1));
        ScanSlot { key: key(k), promised: accepted, accepted, adopted: false, state }
    }

    fn chosen(k: &str, value: &str, version: u64) -> Step {
        Step::Decided(Decision::Chosen {
            key: key(k),
            value: Some(Value::from(value)),
            version: Version(version),
        })
    }

    fn read(k: &str) -> Step {
        Step::Decided(Decision::Read { key: key(k) })
    }

    fn scan(node: u16, after: Option<&str>) -> Step {
        Step::Scan { node: n(node), after: after.map(key) }
    }

    /// Polls until the merge asks for a page or finishes; every step.
    fn steps(merge: &mut ScanMerge) -> Vec<Step> {
        let mut out = Vec::new();
        loop {
            let step = merge.poll();
            let stop = !matches!(step, Step::Decided(_));
            out.push(step);
            if stop {
                return out;
            }
        }
    }

    /// Hands each node's one and only page to the merge.
    fn one_page_each(merge: &mut ScanMerge, pages: Vec<Vec<ScanSlot>>) {
        for (i, slots) in pages.into_iter().enumerate() {
            let node = n(i as u16 + 1);
            assert_eq!(merge.poll(), scan(node.0, None));
            assert_eq!(merge.handle_page(node, &None, slots, true), PageFate::Taken);
        }
    }

    #[test]
    fn keys_a_majority_accepted_at_one_ballot_are_chosen_in_key_order() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        one_page_each(
            &mut merge,
            vec![
                vec![slot("a", 5, "x", 1), slot("b", 7, "y", 2)],
                vec![slot("a", 5, "x", 1), slot("b", 6, "old", 1)],
                vec![slot("a", 4, "older", 0), slot("b", 7, "y", 2)],
            ],
        );
        assert_eq!(steps(&mut merge), vec![chosen("a", "x", 1), chosen("b", "y", 2), Step::Finished(Ok(()))]);
    }

    #[test]
    fn keys_without_a_majority_on_one_ballot_are_read() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        one_page_each(
            &mut merge,
            vec![vec![slot("a", 5, "x", 1)], vec![slot("a", 6, "y", 2)], vec![slot("a", 7, "z", 3)]],
        );
        assert_eq!(steps(&mut merge), vec![read("a"), Step::Finished(Ok(()))]);
    }

    #[test]
    fn a_key_a_majority_does_not_have_is_absent_and_one_of_two_agreeing_is_read() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        one_page_each(&mut merge, vec![vec![slot("a", 5, "x", 1)], vec![], vec![]]);
        let absent = Step::Decided(Decision::Chosen { key: key("a"), value: None, version: Version(0) });
        assert_eq!(steps(&mut merge), vec![absent, Step::Finished(Ok(()))]);

        let mut merge = ScanMerge::new(&[n(1), n(2), n(3), n(4)]);
        let pages = vec![vec![slot("a", 5, "x", 1)], vec![slot("a", 5, "x", 1)], vec![], vec![]];
        one_page_each(&mut merge, pages);
        assert_eq!(steps(&mut merge), vec![read("a"), Step::Finished(Ok(()))], "2 of 4 is no majority");
    }

    #[test]
    fn a_state_a_node_adopted_while_catching_up_is_no_vote() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        let adopted = ScanSlot { adopted: true, ..slot("a", 5, "x", 1) };
        let pages = vec![vec![slot("a", 5, "x", 1)], vec![adopted.clone()], vec![slot("a", 6, "y", 2)]];
        one_page_each(&mut merge, pages);
        assert_eq!(steps(&mut merge), vec![read("a"), Step::Finished(Ok(()))], "one vote and one adoption");
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        one_page_each(&mut merge, vec![vec![], vec![ScanSlot { key: key("b"), ..adopted }], vec![]]);
        let absent = Step::Decided(Decision::Chosen { key: key("b"), value: None, version: Version(0) });
        assert_eq!(steps(&mut merge), vec![absent, Step::Finished(Ok(()))], "two nodes never had it");
    }

    #[test]
    fn a_slot_that_only_promised_counts_as_no_ballot() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        let promised_only = ScanSlot {
            key: key("a"),
            promised: Ballot::new(9, n(2)),
            accepted: Ballot::ZERO,
            adopted: false,
            state: Default::default(),
        };
        one_page_each(&mut merge, vec![vec![promised_only], vec![], vec![slot("a", 3, "x", 1)]]);
        let absent = Step::Decided(Decision::Chosen { key: key("a"), value: None, version: Version(0) });
        assert_eq!(steps(&mut merge), vec![absent, Step::Finished(Ok(()))]);
    }

    #[test]
    fn a_deleted_key_is_chosen_without_a_value() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        let mut tombstone = slot("a", 5, "", 2);
        tombstone.state.value = None;
        one_page_each(&mut merge, vec![vec![tombstone.clone()], vec![tombstone.clone()], vec![tombstone]]);
        let deleted = Step::Decided(Decision::Chosen { key: key("a"), value: None, version: Version(2) });
        assert_eq!(steps(&mut merge), vec![deleted, Step::Finished(Ok(()))]);
    }

    #[test]
    fn a_key_is_decided_only_once_every_answering_node_scanned_past_it() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        assert_eq!(merge.poll(), scan(1, None));
        merge.handle_page(n(1), &None, vec![slot("a", 1, "x", 1), slot("c", 1, "z", 1)], true);
        assert_eq!(merge.poll(), scan(2, None));
        merge.handle_page(n(2), &None, vec![slot("a", 1, "x", 1)], false);
        assert_eq!(merge.poll(), scan(3, None));
        merge.handle_page(n(3), &None, vec![slot("a", 1, "x", 1), slot("b", 1, "y", 1)], false);
        // Node 2 has not shown what follows "a": "b" waits for it.
        assert_eq!(steps(&mut merge), vec![chosen("a", "x", 1), scan(2, Some("a"))]);
        merge.handle_page(n(2), &Some(key("a")), vec![slot("b", 1, "y", 1), slot("c", 1, "z", 1)], true);
        assert_eq!(steps(&mut merge), vec![chosen("b", "y", 1), scan(3, Some("b"))]);
        merge.handle_page(n(3), &Some(key("b")), vec![], true);
        assert_eq!(steps(&mut merge), vec![chosen("c", "z", 1), Step::Finished(Ok(()))]);
    }

    #[test]
    fn a_silent_node_is_dropped_and_a_second_one_ends_the_merge() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3)]);
        assert_eq!(merge.poll(), scan(1, None));
        merge.handle_silent(n(1));
        assert_eq!(merge.poll(), scan(2, None));
        merge.handle_page(n(2), &None, vec![slot("a", 1, "x", 1)], false);
        assert_eq!(merge.poll(), scan(3, None));
        merge.handle_page(n(3), &None, vec![slot("a", 1, "x", 1)], true);
        assert_eq!(steps(&mut merge), vec![chosen("a", "x", 1), scan(2, Some("a"))]);
        merge.handle_silent(n(2));
        let failure = TooFewScans { answering: 1, needed: 2, members: 3, dropped: vec![n(1), n(2)] };
        assert_eq!(merge.poll(), Step::Finished(Err(failure.clone())));
        assert_eq!(
            failure.to_string(),
            "only 1 of 3 nodes could be scanned in full, and a complete scan needs a majority (2): \
             node 1, 2 did not answer"
        );
    }

    #[test]
    fn pages_that_break_the_rules_drop_their_node_and_stray_pages_change_nothing() {
        let mut merge = ScanMerge::new(&[n(1), n(2), n(3), n(4), n(5)]);
        let unordered = vec![slot("b", 1, "x", 1), slot("a", 1, "x", 1)];
        assert_eq!(merge.handle_page(n(1), &None, unordered, true), PageFate::Refused(BadPage::NotInOrder));
        assert_eq!(merge.handle_page(n(2), &None, vec![], false), PageFate::Refused(BadPage::Empty));
        assert_eq!(merge.handle_page(n(3), &None, vec![slot("a", 1, "x", 1)], false), PageFate::Taken);
        assert_eq!(merge.dropped(), vec![n(1), n(2)]);
        assert_eq!(merge.handle_page(n(3), &None, vec![slot("a", 1, "x", 1)], false), PageFate::Ignored);
        assert_eq!(merge.handle_page(n(9), &None, vec![], true), PageFate::Ignored);
        assert_eq!(merge.handle_page(n(4), &Some(key("a")), vec![], true), PageFate::Ignored, "wrong after");
        assert_eq!(merge.poll(), scan(4, None));
        merge.handle_page(n(4), &None, vec![slot("a", 1, "x", 1)], false);
        merge.handle_page(n(5), &None, vec![slot("a", 1, "x", 1)], false);
        assert_eq!(steps(&mut merge), vec![chosen("a", "x", 1), scan(3, Some("a"))]);
        let same_key = vec![slot("a", 1, "x", 1)];
        assert_eq!(
            merge.handle_page(n(3), &Some(key("a")), same_key, true),
            PageFate::Refused(BadPage::NotAfter)
        );
    }

    #[test]
    fn system_keys_are_never_decided() {
        let mut merge = ScanMerge::new(&[n(1)]);
        let epoch = crate::core::rejoin::EPOCH_KEY;
        assert!(is_system_key(&Key(epoch.to_vec())));
        let system = ScanSlot { key: Key(epoch.to_vec()), ..slot("", 1, "3", 3) };
        assert_eq!(merge.poll(), scan(1, None));
        merge.handle_page(n(1), &None, vec![system], false);
        assert_eq!(merge.poll(), Step::Scan { node: n(1), after: Some(Key(epoch.to_vec())) });
        merge.handle_page(n(1), &Some(Key(epoch.to_vec())), vec![slot("a", 1, "x", 1)], true);
        assert_eq!(steps(&mut merge), vec![chosen("a", "x", 1), Step::Finished(Ok(()))]);
    }

    #[test]
    fn before_is_the_greatest_string_below_within_the_length_limit_checked_on_every_two_bytes() {
        // Every string of at most 2 bytes, in key order: each one's
        // predecessor is the one before it.
        let mut all: Vec<Vec<u8>> = vec![vec![]];
        all.extend((0..=255u8).map(|a| vec![a]));
        all.extend((0..=255u8).flat_map(|a| (0..=255u8).map(move |b| vec![a, b])));
        all.sort();
        assert_eq!(before(&all[0], 2), None, "nothing precedes the empty string");
        for pair in all.windows(2) {
            assert_eq!(before(&pair[1], 2).as_ref(), Some(&pair[0]), "before {:?}", pair[1]);
        }
        // A string longer than any: the greatest one below it.
        for p in [[0u8, 0, 0], [0, 0, 1], [7, 0xff, 0], [0xff, 0xff, 0xff], [0x80, 0, 0xff]] {
            let below = all.partition_point(|s| s.as_slice() < p.as_slice());
            assert_eq!(before(&p, 2).as_ref(), Some(&all[below - 1]), "before {p:?}");
        }
    }

    #[test]
    fn the_key_before_a_prefix_is_padded_to_the_longest_key() {
        assert_eq!(key_before(b""), None);
        assert_eq!(key_before(b"a\0"), Some(key("a")));
        assert_eq!(key_before(&[0]), Some(Key(vec![])));
        let mut padded = b"user.".to_vec();
        padded.resize(limits::KEY_BYTES_MAX, 0xff);
        assert_eq!(key_before(b"user/"), Some(Key(padded)));
    }

    #[test]
    fn a_merge_under_a_prefix_starts_right_before_it_and_ends_once_past_it() {
        let mut merge = ScanMerge::under_prefix(&[n(1), n(2), n(3)], b"b/");
        let start = key_before(b"b/");
        let first_after = |node: u16| Step::Scan { node: n(node), after: start.clone() };
        // Too long to be a key, yet between the start and the prefix: a
        // node that sends it is wrong, and it is not listed.
        let mut stray = start.clone().expect("a key before b/").0;
        stray.push(1);
        let stray = ScanSlot { key: Key(stray), ..slot("", 1, "s", 1) };
        assert_eq!(merge.poll(), first_after(1));
        let page = vec![stray, slot("b/1", 1, "x", 1), slot("b/2", 1, "y", 1), slot("c", 1, "z", 1)];
        assert_eq!(merge.handle_page(n(1), &start, page, false), PageFate::Taken);
        assert_eq!(merge.poll(), first_after(2));
        merge.handle_page(n(2), &start, vec![slot("b/1", 1, "x", 1), slot("b/2", 1, "y", 1)], false);
        assert_eq!(merge.poll(), first_after(3));
        merge.handle_page(n(3), &start, vec![slot("b/1", 1, "x", 1)], false);
        assert_eq!(steps(&mut merge), vec![chosen("b/1", "x", 1), scan(3, Some("b/1"))]);
        // "b0" sorts after every key under "b/" ('0' follows '/').
        merge.handle_page(
            n(3),
            &Some(key("b/1")),
            vec![slot("b/2", 1, "y", 1), slot("b0", 1, "w", 1)],
            false,
        );
        // Nodes 1 and 3 have passed the prefix and are not asked again.
        assert_eq!(steps(&mut merge), vec![chosen("b/2", "y", 1), scan(2, Some("b/2"))]);
        merge.handle_page(n(2), &Some(key("b/2")), vec![slot("b0", 1, "w", 1)], false);
        assert_eq!(steps(&mut merge), vec![Step::Finished(Ok(()))]);
    }

    #[test]
    fn a_merge_under_a_prefix_no_key_has_finishes_at_once() {
        let mut merge = ScanMerge::under_prefix(&[n(1)], b"m");
        let start = key_before(b"m");
        assert_eq!(merge.poll(), Step::Scan { node: n(1), after: start.clone() });
        merge.handle_page(n(1), &start, vec![slot("n", 1, "x", 1)], false);
        assert_eq!(merge.poll(), Step::Finished(Ok(())));
    }

    #[test]
    fn listing_lines_escape_what_is_not_printable_utf8() {
        let listed = |k: &[u8], version: u64| Listed { key: Key(k.to_vec()), version: Version(version) };
        assert_eq!(listed(b"greeting", 3).to_json(), r#"{"key":"greeting","version":3}"#);
        assert_eq!(listed(b"k\"\n", 1).to_json(), r#"{"key":"k\"\n","version":1}"#);
        assert_eq!(listed(&[0x80, b'a'], 1).to_json(), r#"{"key_hex":"8061","version":1}"#);
        assert_eq!(listed(b"greeting", 3).to_text(), "greeting\t3");
        assert_eq!(listed("ключ/é".as_bytes(), 2).to_text(), "ключ/é\t2");
        assert_eq!(listed(b"a\tb\nc\\d", 2).to_text(), "a\\x09b\\x0ac\\\\d\t2");
        assert_eq!(listed(&[b'k', 0xff, 0xc3], 1).to_text(), "k\\xff\\xc3\t1");
        assert_eq!(escape_key("\u{85}".as_bytes()), r"\xc2\x85", "a control character beyond ASCII");
    }

    #[test]
    fn lines_use_text_when_it_is_utf8_and_hex_otherwise() {
        let entry = |k: &[u8], v: &[u8]| Entry {
            key: Key(k.to_vec()),
            value: Value(v.to_vec()),
            version: Some(Version(3)),
        };
        assert_eq!(
            entry(b"greeting", b"hello").to_line(),
            r#"{"key":"greeting","value":"hello","version":3}"#
        );
        assert_eq!(entry(b"k\"\n", "é".as_bytes()).to_line(), r#"{"key":"k\"\n","value":"é","version":3}"#);
        assert_eq!(
            entry(b"k", &[0xff, 0x00, 0x1a]).to_line(),
            r#"{"key":"k","value_hex":"ff001a","version":3}"#
        );
        assert_eq!(entry(&[0x80], b"").to_line(), r#"{"key_hex":"80","value":"","version":3}"#);
        for e in [entry(b"greeting", b"hello"), entry(&[0xc3], &[0xff, 0xab]), entry(b"k\"\n", b"")] {
            assert_eq!(Entry::from_line(&e.to_line()), Ok(e));
        }
        let upper = Entry::from_line(r#"{"key_hex":"C3","value":"v"}"#);
        assert_eq!(upper, Ok(Entry { key: Key(vec![0xc3]), value: Value::from("v"), version: None }));
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let error = |text: &str| Entry::from_line(text).unwrap_err();
        assert!(matches!(error(r#"{"key":"k""#), LineError::Json(_)));
        assert_eq!(error(r#"["k","v"]"#), LineError::NotAnObject);
        assert!(matches!(error(r#"{"key":"k","vaule":"v"}"#), LineError::Json(e) if e.contains("vaule")));
        assert_eq!(error(r#"{"value":"v"}"#), LineError::NoKey);
        assert_eq!(error(r#"{"key":"k","key_hex":"6b","value":"v"}"#), LineError::TwoKeys);
        assert_eq!(error(r#"{"key":"k"}"#), LineError::NoValue);
        assert_eq!(error(r#"{"key":"k","value":"v","value_hex":"76"}"#), LineError::TwoValues);
        assert_eq!(error(r#"{"key":"k","value_hex":"7"}"#), LineError::BadHex { field: "value_hex" });
        assert_eq!(error(r#"{"key_hex":"zz","value":"v"}"#), LineError::BadHex { field: "key_hex" });
        assert_eq!(error(r#"{"key":"\u0000paxosd/epoch","value":"v"}"#), LineError::SystemKey);
        let long = format!(r#"{{"key":"{}","value":"v"}}"#, "k".repeat(limits::KEY_BYTES_MAX + 1));
        assert_eq!(error(&long), LineError::KeyTooLarge { bytes: limits::KEY_BYTES_MAX + 1 });
        let big = format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(limits::VALUE_BYTES_MAX + 1));
        assert_eq!(error(&big), LineError::ValueTooLarge { bytes: limits::VALUE_BYTES_MAX + 1 });
    }

    #[test]
    fn a_file_is_refused_at_its_first_bad_line_counting_blank_ones() {
        let good = "{\"key\":\"a\",\"value\":\"1\",\"version\":4}\n\n{\"key\":\"b\",\"value\":\"2\"}\n";
        let entries = parse_file(good.as_bytes()).expect("a good file");
        assert_eq!(entries.iter().map(|e| e.key.clone()).collect::<Vec<_>>(), vec![key("a"), key("b")]);
        assert_eq!(entries[0].version, Some(Version(4)));
        let twice = format!("{good}{{\"key\":\"a\",\"value\":\"3\"}}\n");
        let duplicate = FileError { line: 4, error: LineError::Duplicate { first_line: 1 } };
        assert_eq!(parse_file(twice.as_bytes()), Err(duplicate));
        let mut bytes = good.as_bytes().to_vec();
        bytes.extend_from_slice(b"{\"key\":\"c\",\"value\":\"\xff\"}\n");
        assert_eq!(parse_file(&bytes), Err(FileError { line: 4, error: LineError::NotUtf8 }));
        let truncated = format!("{good}{{\"key\":\"c\"");
        let refused = parse_file(truncated.as_bytes()).unwrap_err();
        assert_eq!(refused.line, 4);
        assert!(refused.to_string().starts_with("line 4: not an export line"), "{refused}");
    }
}
