//! One simulated client process, following `client::Client::execute` step
//! by step in virtual time: find a node (the last one that answered, else
//! status pings round after round, which also tell a node's incarnation),
//! send the request naming that incarnation, retransmit it to the same node
//! with the same id until a reply or the deadline, and decide from the
//! reply whether to stop, retry elsewhere, or give up not knowing.

use crate::change::Change;
use crate::limits;
use crate::types::{Key, NodeId, RegisterState, RequestId, Time};
use crate::wire::{Message, Outcome, Refusal};

/// `client.rs`: how long a status ping waits for its answer ...
const PROBE_TIMEOUT_US: u64 = 300_000;
/// ... how often an unanswered datagram is sent again ...
const RETRANSMIT_US: u64 = 250_000;
/// ... and the time kept back from the node's budget for its answer.
const REPLY_MARGIN_US: u64 = 150_000;

/// How an operation ended, as far as the client can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    Done {
        state: RegisterState,
        precondition_held: bool,
    },
    /// Nothing ran: no accept was sent, the node refused it, or no node
    /// answered in time.
    NotRun,
    /// It may or may not have taken effect.
    Unknown,
}

enum Step {
    /// Waiting for node `index` to answer status ping `id` until `until`;
    /// `probing_current` when it is the node that answered last.
    Ping { index: usize, id: RequestId, until: Time, next_send: Time, probing_current: bool },
    /// The request `id` is at node `index`.
    Request { index: usize, id: RequestId, next_send: Time, request: Message },
}

struct Operation {
    key: Key,
    change: Change,
    deadline: Time,
    tried: Vec<NodeId>,
    /// Where the round of pings goes on.
    cursor: usize,
    step: Step,
}

pub struct SimClient {
    members: Vec<NodeId>,
    /// The node that answered last; tried first next time.
    current: Option<usize>,
    /// Each node's incarnation, as its last status reply told.
    incarnations: Vec<Option<u64>>,
    next_id: u64,
    operation: Option<Operation>,
}

/// Messages a client sends: to which node, what.
pub type Sends = Vec<(NodeId, Message)>;

impl SimClient {
    /// A client that tries node `first` first, as `Client::new` picks one.
    pub fn new(members: Vec<NodeId>, first: usize) -> SimClient {
        let n = members.len();
        SimClient {
            current: Some(first % n.max(1)),
            incarnations: vec![None; n],
            members,
            next_id: 0,
            operation: None,
        }
    }

    /// `execute`: begins `change` on `key`, to end by `deadline`.
    pub fn start(
        &mut self,
        now: Time,
        key: Key,
        change: Change,
        deadline: Time,
        out: &mut Sends,
    ) -> Option<Ending> {
        let step =
            Step::Ping { index: 0, id: RequestId(0), until: now, next_send: now, probing_current: false };
        self.operation = Some(Operation { key, change, deadline, tried: Vec::new(), cursor: 0, step });
        self.pick(now, out)
    }

    /// The node of the request or ping in progress, for reports.
    pub fn node(&self) -> Option<NodeId> {
        let index = match self.operation.as_ref()?.step {
            Step::Ping { index, .. } | Step::Request { index, .. } => index,
        };
        self.members.get(index).copied()
    }

    /// When `on_wake` has something to do.
    pub fn wake_at(&self) -> Option<Time> {
        let op = self.operation.as_ref()?;
        Some(match op.step {
            Step::Ping { until, next_send, .. } => until.min(next_send),
            Step::Request { next_send, .. } => op.deadline.min(next_send),
        })
    }

    fn fresh_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn knows(&self, index: usize) -> bool {
        self.incarnations.get(index).is_some_and(Option::is_some)
    }

    /// Stops preferring node `index` and forgets its incarnation.
    fn forget(&mut self, index: usize) {
        if self.current == Some(index) {
            self.current = None;
        }
        if let Some(slot) = self.incarnations.get_mut(index) {
            *slot = None;
        }
    }

    fn end(&mut self, ending: Ending) -> Option<Ending> {
        self.operation = None;
        Some(ending)
    }
}

impl SimClient {
    /// `pick_node`: the last node that answered if its incarnation is
    /// known, else a status ping to it, else the next ping of the round.
    fn pick(&mut self, now: Time, out: &mut Sends) -> Option<Ending> {
        let knows_current = self.current.is_some_and(|i| self.knows(i));
        let op = self.operation.as_mut()?;
        if now >= op.deadline {
            return self.end(Ending::NotRun);
        }
        if let Some(i) = self.current {
            let id = self.members.get(i).copied().unwrap_or_default();
            if knows_current {
                return self.send_request(now, i, out);
            }
            if !op.tried.contains(&id) {
                return self.ping(now, i, true, out);
            }
            op.tried.push(id);
            self.current = None;
        }
        self.ping_next(now, out)
    }

    /// Round after round until the deadline, the nodes not tried yet first.
    fn ping_next(&mut self, now: Time, out: &mut Sends) -> Option<Ending> {
        let n = self.members.len();
        let op = self.operation.as_mut()?;
        if now >= op.deadline {
            return self.end(Ending::NotRun);
        }
        for _ in 0..=n {
            let i = op.cursor % n.max(1);
            op.cursor += 1;
            let id = self.members.get(i).copied().unwrap_or_default();
            if op.tried.contains(&id) && op.tried.len() < n {
                continue;
            }
            if !op.tried.contains(&id) {
                op.tried.push(id);
            }
            return self.ping(now, i, false, out);
        }
        self.end(Ending::NotRun)
    }

    fn ping(&mut self, now: Time, index: usize, probing_current: bool, out: &mut Sends) -> Option<Ending> {
        let id = self.fresh_id();
        let op = self.operation.as_mut()?;
        let until = now.plus_micros(PROBE_TIMEOUT_US).min(op.deadline);
        op.step = Step::Ping { index, id, until, next_send: now.plus_micros(RETRANSMIT_US), probing_current };
        out.push((self.members.get(index).copied().unwrap_or_default(), Message::StatusRequest { id }));
        None
    }

    /// `run_at`: the request, naming the incarnation the node told.
    fn send_request(&mut self, now: Time, index: usize, out: &mut Sends) -> Option<Ending> {
        let id = self.fresh_id();
        let incarnation = self.incarnations.get(index).copied().flatten().unwrap_or_default();
        let op = self.operation.as_mut()?;
        let budget_ms = op.deadline.micros_since(now).saturating_sub(REPLY_MARGIN_US) / 1000;
        let timeout_ms = budget_ms.clamp(1, limits::REQUEST_TIMEOUT_MS_MAX) as u32;
        let request =
            Message::Request { id, key: op.key.clone(), change: op.change.clone(), timeout_ms, incarnation };
        out.push((self.members.get(index).copied().unwrap_or_default(), request.clone()));
        op.step = Step::Request { index, id, next_send: now.plus_micros(RETRANSMIT_US), request };
        None
    }

    /// Time passed: retransmit, or give up a ping or the request.
    pub fn on_wake(&mut self, now: Time, out: &mut Sends) -> Option<Ending> {
        let op = self.operation.as_mut()?;
        let write = op.change.is_write();
        match &mut op.step {
            Step::Ping { index, until, probing_current, .. } if now >= *until => {
                let (index, probing_current) = (*index, *probing_current);
                if probing_current {
                    op.tried.push(self.members.get(index).copied().unwrap_or_default());
                    self.current = None;
                }
                self.ping_next(now, out)
            }
            Step::Request { index, .. } if now >= op.deadline => {
                let index = *index;
                self.forget(index);
                // A silent node may have run a write; a read asks again.
                if write { self.end(Ending::Unknown) } else { self.pick(now, out) }
            }
            Step::Ping { index, id, next_send, .. } if now >= *next_send => {
                *next_send = now.plus_micros(RETRANSMIT_US);
                out.push((
                    self.members.get(*index).copied().unwrap_or_default(),
                    Message::StatusRequest { id: *id },
                ));
                None
            }
            Step::Request { index, next_send, request, .. } if now >= *next_send => {
                *next_send = now.plus_micros(RETRANSMIT_US);
                out.push((self.members.get(*index).copied().unwrap_or_default(), request.clone()));
                None
            }
            _ => None,
        }
    }

    /// A datagram from node `from`; answers to anything but the ping or
    /// request in progress, or from another node, are ignored.
    pub fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut Sends) -> Option<Ending> {
        let op = self.operation.as_ref()?;
        let (index, expected) = match op.step {
            Step::Ping { index, id, .. } | Step::Request { index, id, .. } => (index, id),
        };
        if self.members.get(index) != Some(&from) {
            return None;
        }
        match (msg, &op.step) {
            (Message::StatusReply { id, status }, Step::Ping { probing_current, .. }) if id == expected => {
                if let Some(slot) = self.incarnations.get_mut(index) {
                    *slot = Some(status.incarnation);
                }
                if !probing_current {
                    self.current = Some(index);
                }
                self.send_request(now, index, out)
            }
            (Message::Reply { id, outcome }, Step::Request { .. }) if id == expected => {
                self.on_outcome(now, index, outcome, out)
            }
            _ => None,
        }
    }

    /// `execute`'s reading of an answer.
    fn on_outcome(&mut self, now: Time, index: usize, outcome: Outcome, out: &mut Sends) -> Option<Ending> {
        let (deadline, write) = self.operation.as_ref().map(|op| (op.deadline, op.change.is_write()))?;
        match outcome {
            Outcome::Done { state, precondition_held } => self.end(Ending::Done { state, precondition_held }),
            Outcome::Unavailable { maybe_applied: true } => self.end(Ending::Unknown),
            Outcome::Unavailable { maybe_applied: false } => self.end(Ending::NotRun),
            Outcome::Refused(Refusal::Overloaded | Refusal::ShuttingDown) => {
                self.forget(index);
                if now >= deadline { self.end(Ending::NotRun) } else { self.pick(now, out) }
            }
            // A copy of the request may have run on the node's previous
            // incarnation; a read asks again.
            Outcome::Refused(Refusal::Restarted) => {
                self.forget(index);
                if write { self.end(Ending::Unknown) } else { self.pick(now, out) }
            }
            Outcome::Refused(_) => self.end(Ending::NotRun),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Value;
    use crate::wire::NodeStatus;

    fn client() -> SimClient {
        SimClient::new(vec![NodeId(1), NodeId(2), NodeId(3)], 1)
    }

    fn status_reply(id: RequestId, incarnation: u64) -> Message {
        let status = NodeStatus {
            node: NodeId(2),
            incarnation,
            keys: 0,
            requests_in_flight: 0,
            uptime_ms: 0,
            log_bytes: 0,
        };
        Message::StatusReply { id, status }
    }

    /// Starts `change` at time 0 with a 1 s deadline and answers the status
    /// ping of node 2 (incarnation 77); returns the request sent.
    fn started(c: &mut SimClient, change: Change) -> Message {
        let mut out = Sends::new();
        assert_eq!(c.start(Time(0), Key::from("k"), change, Time::from_millis(1000), &mut out), None);
        let [(NodeId(2), Message::StatusRequest { id })] = out.as_slice() else { panic!("no ping: {out:?}") };
        let id = *id;
        out.clear();
        assert_eq!(c.on_message(Time(10), NodeId(2), status_reply(id, 77), &mut out), None);
        let [(NodeId(2), request @ Message::Request { incarnation: 77, timeout_ms: 849, .. })] =
            out.as_slice()
        else {
            panic!("no request naming the incarnation: {out:?}")
        };
        request.clone()
    }

    fn reply_to(request: &Message, outcome: Outcome) -> Message {
        let Message::Request { id, .. } = request else { panic!("not a request") };
        Message::Reply { id: *id, outcome }
    }

    #[test]
    fn a_request_is_retransmitted_unchanged_and_its_reply_ends_it() {
        let mut c = client();
        let request = started(&mut c, Change::Read);
        let mut out = Sends::new();
        assert_eq!(c.wake_at(), Some(Time(250_010)));
        assert_eq!(c.on_wake(Time(250_010), &mut out), None);
        assert_eq!(out, vec![(NodeId(2), request.clone())]);
        let done = Outcome::Done { state: RegisterState::default(), precondition_held: true };
        let ending = c.on_message(Time(300_000), NodeId(2), reply_to(&request, done), &mut out);
        assert_eq!(ending, Some(Ending::Done { state: RegisterState::default(), precondition_held: true }));
    }

    #[test]
    fn a_restarted_node_leaves_a_write_unknown_and_a_read_asks_again() {
        let mut c = client();
        let request = started(&mut c, Change::Put(Value::from("v")));
        let refused = reply_to(&request, Outcome::Refused(Refusal::Restarted));
        assert_eq!(c.on_message(Time(20), NodeId(2), refused, &mut Sends::new()), Some(Ending::Unknown));
        let mut c = client();
        let request = started(&mut c, Change::Read);
        let refused = reply_to(&request, Outcome::Refused(Refusal::Restarted));
        let mut out = Sends::new();
        assert_eq!(c.on_message(Time(20), NodeId(2), refused, &mut out), None);
        assert!(matches!(out.as_slice(), [(_, Message::StatusRequest { .. })]), "pings again: {out:?}");
    }

    #[test]
    fn silence_leaves_a_write_unknown() {
        let mut c = client();
        started(&mut c, Change::Delete);
        assert_eq!(c.on_wake(Time::from_millis(1000), &mut Sends::new()), Some(Ending::Unknown));
    }

    #[test]
    fn answers_from_other_nodes_or_to_other_requests_are_ignored() {
        let mut c = client();
        let request = started(&mut c, Change::Read);
        let done = Outcome::Done { state: RegisterState::default(), precondition_held: true };
        let mut out = Sends::new();
        assert_eq!(c.on_message(Time(20), NodeId(3), reply_to(&request, done.clone()), &mut out), None);
        let other = Message::Reply { id: RequestId(999), outcome: done };
        assert_eq!(c.on_message(Time(20), NodeId(2), other, &mut out), None);
    }

    #[test]
    fn unanswered_pings_go_round_the_nodes_until_the_deadline() {
        let mut c = client();
        let mut out = Sends::new();
        c.start(Time(0), Key::from("k"), Change::Read, Time::from_millis(1000), &mut out);
        let mut pinged = Vec::new();
        let mut now = Time(0);
        while let Some(at) = c.wake_at() {
            now = at;
            out.clear();
            if let Some(ending) = c.on_wake(now, &mut out) {
                assert_eq!(ending, Ending::NotRun);
                break;
            }
            pinged.extend(
                out.iter().filter(|(_, m)| matches!(m, Message::StatusRequest { .. })).map(|(n, _)| *n),
            );
        }
        assert_eq!(now, Time::from_millis(1000));
        assert!(pinged.contains(&NodeId(1)) && pinged.contains(&NodeId(3)), "{pinged:?}");
    }
}
