//! The simulated clients and what they record.
//!
//! Each process is one client session, the library's own `ClientMachine`,
//! running one operation at a time. An operation whose outcome the client
//! cannot know is indeterminate: it goes into the history as `info`, and the
//! process retires; a fresh process (a new session) takes its place.
//!
//! Register operations (reads, writes, CAS, deletes on keys `k0`, `k1`, ...)
//! go into a history in the checker's JSON Lines format (Jepsen
//! conventions), with a unique value per write so that a read names the
//! write it saw. Appends of unique elements to list keys (`l0`, `l1`, ...)
//! are checked apart, at the end: every acknowledged element is in its
//! list exactly once, an element whose append did not run is not, and an
//! element whose outcome is unknown is there at most once. A write applied
//! twice shows up as a duplicate; a "not run" that did not stay true, as a
//! phantom.

use super::invariants::{Descent, Lists};
use super::net::ClientAddr;
use crate::change::Change;
use crate::core::client::{ClientMachine, Ending, NotRun, Routing};
use crate::core::rng::Rng;
use crate::types::{Key, NodeId, SessionId, Time, Value, Version};
use crate::wire::{Message, Refusal};
use std::collections::BTreeMap;

/// The workload of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPlan {
    pub clients: u64,
    /// Register keys in use at once.
    pub keys: u64,
    /// Operations a register key takes before a fresh key replaces it, so
    /// that no key's history grows beyond what the checker can search
    /// (Jepsen's independent keys).
    pub ops_per_key: u64,
    /// List keys appended to (0: no appends).
    pub lists: u64,
    /// Percent of operations that are appends, when there are lists.
    pub append_percent: u64,
    /// Percent of clients pinned to one node (`paxosctl --node`).
    pub pinned_percent: u64,
    /// Percent of clients that send to the node that answered last rather
    /// than to each key's home (`Routing::Spread`): their proposers contend
    /// with the homes', whose accepts without a prepare then meet conflicts.
    pub spread_percent: u64,
    pub timeout_ms: u64,
    pub think_us_max: u64,
}

impl WorkloadPlan {
    pub fn choose(rng: &mut Rng) -> WorkloadPlan {
        let lists = if rng.chance(0.7) { rng.range(1, 3) } else { 0 };
        WorkloadPlan {
            clients: rng.range(2, 6),
            keys: rng.range(1, 5),
            ops_per_key: rng.range(30, 300),
            lists,
            append_percent: rng.range(10, 40),
            pinned_percent: if rng.chance(0.3) { rng.range(10, 50) } else { 0 },
            spread_percent: if rng.chance(0.6) { rng.range(10, 60) } else { 0 },
            timeout_ms: rng.range(500, 5000),
            think_us_max: rng.range(0, 20_000),
        }
    }
}

/// Where an operation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Register(u64),
    List(u64),
}

impl Target {
    fn key(self) -> Key {
        match self {
            Target::Register(k) => key_name(k),
            Target::List(l) => Key(format!("l{l}").into_bytes()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write(String),
    Cas { expect: Option<String>, new: String },
    Delete,
    Append(String),
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write(_) => "write",
            Op::Cas { .. } => "cas",
            Op::Delete => "delete",
            Op::Append(_) => "append",
        }
    }

    fn change(&self) -> Change {
        match self {
            Op::Read => Change::Read,
            Op::Write(v) => Change::Put(Value::from(v.as_str())),
            Op::Cas { expect, new } => Change::CasValue {
                expect: expect.as_deref().map(Value::from),
                new: Value::from(new.as_str()),
            },
            Op::Delete => Change::Delete,
            Op::Append(element) => Change::Append(Value(format!(",{element}").into_bytes())),
        }
    }

    /// The invoke's `value` field.
    fn json_value(&self) -> String {
        match self {
            Op::Read | Op::Delete => "null".to_string(),
            Op::Write(v) | Op::Append(v) => json_str(Some(v)),
            Op::Cas { expect, new } => format!("[{},{}]", json_str(expect.as_deref()), json_str(Some(new))),
        }
    }
}

fn json_str(s: Option<&str>) -> String {
    match s {
        // Serializing a string cannot fail.
        Some(s) => serde_json::to_string(s).unwrap_or_else(|_| "null".to_string()),
        None => "null".to_string(),
    }
}

fn text(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// The operation a process is running.
struct Pending {
    op: Op,
    target: Target,
    invoked: Time,
    /// Index of the invoke line in the history (register operations).
    line: Option<usize>,
}

/// One client process.
struct Process {
    client: ClientMachine,
    op: Option<Pending>,
    writes: u64,
    /// The last value this process saw per register key: what its CAS expects.
    known: BTreeMap<u64, Option<String>>,
    /// Generation of the pending wake-up; older wake-ups are stale.
    generation: u64,
    /// The reader that checks liveness at the end: what it has yet to read.
    final_reads: Option<Vec<Target>>,
}

/// What clients ask of the world.
#[derive(Debug, Default)]
pub struct ClientOut {
    pub sends: Vec<(ClientAddr, NodeId, Message)>,
    /// Wake client `.0` (if its generation is still `.1`) at `.2`.
    pub wakes: Vec<(ClientAddr, u64, Time)>,
    pub violations: Vec<String>,
}

/// How operations ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// Operations with an unknown outcome a register key takes before it makes
/// way for a fresh one. Each stays open in the history for ever, and the
/// checker's search grows with how many overlap; a seed of heavy faults
/// would otherwise leave a history no budget can decide.
const UNKNOWN_PER_KEY_MAX: u64 = 16;

/// One register key in use.
struct ActiveKey {
    key: u64,
    ops: u64,
    unknown: u64,
}

/// The register keys operations go to.
struct Keys {
    active: Vec<ActiveKey>,
    /// Keys used so far: `0..used`.
    used: u64,
    /// Operations a key takes before it makes way for a fresh one.
    ops_max: u64,
}

impl Keys {
    /// A key in use for the next operation.
    fn pick(&mut self, rng: &mut Rng) -> u64 {
        let slot = rng.below(self.active.len() as u64) as usize;
        let Some(active) = self.active.get_mut(slot) else {
            return 0;
        };
        if active.ops >= self.ops_max || active.unknown >= UNKNOWN_PER_KEY_MAX {
            *active = ActiveKey { key: self.used, ops: 0, unknown: 0 };
            self.used += 1;
        }
        active.ops += 1;
        active.key
    }

    /// An operation on `key` ended with an unknown outcome.
    fn note_unknown(&mut self, key: u64) {
        if let Some(active) = self.active.iter_mut().find(|a| a.key == key) {
            active.unknown += 1;
        }
    }
}

pub struct Workload {
    plan: WorkloadPlan,
    members: Vec<NodeId>,
    ops_target: u64,
    clients: BTreeMap<ClientAddr, Process>,
    next_addr: ClientAddr,
    keys: Keys,
    invoked: u64,
    pub counts: OpCounts,
    /// One JSON line per event; an empty string for a line withdrawn.
    history: Vec<String>,
    descent: Descent,
    lists: Lists,
    finishing: bool,
    finished: bool,
    /// Membership changes run: a final read that found no quorum (the
    /// nodes frozen in a change that heals) is read again.
    pub retry_no_quorum: bool,
}

impl Workload {
    pub fn new(plan: WorkloadPlan, members: Vec<NodeId>, ops_target: u64) -> Workload {
        let keys = Keys {
            active: (0..plan.keys).map(|key| ActiveKey { key, ops: 0, unknown: 0 }).collect(),
            used: plan.keys,
            ops_max: plan.ops_per_key,
        };
        Workload {
            plan,
            members,
            ops_target,
            keys,
            clients: BTreeMap::new(),
            next_addr: 1,
            invoked: 0,
            counts: OpCounts::default(),
            history: Vec::new(),
            descent: Descent::default(),
            lists: Lists::default(),
            finishing: false,
            finished: false,
            retry_no_quorum: false,
        }
    }

    pub fn start(&mut self, now: Time, rng: &mut Rng, out: &mut ClientOut) {
        for _ in 0..self.plan.clients {
            self.spawn(now, rng, None, out);
        }
    }

    pub fn plan(&self) -> &WorkloadPlan {
        &self.plan
    }

    /// Operations invoked so far.
    pub fn invoked(&self) -> u64 {
        self.invoked
    }

    pub fn target_reached(&self) -> bool {
        self.invoked >= self.ops_target
    }

    /// True once the final reads are done.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The history in the checker's format.
    pub fn history(&self) -> String {
        self.history.concat()
    }

    /// A watcher was told at `now` that `key` held `value` at `version`:
    /// it must be the value clients were told for that version. (Not a
    /// floor for the versions of later operations beyond what a read at
    /// `now` would give: a watch hands out states that were current when
    /// its node read the key, or older ones from the key's history.)
    pub fn observe(
        &mut self,
        key: &Key,
        now: Time,
        version: Version,
        value: Option<Value>,
    ) -> Result<(), String> {
        self.descent.ack(key, Time(0), now, version, Some(value))
    }

    /// What is still running, for a liveness report.
    pub fn describe_pending(&self) -> String {
        let pending: Vec<String> = self
            .clients
            .iter()
            .filter_map(|(addr, p)| p.op.as_ref().map(|op| (addr, op, p.client.waiting_for())))
            .map(|(addr, op, node)| {
                format!("process {addr}: {} {:?} at node {node:?}", op.op.name(), op.target)
            })
            .collect();
        if pending.is_empty() { "nothing in flight".to_string() } else { pending.join("; ") }
    }

    /// No new operations from now on; once the clients are idle a fresh
    /// client reads every key, and each read must succeed.
    pub fn finish(&mut self, now: Time, rng: &mut Rng, out: &mut ClientOut) {
        self.finishing = true;
        self.maybe_start_final_reads(now, rng, out);
    }

    fn spawn(&mut self, now: Time, rng: &mut Rng, final_reads: Option<Vec<Target>>, out: &mut ClientOut) {
        let addr = self.next_addr;
        self.next_addr += 1;
        let session = SessionId((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
        let start_at = rng.below(self.members.len() as u64) as usize;
        // The final reader must reach any live node, so it is never pinned.
        let pinned = final_reads.is_none() && rng.below(100) < self.plan.pinned_percent;
        let pin = pinned.then(|| self.members.get(start_at).copied()).flatten();
        let spread = rng.below(100) < self.plan.spread_percent;
        let routing = if spread { Routing::Spread { start_at } } else { Routing::Home };
        let client = ClientMachine::new(self.members.clone(), pin, session, routing);
        let process =
            Process { client, op: None, writes: 0, known: BTreeMap::new(), generation: 0, final_reads };
        self.clients.insert(addr, process);
        out.wakes.push((addr, 0, now.plus_micros(rng.range(0, self.plan.think_us_max))));
    }

    fn maybe_start_final_reads(&mut self, now: Time, rng: &mut Rng, out: &mut ClientOut) {
        let idle = self.clients.values().all(|p| p.op.is_none() && p.final_reads.is_none());
        if self.finishing && idle {
            // Every client that is idle now stays idle: forget them.
            self.clients.clear();
            let registers = (0..self.keys.used).map(Target::Register);
            let reads = registers.chain((0..self.plan.lists).map(Target::List)).collect();
            self.spawn(now, rng, Some(reads), out);
        }
    }

    pub fn on_wake(
        &mut self,
        now: Time,
        rng: &mut Rng,
        addr: ClientAddr,
        generation: u64,
        out: &mut ClientOut,
    ) {
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        if process.generation != generation {
            return;
        }
        if process.op.is_none() {
            return self.next_op(now, rng, addr, out);
        }
        process.client.handle_timeout(now);
        self.after_step(now, rng, addr, out);
    }

    /// A datagram reached client `addr` from node `from`.
    pub fn on_reply(
        &mut self,
        now: Time,
        rng: &mut Rng,
        addr: ClientAddr,
        from: NodeId,
        msg: Message,
        out: &mut ClientOut,
    ) {
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        process.client.handle_message(now, from, msg);
        self.after_step(now, rng, addr, out);
    }

    /// Sends what the client wants sent; completes its operation if it
    /// ended, else wakes it when it next has something to do.
    fn after_step(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, out: &mut ClientOut) {
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        while let Some((node, msg)) = process.client.poll_transmit() {
            out.sends.push((addr, node, msg));
        }
        if let Some(ending) = process.client.poll_ending() {
            return self.complete(now, rng, addr, ending, out);
        }
        if let Some(at) = process.client.poll_timeout() {
            process.generation += 1;
            out.wakes.push((addr, process.generation, at));
        }
    }
}

impl Workload {
    fn next_op(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, out: &mut ClientOut) {
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        let (op, target) = match process.final_reads.as_mut() {
            Some(left) => match left.pop() {
                Some(target) => (Op::Read, target),
                None => {
                    self.finished = true;
                    return;
                }
            },
            // Finishing: this client stays idle.
            None if self.finishing => return,
            None if self.plan.lists > 0 && rng.below(100) < self.plan.append_percent => {
                let list = rng.below(self.plan.lists);
                (Op::Append(process.fresh_value(addr)), Target::List(list))
            }
            None => {
                let key = self.keys.pick(rng);
                (process.choose_op(addr, rng, key), Target::Register(key))
            }
        };
        self.invoke(now, rng, addr, op, target, out);
    }

    fn invoke(
        &mut self,
        now: Time,
        rng: &mut Rng,
        addr: ClientAddr,
        op: Op,
        target: Target,
        out: &mut ClientOut,
    ) {
        let line = match target {
            Target::Register(key) => {
                self.history.push(history_line(addr, "invoke", op.name(), key, &op.json_value()));
                Some(self.history.len() - 1)
            }
            Target::List(_) => None,
        };
        self.invoked += 1;
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        let change = op.change();
        process.op = Some(Pending { op, target, invoked: now, line });
        // The process is idle here, so the machine is too.
        let _ = process.client.start(now, target.key(), change, self.plan.timeout_ms);
        self.after_step(now, rng, addr, out);
    }

    fn complete(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, ending: Ending, out: &mut ClientOut) {
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        let Some(pending) = process.op.take() else {
            return;
        };
        let judged = judge(&pending.op, &ending);
        if let Ending::Done(answer) = &ending {
            let key = pending.target.key();
            let value = answer.value_known.then(|| answer.value.clone());
            if let Err(v) = self.descent.ack(&key, pending.invoked, now, answer.version, value) {
                out.violations.push(v);
            }
            if let Target::Register(k) = pending.target {
                match answer.value_known {
                    true => process.known.insert(k, text(&answer.value)),
                    false => process.known.remove(&k),
                };
            }
        }
        let is_final = process.final_reads.is_some();
        // Every node said "not now" (overloaded, catching up, stopping) and
        // will not run this copy: an honest answer. After healing the key
        // must still be read in time, so read it again; the liveness
        // deadline catches a cluster that never gets there.
        let busy = matches!(
            ending,
            Ending::NotRun(NotRun::Refused(
                Refusal::Overloaded | Refusal::CatchingUp | Refusal::ShuttingDown | Refusal::NotMember
            ))
        ) || (self.retry_no_quorum && matches!(ending, Ending::NotRun(NotRun::NoQuorum)));
        if let (true, Some(left)) = (busy, process.final_reads.as_mut()) {
            left.push(pending.target);
        } else if is_final && judged.kind != "ok" {
            out.violations.push(format!(
                "t={}us liveness: after healing, the read of {:?} ended {} ({ending:?})",
                now.0, pending.target, judged.kind
            ));
        }
        process.generation += 1;
        let generation = process.generation;
        self.record(addr, &pending, &judged, &ending, &mut out.violations);
        self.count(judged.kind);
        if let (Target::Register(key), "info") = (pending.target, judged.kind) {
            self.keys.note_unknown(key);
        }
        if judged.kind == "info" {
            self.clients.remove(&addr);
            if !self.finishing {
                self.spawn(now, rng, None, out);
            }
        } else {
            let think = if is_final { 0 } else { rng.range(0, self.plan.think_us_max) };
            out.wakes.push((addr, generation, now.plus_micros(think)));
        }
        self.maybe_start_final_reads(now, rng, out);
    }

    /// Writes the completion into the history (registers) or the lists'
    /// books (appends, and the final read of a list).
    fn record(
        &mut self,
        addr: ClientAddr,
        pending: &Pending,
        judged: &Judged,
        ending: &Ending,
        violations: &mut Vec<String>,
    ) {
        match (pending.target, &pending.op) {
            (Target::Register(key), op) => {
                if matches!(op, Op::Cas { .. }) && !judged.ran {
                    // The checker reads a failed CAS as one that found another
                    // value; one that never ran observed nothing, and is left out.
                    if let Some(line) = pending.line {
                        self.history[line].clear();
                    }
                } else {
                    self.history.push(history_line(addr, judged.kind, op.name(), key, &judged.value));
                }
            }
            (Target::List(list), Op::Append(element)) => self.lists.append_ended(list, element, judged.kind),
            (Target::List(list), _) => {
                if let Ending::Done(answer) = ending {
                    violations.extend(self.lists.check_final(list, answer.value.as_ref()));
                }
            }
        }
    }

    fn count(&mut self, kind: &str) {
        match kind {
            "ok" => self.counts.ok += 1,
            "info" => self.counts.info += 1,
            _ => self.counts.fail += 1,
        }
    }
}

impl Process {
    fn choose_op(&mut self, addr: ClientAddr, rng: &mut Rng, key: u64) -> Op {
        match rng.below(100) {
            0..35 => Op::Read,
            35..65 => Op::Write(self.fresh_value(addr)),
            65..90 => {
                // Mostly the value last seen, so that many CAS succeed.
                let expect = if rng.chance(0.1) { None } else { self.known.get(&key).cloned().flatten() };
                Op::Cas { expect, new: self.fresh_value(addr) }
            }
            _ => Op::Delete,
        }
    }

    /// A value no other write uses, so a read names the write it saw.
    fn fresh_value(&mut self, addr: ClientAddr) -> String {
        self.writes += 1;
        format!("c{addr}-{}", self.writes)
    }
}

/// What a process makes of how its operation ended.
struct Judged {
    /// The history's completion type: ok, fail or info.
    kind: &'static str,
    /// The completion's `value` field.
    value: String,
    /// The operation may have run.
    ran: bool,
}

fn judge(op: &Op, ending: &Ending) -> Judged {
    let mut judged = Judged { kind: "fail", value: op.json_value(), ran: true };
    match ending {
        Ending::Done(answer) => {
            if *op == Op::Read {
                judged.value = json_str(text(&answer.value).as_deref());
            }
            judged.kind = if answer.precondition_held { "ok" } else { "fail" };
        }
        Ending::NotRun(_) => judged.ran = false,
        Ending::Unknown(_) => judged.kind = "info",
    }
    judged
}

pub fn key_name(key: u64) -> Key {
    Key(format!("k{key}").into_bytes())
}

fn history_line(process: ClientAddr, kind: &str, f: &str, key: u64, value: &str) -> String {
    format!(
        "{{\"process\":{process},\"type\":\"{kind}\",\"f\":\"{f}\",\"key\":\"k{key}\",\"value\":{value}}}\n"
    )
}
