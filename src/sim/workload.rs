//! The simulated clients and the history they write.
//!
//! Each client behaves like `client::Client`: one operation in flight, sent
//! to one node and retransmitted there with the same request id every
//! 250 ms until a reply or the deadline. An answer the client cannot
//! interpret (no quorum after an accept was sent, or silence to a write) is
//! indeterminate: it goes into the history as `info`, and the client
//! retires; a fresh client (a new process) takes its place.
//!
//! The history uses the checker's JSON Lines format (Jepsen conventions),
//! with a unique value per write so that a read names the write it saw.

use super::invariants::Descent;
use super::net::ClientAddr;
use crate::change::Change;
use crate::core::rng::Rng;
use crate::types::{Key, NodeId, RegisterState, RequestId, Time, Value};
use crate::wire::{Message, Outcome};
use std::collections::BTreeMap;

/// `client.rs`: how often an unanswered request is sent again ...
const RETRANSMIT_US: u64 = 250_000;
/// ... and the time kept back from the node's budget for its answer.
const REPLY_MARGIN_US: u64 = 150_000;

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

struct InFlight {
    op: Op,
    key: u64,
    id: RequestId,
    node: NodeId,
    invoked: Time,
    deadline: Time,
    next_send: Time,
    request: Message,
    /// Index of the invoke line in the history.
    line: usize,
}

struct SimClient {
    /// The node that answered last; tried first next time.
    node: Option<NodeId>,
    next_id: u64,
    writes: u64,
    /// The last value this client saw per key: what its CAS expects.
    known: BTreeMap<u64, Option<String>>,
    op: Option<InFlight>,
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

/// How an operation in flight ended.
enum Ending {
    Reply(Outcome),
    Silent,
}

pub struct Workload {
    plan: WorkloadPlan,
    members: Vec<NodeId>,
    ops_target: u64,
    clients: BTreeMap<ClientAddr, SimClient>,
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
            .filter_map(|(addr, c)| c.op.as_ref().map(|f| (addr, f)))
            .map(|(addr, f)| format!("process {addr}: {} k{} at node {}", f.op.name(), f.key, f.node))
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
        let client = SimClient {
            node: None,
            next_id: 0,
            writes: 0,
            known: BTreeMap::new(),
            op: None,
            generation: 0,
            final_keys,
        };
        self.clients.insert(addr, client);
        out.wakes.push((addr, 0, now.plus_micros(rng.range(0, self.plan.think_us_max))));
    }

    fn maybe_start_final_reads(&mut self, now: Time, rng: &mut Rng, out: &mut ClientOut) {
        let idle = self.clients.values().all(|c| c.op.is_none() && c.final_keys.is_none());
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
        let Some(client) = self.clients.get_mut(&addr) else {
            return;
        };
        if client.generation != generation {
            return;
        }
        let Some(flight) = client.op.as_mut() else {
            return self.next_op(now, rng, addr, out);
        };
        if now >= flight.deadline {
            return self.complete(now, rng, addr, Ending::Silent, out);
        }
        if now >= flight.next_send {
            out.sends.push((addr, flight.node, flight.request.clone()));
            flight.next_send = now.plus_micros(RETRANSMIT_US);
        }
        out.wakes.push((addr, generation, flight.next_send.min(flight.deadline)));
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
        let Message::Reply { id, outcome } = msg else {
            return;
        };
        let Some(flight) = self.clients.get(&addr).and_then(|c| c.op.as_ref()) else {
            return;
        };
        // `client.rs` ignores answers from other nodes and to other requests.
        if flight.id == id && flight.node == from {
            self.complete(now, rng, addr, Ending::Reply(outcome), out);
        }
    }
}

impl Workload {
    fn next_op(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, out: &mut ClientOut) {
        let Some(client) = self.clients.get_mut(&addr) else {
            return;
        };
        let (op, key) = match client.final_keys.as_mut() {
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
                (client.choose_op(addr, rng, key), key)
            }
        };
        self.invoke(now, rng, addr, op, key, out);
    }

    fn invoke(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, op: Op, key: u64, out: &mut ClientOut) {
        let timeout_us = self.plan.timeout_ms * 1000;
        let Some(client) = self.clients.get_mut(&addr) else {
            return;
        };
        let node = client.node.unwrap_or_else(|| pick(&self.members, rng));
        client.node = Some(node);
        client.next_id += 1;
        let id = RequestId(client.next_id);
        let deadline = now.plus_micros(timeout_us);
        let budget_ms = timeout_us.saturating_sub(REPLY_MARGIN_US) / 1000;
        let timeout_ms = budget_ms.clamp(1, crate::limits::REQUEST_TIMEOUT_MS_MAX) as u32;
        let request = Message::Request { id, key: key_name(key), change: op.change(), timeout_ms };
        let invoke_line = self.history.len();
        self.history.push(line(addr, "invoke", op.name(), key, &op.json_value()));
        self.invoked += 1;
        out.sends.push((addr, node, request.clone()));
        let next_send = now.plus_micros(RETRANSMIT_US);
        out.wakes.push((addr, client.generation, next_send.min(deadline)));
        let flight =
            InFlight { op, key, id, node, invoked: now, deadline, next_send, request, line: invoke_line };
        client.op = Some(flight);
    }

    fn complete(&mut self, now: Time, rng: &mut Rng, addr: ClientAddr, ending: Ending, out: &mut ClientOut) {
        let Some(client) = self.clients.get_mut(&addr) else {
            return;
        };
        let Some(flight) = client.op.take() else {
            return;
        };
        let judged = judge(&flight.op, ending);
        if let Some(state) = &judged.acked {
            if let Err(v) = self.descent.ack(&key_name(flight.key), flight.invoked, now, state) {
                out.violations.push(v);
            }
            client.known.insert(flight.key, value_text(state));
        }
        if judged.forget_node {
            client.node = None;
        }
        let is_final = client.final_keys.is_some();
        if is_final && judged.kind != "ok" {
            out.violations.push(format!(
                "t={}us liveness: after healing, the read of k{} at node {} ended {}",
                now.0, flight.key, flight.node, judged.kind
            ));
        }
        client.generation += 1;
        let generation = client.generation;
        if matches!(flight.op, Op::Cas { .. }) && !judged.ran {
            // The checker reads a failed CAS as one that found another
            // value; one that never ran observed nothing, and is left out.
            self.history[flight.line].clear();
        } else {
            self.history.push(line(addr, judged.kind, flight.op.name(), flight.key, &judged.value));
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

impl SimClient {
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

/// What a client makes of how its operation ended.
struct Judged {
    /// The history's completion type.
    kind: &'static str,
    /// The completion's `value` field.
    value: String,
    /// The state acknowledged, if any.
    acked: Option<RegisterState>,
    /// The outcome is unknown: the client retires.
    retire: bool,
    /// The node may have run the operation.
    ran: bool,
    /// Try another node next time.
    forget_node: bool,
}

/// Reads an ending as `client.rs` does.
fn judge(op: &Op, ending: Ending) -> Judged {
    let write = *op != Op::Read;
    let mut judged = Judged {
        kind: "fail",
        value: op.json_value(),
        acked: None,
        retire: false,
        ran: true,
        forget_node: false,
    };
    match ending {
        Ending::Reply(Outcome::Done { state, precondition_held }) => {
            if !write {
                judged.value = json_str(value_text(&state).as_deref());
            }
            judged.kind = if precondition_held { "ok" } else { "fail" };
            judged.acked = Some(state);
        }
        Ending::Reply(Outcome::Unavailable { maybe_applied: true }) if write => {
            (judged.kind, judged.retire) = ("info", true);
        }
        Ending::Reply(Outcome::Unavailable { .. }) => judged.ran = false,
        // Not run; `client.rs` moves on to another node.
        Ending::Reply(Outcome::Refused(_)) => (judged.ran, judged.forget_node) = (false, true),
        // A silent node may have run a write: its fate is unknown. A read
        // that was never answered had no effect.
        Ending::Silent if write => (judged.kind, judged.retire, judged.forget_node) = ("info", true, true),
        Ending::Silent => judged.forget_node = true,
    }
    judged
}

fn pick(members: &[NodeId], rng: &mut Rng) -> NodeId {
    members.get(rng.below(members.len() as u64) as usize).copied().unwrap_or(NodeId(1))
}

pub fn key_name(key: u64) -> Key {
    Key(format!("k{key}").into_bytes())
}

fn line(process: ClientAddr, kind: &str, f: &str, key: u64, value: &str) -> String {
    format!(
        "{{\"process\":{process},\"type\":\"{kind}\",\"f\":\"{f}\",\"key\":\"k{key}\",\"value\":{value}}}\n"
    )
}
