//! The cluster as a stateright [`Model`]: its state, its actions, and the
//! properties the checker tests.

use std::collections::VecDeque;

use stateright::{Model, Path, Property};

use crate::node::{Accepted, Ballot, Life, Node, NodeId, Nodes, Snapshot, Value};

/// Safety: no two different values are ever chosen.
pub const AGREEMENT: &str = "agreement";
/// Some value is chosen (the model is not vacuous).
pub const SOME_VALUE_CHOSEN: &str = "a value is chosen";
/// The wiped node, voting again, is part of a quorum that chooses a value.
pub const WIPED_NODE_IN_CHOOSING_QUORUM: &str = "the wiped node votes in a choosing quorum";

/// What the wiped node does before it votes again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// It votes at once with its empty state.
    Naive,
    /// It obtains a fresh epoch, fences its peers and rejoins from a
    /// quorum of their snapshots.
    Rejoin,
    /// As `Rejoin`, except that no acceptor installs the epoch as a floor.
    MajorityNoFence,
}

/// How the network treats a message once delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Each message is delivered at most once, in any order.
    Unordered,
    /// Each message may be delivered any number of times, in any order.
    UnorderedDuplicating,
}

/// A message between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    Prepare(Ballot),
    Promise(Ballot, Accepted),
    /// A prepare or accept of `ballot` refused by the `promised` ballot.
    Reject {
        ballot: Ballot,
        promised: Ballot,
    },
    Accept(Ballot, Value),
    Fence(u8),
    Snapshot {
        epoch: u8,
        promised: Ballot,
        accepted: Accepted,
    },
}

/// A message in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    pub src: NodeId,
    pub dst: NodeId,
    pub msg: Msg,
}

/// An accept that happened, kept in the state as history: a wiped acceptor
/// forgets what it accepted, but what was chosen stays chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vote {
    pub ballot: Ballot,
    pub value: Value,
    pub acceptor: NodeId,
    /// Cast by the amnesiac node after its wipe.
    pub after_wipe: bool,
}

/// The state of the whole cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Node `id` is at index `id - 1`.
    pub nodes: Vec<Node>,
    /// Messages in flight, sorted; a multiset unless the network duplicates.
    pub network: Vec<Envelope>,
    /// Messages a node sent itself in the current step; empty between steps.
    pub loopback: VecDeque<Envelope>,
    /// Every accept so far, for the properties only.
    pub votes: Vec<Vote>,
    /// Whether the one wipe of the run has happened.
    pub wiped: bool,
    /// The epoch register: the last epoch issued.
    pub epochs_issued: u8,
}

/// A step of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A proposer starts an attempt: Prepare to every acceptor.
    Propose(NodeId),
    Deliver(Envelope),
    /// The amnesiac node loses its state.
    Wipe(NodeId),
    /// The wiped node takes a fresh epoch and sends Fence to its peers.
    ObtainEpoch(NodeId),
}

/// Single-decree paxos on `n` nodes, one of which may lose its state once.
#[derive(Clone, Debug)]
pub struct PaxosModel {
    pub n: u8,
    /// The nodes that propose, each with the number of attempts (ballots)
    /// it may start. Each proposes its own id as its value.
    pub proposers: Vec<(NodeId, u8)>,
    /// The node that may be wiped, once.
    pub amnesiac: NodeId,
    pub variant: Variant,
    pub network: Network,
    /// Whether a node handles its messages to itself within the step that
    /// sends them, as paxosd does, rather than through the network.
    pub loopback: bool,
    /// Whether messages that can no longer change anything are dropped.
    /// It only merges states; turning it off checks that it hides nothing.
    pub prune: bool,
}

impl PaxosModel {
    /// Three nodes; 1 and 2 propose, twice each; node 3 may be wiped.
    pub fn new(variant: Variant) -> PaxosModel {
        PaxosModel {
            n: 3,
            proposers: vec![(1, 2), (2, 2)],
            amnesiac: 3,
            variant,
            network: Network::Unordered,
            loopback: true,
            prune: true,
        }
    }

    /// A majority of the whole cluster.
    pub fn quorum(&self) -> usize {
        self.n as usize / 2 + 1
    }

    fn ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        1..=self.n
    }

    fn fenced(&self) -> bool {
        self.variant == Variant::Rejoin
    }

    fn can_propose(&self, state: &State, id: NodeId, attempts: u8) -> bool {
        let node = &state.nodes[id as usize - 1];
        node.votes() && node.proposer.attempts < attempts
    }

    /// Whether delivering the message could change anything. A node that
    /// does not vote acts on nothing but snapshots, so its other messages
    /// wait until it votes again (which includes them never arriving).
    fn deliverable(&self, state: &State, env: &Envelope) -> bool {
        let node = &state.nodes[env.dst as usize - 1];
        match (&node.life, env.msg) {
            (Life::Voting, Msg::Snapshot { .. }) => false,
            (Life::Voting, _) => true,
            (Life::Fencing { epoch, .. }, Msg::Snapshot { epoch: e, .. }) => *epoch == e,
            _ => false,
        }
    }

    /// Whether a message can no longer change anything. Dropping such
    /// messages merges states that differ only in them. A proposer's seen
    /// ballot and an acceptor's promise only grow, except when the wipe
    /// lowers them, so until the wipe nothing sent to the amnesiac is dead.
    fn dead(&self, state: &State, env: &Envelope) -> bool {
        if env.dst == self.amnesiac && !state.wiped {
            return false;
        }
        let dst = &state.nodes[env.dst as usize - 1];
        let (proposer, promise) = (&dst.proposer, dst.acceptor.effective_promise());
        match env.msg {
            // Neither the current attempt's ballot nor a future one's.
            Msg::Promise(ballot, _) => {
                let current = proposer.preparing.as_ref().is_some_and(|a| a.ballot == ballot);
                !current && ballot <= proposer.seen
            }
            // Rejects only feed the ballots of attempts to come.
            Msg::Reject { promised, .. } => promised <= proposer.seen || self.exhausted(state, env.dst),
            // Refused now, refused for ever, and the reject would be dead.
            Msg::Prepare(ballot) => ballot <= promise && self.exhausted(state, env.src),
            Msg::Accept(ballot, _) => ballot < promise && self.exhausted(state, env.src),
            // Late for a rejoin that is over (there is one wipe per run).
            Msg::Snapshot { .. } => dst.votes(),
            Msg::Fence(_) => false,
        }
    }

    /// Whether a node will start no more attempts.
    fn exhausted(&self, state: &State, id: NodeId) -> bool {
        let bound = self.proposers.iter().find(|(p, _)| *p == id).map_or(0, |&(_, n)| n);
        state.nodes[id as usize - 1].proposer.attempts >= bound
    }

    fn drop_dead(&self, state: &mut State) {
        if !self.prune {
            return;
        }
        let mut network = std::mem::take(&mut state.network);
        network.retain(|env| !self.dead(state, env));
        state.network = network;
    }

    /// Sends a message. One to the sender itself is handled within the
    /// same step, after the step's own work, as paxosd's loopback does.
    fn send(&self, state: &mut State, src: NodeId, dst: NodeId, msg: Msg) {
        let env = Envelope { src, dst, msg };
        if src == dst && self.loopback {
            state.loopback.push_back(env);
            return;
        }
        let at = state.network.partition_point(|e| *e < env);
        let duplicate = state.network.get(at) == Some(&env);
        if !(duplicate && self.network == Network::UnorderedDuplicating) {
            state.network.insert(at, env);
        }
    }

    fn broadcast(&self, state: &mut State, src: NodeId, msg: Msg) {
        for dst in self.ids() {
            self.send(state, src, dst, msg);
        }
    }

    fn take(&self, state: &mut State, env: &Envelope) {
        if self.network == Network::Unordered {
            let at = state.network.binary_search(env).expect("delivered message in flight");
            state.network.remove(at);
        }
    }

    fn propose(&self, state: &mut State, id: NodeId) {
        let ballot = state.nodes[id as usize - 1].proposer.start(id);
        self.broadcast(state, id, Msg::Prepare(ballot));
    }

    fn wipe(&self, state: &mut State, id: NodeId) {
        let then = match self.variant {
            Variant::Naive => Life::Voting,
            Variant::Rejoin | Variant::MajorityNoFence => Life::Wiped,
        };
        state.nodes[id as usize - 1].wipe(then);
        state.wiped = true;
    }

    /// The epoch register is linearizable, so taking an epoch is one step.
    fn obtain_epoch(&self, state: &mut State, id: NodeId) {
        state.epochs_issued += 1;
        let epoch = state.epochs_issued;
        let (from, merged) = Default::default();
        state.nodes[id as usize - 1].life = Life::Fencing { epoch, from, merged };
        for dst in self.ids().filter(|&d| d != id) {
            self.send(state, id, dst, Msg::Fence(epoch));
        }
    }

    fn deliver(&self, state: &mut State, env: Envelope) {
        self.take(state, &env);
        self.handle(state, env);
    }

    fn drain_loopback(&self, state: &mut State) {
        while let Some(env) = state.loopback.pop_front() {
            self.handle(state, env);
        }
    }

    fn handle(&self, state: &mut State, env: Envelope) {
        let Envelope { src, dst, msg } = env;
        let i = dst as usize - 1;
        match msg {
            Msg::Prepare(ballot) => {
                let reply = match state.nodes[i].acceptor.prepare(ballot) {
                    Ok(accepted) => Msg::Promise(ballot, accepted),
                    Err(promised) => Msg::Reject { ballot, promised },
                };
                self.send(state, dst, src, reply);
            }
            Msg::Promise(ballot, accepted) => {
                let quorum = self.quorum();
                let proposer = &mut state.nodes[i].proposer;
                if let Some((ballot, value)) = proposer.promise(src, ballot, accepted, quorum, dst) {
                    self.broadcast(state, dst, Msg::Accept(ballot, value));
                }
            }
            Msg::Reject { promised, .. } => state.nodes[i].proposer.reject(promised),
            Msg::Accept(ballot, value) => match state.nodes[i].acceptor.accept(ballot, value) {
                Ok(()) => {
                    let after_wipe = state.wiped && dst == self.amnesiac;
                    let vote = Vote { ballot, value, acceptor: dst, after_wipe };
                    if let Err(at) = state.votes.binary_search(&vote) {
                        state.votes.insert(at, vote);
                    }
                }
                Err(promised) => self.send(state, dst, src, Msg::Reject { ballot, promised }),
            },
            Msg::Fence(epoch) => self.fence(state, src, dst, epoch),
            Msg::Snapshot { epoch, promised, accepted } => {
                self.snapshot(state, src, dst, epoch, Snapshot { promised, accepted })
            }
        }
    }

    /// A peer installs the floor before it takes the snapshot, so nothing
    /// it accepts after the snapshot can be of an earlier epoch.
    fn fence(&self, state: &mut State, src: NodeId, dst: NodeId, epoch: u8) {
        let acceptor = &mut state.nodes[dst as usize - 1].acceptor;
        if self.fenced() {
            acceptor.floor = acceptor.floor.max(epoch);
        }
        let (promised, accepted) = (acceptor.promised, acceptor.accepted);
        self.send(state, dst, src, Msg::Snapshot { epoch, promised, accepted });
    }

    fn snapshot(&self, state: &mut State, src: NodeId, dst: NodeId, epoch: u8, snap: Snapshot) {
        let fenced = self.fenced();
        let quorum = self.quorum();
        let node = &mut state.nodes[dst as usize - 1];
        let Life::Fencing { from, merged, .. } = &mut node.life else { return };
        from.insert(src);
        *merged = merged.merge(snap);
        if from.len() >= quorum {
            let merged = *merged;
            node.rejoin(epoch, merged, fenced);
        }
    }

    /// The (ballot, value) pairs accepted by a quorum of distinct
    /// acceptors, each with whether the amnesiac's vote after its wipe is
    /// among them.
    pub fn chosen<'a>(&self, state: &'a State) -> impl Iterator<Item = (Ballot, Value, bool)> + 'a {
        let quorum = self.quorum();
        // Votes are sorted by ballot, value, then acceptor.
        state
            .votes
            .chunk_by(|a, b| (a.ballot, a.value) == (b.ballot, b.value))
            .filter(move |votes| {
                let mut acceptors = Nodes::default();
                votes.iter().for_each(|v| acceptors.insert(v.acceptor));
                acceptors.len() >= quorum
            })
            .map(|votes| (votes[0].ballot, votes[0].value, votes.iter().any(|v| v.after_wipe)))
    }
}

/// A run as lines: each step, then the values chosen at its end.
pub fn trace(model: &PaxosModel, path: Path<State, Action>) -> String {
    let mut lines = Vec::new();
    let steps = path.into_vec();
    for (i, (_, action)) in steps.iter().enumerate() {
        if let Some(action) = action {
            lines.push(format!("{:3}. {}", i + 1, model.format_action(action)));
        }
    }
    if let Some((last, _)) = steps.last() {
        for (ballot, value, _) in model.chosen(last) {
            lines.push(format!("     chosen: value {value} in ballot {ballot:?}"));
        }
    }
    lines.join("\n")
}

impl Model for PaxosModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            nodes: vec![Node::default(); self.n as usize],
            network: Vec::new(),
            loopback: VecDeque::new(),
            votes: Vec::new(),
            wiped: false,
            epochs_issued: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for &(id, attempts) in &self.proposers {
            if self.can_propose(state, id, attempts) {
                actions.push(Action::Propose(id));
            }
        }
        let mut last = None;
        for env in &state.network {
            // Identical copies of a message lead to the same state.
            if last != Some(env) && self.deliverable(state, env) {
                actions.push(Action::Deliver(*env));
            }
            last = Some(env);
        }
        if !state.wiped {
            actions.push(Action::Wipe(self.amnesiac));
        }
        if state.nodes[self.amnesiac as usize - 1].life == Life::Wiped {
            actions.push(Action::ObtainEpoch(self.amnesiac));
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Propose(id) => self.propose(&mut state, id),
            Action::Deliver(env) => self.deliver(&mut state, env),
            Action::Wipe(id) => self.wipe(&mut state, id),
            Action::ObtainEpoch(id) => self.obtain_epoch(&mut state, id),
        }
        self.drain_loopback(&mut state);
        self.drop_dead(&mut state);
        Some(state)
    }

    fn format_action(&self, action: &Action) -> String {
        match action {
            Action::Propose(id) => {
                format!("proposer {id} starts an attempt (prepare to all)")
            }
            Action::Deliver(Envelope { src, dst, msg }) => format!("{src} -> {dst}: {msg:?}"),
            Action::Wipe(id) => format!("node {id} loses its state"),
            Action::ObtainEpoch(id) => format!("node {id} obtains a fresh epoch, fences its peers"),
        }
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(AGREEMENT, |model, state| {
                let mut values = model.chosen(state).map(|(_, value, _)| value);
                let first = values.next();
                values.all(|value| Some(value) == first)
            }),
            Property::sometimes(SOME_VALUE_CHOSEN, |model, state| model.chosen(state).next().is_some()),
            Property::sometimes(WIPED_NODE_IN_CHOOSING_QUORUM, |model, state| {
                model.chosen(state).any(|(_, _, after_wipe)| after_wipe)
            }),
        ]
    }
}
