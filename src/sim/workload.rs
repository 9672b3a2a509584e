//! The simulated clients and the history they write.
//!
//! Each process runs one operation at a time through a `SimClient`, which
//! behaves like `client::Client`. An operation whose outcome the client
//! cannot know is indeterminate: it goes into the history as `info`, and the
//! process retires; a fresh process takes its place.
//!
//! The history uses the checker's JSON Lines format (Jepsen conventions),
//! with a unique value per write so that a read names the write it saw.

use super::client::{Ending, Sends, SimClient};
use super::invariants::Descent;
use super::net::ClientAddr;
use crate::change::Change;
use crate::core::rng::Rng;
use crate::types::{Key, NodeId, RegisterState, Time, Value};
use crate::wire::Message;
use std::collections::BTreeMap;

/// The workload of one seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadPlan {
    pub clients: u64,
    /// Keys in use at once.
    pub keys: u64,
    /// Operations a key takes before a fresh key replaces it, so that no
    /// key's history grows beyond what the checker can search (Jepsen's
    /// independent keys).
    pub ops_per_key: u64,
    pub timeout_ms: u64,
    pub think_us_max: u64,
}

impl WorkloadPlan {
    pub fn choose(rng: &mut Rng) -> WorkloadPlan {
        WorkloadPlan {
            clients: rng.range(2, 6),
            keys: rng.range(1, 5),
            ops_per_key: rng.range(30, 300),
            timeout_ms: rng.range(500, 5000),
            think_us_max: rng.range(0, 20_000),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write(String),
    Cas { expect: Option<String>, new: String },
    Delete,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write(_) => "write",
            Op::Cas { .. } => "cas",
            Op::Delete => "delete",
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
        }
    }

    /// The invoke's `value` field.
    fn json_value(&self) -> String {
        match self {
            Op::Read | Op::Delete => "null".to_string(),
            Op::Write(v) => json_str(Some(v)),
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

fn value_text(state: &RegisterState) -> Option<String> {
    state.value.as_ref().map(|v| String::from_utf8_lossy(&v.0).into_owned())
}

/// The operation a process has in the history, awaiting its completion.
struct Pending {
    op: Op,
    key: u64,
    invoked: Time,
    /// Index of the invoke line in the history.
    line: usize,
}

/// One client process of the history.
struct Process {
    client: SimClient,
    op: Option<Pending>,
    writes: u64,
    /// The last value this process saw per key: what its CAS expects.
    known: BTreeMap<u64, Option<String>>,
    /// Generation of the pending wake-up; older wake-ups are stale.
    generation: u64,
    /// The reader that checks liveness at the end: the keys it has yet to read.
    final_keys: Option<Vec<u64>>,
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

/// The keys operations go to.
struct Keys {
    /// The keys in use, and how many operations each has taken.
    active: Vec<(u64, u64)>,
    /// Keys used so far: `0..used`.
    used: u64,
    /// Operations a key takes before it makes way for a fresh one.
    ops_max: u64,
}

impl Keys {
    /// A key in use for the next operation.
    fn pick(&mut self, rng: &mut Rng) -> u64 {
        let slot = rng.below(self.active.len() as u64) as usize;
        let Some((key, ops)) = self.active.get_mut(slot) else {
            return 0;
        };
        if *ops >= self.ops_max {
            *key = self.used;
            *ops = 0;
            self.used += 1;
        }
        *ops += 1;
        *key
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
    finishing: bool,
    finished: bool,
}

impl Workload {
    pub fn new(plan: WorkloadPlan, members: Vec<NodeId>, ops_target: u64) -> Workload {
        let keys = Keys {
            active: (0..plan.keys).map(|k| (k, 0)).collect(),
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
            finishing: false,
            finished: false,
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

    /// What is still running, for a liveness report.
    pub fn describe_pending(&self) -> String {
        let pending: Vec<String> = self
            .clients
            .iter()
            .filter_map(|(addr, p)| p.op.as_ref().map(|op| (addr, op, p.client.node())))
            .map(|(addr, op, node)| format!("process {addr}: {} k{} at node {node:?}", op.op.name(), op.key))
            .collect();
        if pending.is_empty() { "nothing in flight".to_string() } else { pending.join("; ") }
    }

    /// No new operations from now on; once the clients are idle a fresh
    /// client reads every key, and each read must succeed.
    pub fn finish(&mut self, now: Time, rng: &mut Rng, out: &mut ClientOut) {
        self.finishing = true;
        self.maybe_start_final_reads(now, rng, out);
    }

    fn spawn(&mut self, now: Time, rng: &mut Rng, final_keys: Option<Vec<u64>>, out: &mut ClientOut) {
        let addr = self.next_addr;
        self.next_addr += 1;
        let first = rng.below(self.members.len() as u64) as usize;
        let client = SimClient::new(self.members.clone(), first);
        let process =
            Process { client, op: None, writes: 0, known: BTreeMap::new(), generation: 0, final_keys };
        self.clients.insert(addr, process);
        out.wakes.push((addr, 0, now.plus_micros(rng.range(0, self.plan.think_us_max))));
    }

    fn maybe_start_final_reads(&mut self, now: Time, rng: &mut Rng, out: &mut ClientOut) {
        let idle = self.clients.values().all(|p| p.op.is_none() && p.final_keys.is_none());
        if self.finishing && idle {
            // Every client that is idle now stays idle: forget them.
            self.clients.clear();
            self.spawn(now, rng, Some((0..self.keys.used).collect()), out);
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
        let mut sends = Sends::new();
        let ending = process.client.on_wake(now, &mut sends);
        self.after_step(now, rng, addr, sends, ending, out);
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
        let mut sends = Sends::new();
        let ending = process.client.on_message(now, from, msg, &mut sends);
        self.after_step(now, rng, addr, sends, ending, out);
    }

    /// Sends what the client sent; completes its operation if it ended,
    /// else wakes it when it next has something to do.
    fn after_step(
        &mut self,
        now: Time,
        rng: &mut Rng,
        addr: ClientAddr,
        sends: Sends,
        ending: Option<Ending>,
        out: &mut ClientOut,
    ) {
        out.sends.extend(sends.into_iter().map(|(node, msg)| (addr, node, msg)));
        if let Some(ending) = ending {
            return self.complete(now, rng, addr, ending, out);
        }
        if let Some(process) = self.clients.get_mut(&addr)
            && let Some(at) = process.client.wake_at()
        {
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
        let (op, key) = match process.final_keys.as_mut() {
            Some(left) => match left.pop() {
                Some(key) => (Op::Read, key),
                None => {
                    self.finished = true;
                    return;
                }
            },
            // Finishing: this client stays idle.
            None if self.finishing => return,
            None => {
                let key = self.keys.pick(rng);
                (process.choose_op(addr, rng, key), key)
            }
        };
        self.invoke(now, rng, addr, op, key, out);
    }

    fn invoke(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, op: Op, key: u64, out: &mut ClientOut) {
        let deadline = now.plus_millis(self.plan.timeout_ms);
        let line = self.history.len();
        self.history.push(history_line(addr, "invoke", op.name(), key, &op.json_value()));
        self.invoked += 1;
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        let change = op.change();
        process.op = Some(Pending { op, key, invoked: now, line });
        let mut sends = Sends::new();
        let ending = process.client.start(now, key_name(key), change, deadline, &mut sends);
        self.after_step(now, rng, addr, sends, ending, out);
    }

    fn complete(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, ending: Ending, out: &mut ClientOut) {
        let Some(process) = self.clients.get_mut(&addr) else {
            return;
        };
        let Some(pending) = process.op.take() else {
            return;
        };
        let judged = judge(&pending.op, ending);
        if let Some(state) = &judged.acked {
            if let Err(v) = self.descent.ack(&key_name(pending.key), pending.invoked, now, state) {
                out.violations.push(v);
            }
            process.known.insert(pending.key, value_text(state));
        }
        let is_final = process.final_keys.is_some();
        if is_final && judged.kind != "ok" {
            out.violations.push(format!(
                "t={}us liveness: after healing, the read of k{} ended {}",
                now.0, pending.key, judged.kind
            ));
        }
        process.generation += 1;
        let generation = process.generation;
        if matches!(pending.op, Op::Cas { .. }) && !judged.ran {
            // The checker reads a failed CAS as one that found another
            // value; one that never ran observed nothing, and is left out.
            self.history[pending.line].clear();
        } else {
            self.history.push(history_line(addr, judged.kind, pending.op.name(), pending.key, &judged.value));
        }
        self.count(judged.kind);
        if judged.retire {
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
    /// The history's completion type.
    kind: &'static str,
    /// The completion's `value` field.
    value: String,
    /// The state acknowledged, if any.
    acked: Option<RegisterState>,
    /// The outcome is unknown: the process retires.
    retire: bool,
    /// The operation may have run.
    ran: bool,
}

fn judge(op: &Op, ending: Ending) -> Judged {
    let mut judged = Judged { kind: "fail", value: op.json_value(), acked: None, retire: false, ran: true };
    match ending {
        Ending::Done { state, precondition_held } => {
            if *op == Op::Read {
                judged.value = json_str(value_text(&state).as_deref());
            }
            judged.kind = if precondition_held { "ok" } else { "fail" };
            judged.acked = Some(state);
        }
        Ending::NotRun => judged.ran = false,
        Ending::Unknown => (judged.kind, judged.retire) = ("info", true),
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
