//! An exhaustive model check of single-register paxos across one
//! membership change, `C0 → C1`, made by the procedure of
//! `docs/membership.md`: freeze, scan, seed, install.
//!
//! # What is modeled
//!
//! Nodes have ids `1..=n`; the old configuration `C0` (epoch 0) and the new
//! one `C1` (epoch 1) are sets of them. Each node holds an acceptor
//! (promised ballot, accepted (ballot, value), floor epoch), its active
//! configuration's epoch (0 or 1), a frozen flag, and a proposer. Ballots
//! are (epoch, round, node), ordered in that order. A proposer's next
//! ballot is one round above the highest of its last ballot, its own
//! acceptor's promise, and the lowest ballot of its active epoch (or of a
//! later epoch it took, see below), in the epoch of that highest.
//!
//! Paxos is classic and runs within the proposer's active configuration:
//! it sends `Prepare` to the members of that configuration, counts the
//! promises of a majority of them, and sends `Accept` to the same members
//! with the value accepted in the highest ballot among the promises, or
//! its own id. Every message carries the sender's active epoch. An
//! acceptor votes (promises or accepts) only if it is not frozen, is a
//! member of its own active configuration, and the message's epoch equals
//! its own; a proposer counts a promise only if the sender's epoch equals
//! its own. A node proposes only in a configuration it is a member of, so
//! a node that only `C1` holds proposes once it has installed `C1`, and a
//! node that only `C0` holds goes on proposing in `C0` for as long as it
//! has not installed `C1`: a stale proposer, which the procedure must
//! withstand. A frozen node may still propose; it does not vote.
//!
//! The property checked is agreement: no two different values are ever
//! chosen, where a value is chosen when a majority of the members of a
//! configuration accepted it in one ballot sent in that configuration
//! (`C0` for messages of epoch 0, `C1` for epoch 1) at some time. Accepts
//! are kept as history, since acceptors' states change (seeds overwrite
//! them) while what was chosen stays chosen.
//!
//! The change is made by drivers, whose steps are atomic and interleave in
//! any way with the paxos messages:
//!
//! - `Freeze(x)`, for `x` of `C0 ∪ C1` still active in `C0`: `x` is frozen.
//!   Shared by the drivers, since they send the same freeze.
//! - `Scan(d, x)`: driver `d` takes a snapshot (promise and accepted state)
//!   of `x`, a frozen node of `C0`, and merges it into what it holds: the
//!   highest promise and the state accepted in the highest ballot. A driver
//!   scans until it holds snapshots of a majority of `C0`.
//! - `Seed(d, y)`: once it holds them, driver `d` seeds `y`, a frozen node
//!   of `C1` still active in `C0`: `y` adopts the merge, keeping the higher
//!   of its own and the merged promise, and of its own and the merged
//!   accepted state.
//! - `Install(x)`, for `x` of `C0 ∪ C1` still active in `C0`, once some
//!   driver has seeded a majority of `C1`, or some node has installed (the
//!   resumed driver's "go to step 5"; a node also learns `C1` from a
//!   header): `x` makes `C1` active, leaves the frozen state and raises its
//!   floor to epoch 1. Its attempt in progress, of epoch 0, is abandoned:
//!   it could count no more promises.
//!
//! With two drivers, each scans and seeds on its own, from snapshots taken
//! at different times, as a driver resumed after a crash does while the
//! first one may still be running (a crashed driver is one that takes no
//! more steps).
//!
//! # Epochs of ballots
//!
//! In paxosd, ballot epochs come from the same epoch register as the epoch
//! of a change: a node that rejoins after the change began proposes in
//! `C0` with ballots of an epoch above the change's. If the model's
//! `late_epoch` names a node, that node may once take a fresh epoch from
//! the register (the change holds epoch 1, so it gets 2) for its later
//! ballots. Only that effect of a rejoin is modeled: the node loses nothing
//! and fences nobody (amnesia is the other model's business).
//!
//! # The variants
//!
//! - [`Variant::Real`], the procedure: no two values are chosen.
//! - [`Variant::NoFreeze`]: the drivers scan and seed without freezing; a
//!   scanned node goes on voting in `C0`. Unsafe: `C0` chooses a value
//!   after the scan, while `C1`, seeded from the earlier snapshots,
//!   chooses another.
//! - [`Variant::InstallBeforeSeed`]: a node may install `C1` once a driver
//!   holds its snapshots, before a majority of `C1` is seeded. Unsafe: a
//!   majority of `C1` that holds none of the scanned state chooses a value
//!   other than the one `C0` chose.
//! - [`Variant::NoEpochCheck`]: acceptors vote and proposers count
//!   whatever the sender's epoch. While ballots are of their proposer's
//!   epoch, this is safe: the floor of epoch 1 that the install raises
//!   refuses every ballot of epoch 0, and a node still in `C0` that votes
//!   for a ballot of epoch 1 is outside `C1` or adds to a quorum of `C1`
//!   that holds a seeded node anyway (and refuses epoch 0 from then on,
//!   having promised above it). With a `late_epoch` node it is
//!   unsafe: the stale proposer's ballots of epoch 2 pass the floor, so
//!   installed nodes of `C0` vote for it and `C0` chooses a value after
//!   `C1` chose another.
//!
//! The faults are checked on the replacement `{1,2,3} → {2,3,4}`, where a
//! majority of `C0` and one of `C1` can be disjoint. When one node is added
//! or removed, every majority of `C0` meets every majority of `C1`; paxos
//! over the two then needs no freeze at all, and each fault is safe there
//! (checked outside the suite, with the proposers of `grow_is_safe` and
//! `shrink_is_safe` in `tests/reconfig.rs` and a late epoch for the stale
//! proposer: 11 to 25 million states, one to two minutes each).
//!
//! Nor, in `Real`, is the floor that the install raises what keeps `C0`
//! out: an installed node votes only for messages of epoch 1 anyway, and
//! with the floor taken out the checks of `Real` still pass (checked
//! outside the suite). It is the epoch check that does, as the late epoch
//! shows; with neither, `C0` chooses again after the install.
//!
//! # Abstractions and bounds
//!
//! - The change register's compare-and-set is taken as done before the
//!   run: exactly one change, `C0 → C1` at epoch 1, has begun. Its drivers
//!   are one or two; their messages are abstracted into the atomic steps
//!   above (each step is idempotent in paxosd, and a node acts on a
//!   freeze, seed or install in one step of its own).
//! - One register, hence one instance of consensus.
//! - Proposers are the nodes the model names, each with a bounded number of
//!   attempts; the tests state them. There are no rejects between nodes:
//!   a proposer's ballots are distinct and rising without them, and a
//!   reject would only raise its next ballot, which matters for liveness
//!   (it does learn its own acceptor's promise, as from the reject of its
//!   prepare to itself). Nor are there acknowledgements of accepts: choice
//!   is read from the history of accepts.
//! - A proposer sends one accept per acceptor per attempt, and an acceptor
//!   records a vote only when it accepts one. An adopted state is thus
//!   never counted as a vote, which is the rejoin's "adopted" mark; with no
//!   accept sent twice, the mark itself is not needed and not modeled.
//! - The network delivers messages at most once, in any order, and may
//!   hold any message forever (a lost message). A node handles its
//!   messages to itself within the step that sends them, as paxosd does.
//!   A message is delivered only when its receiver acts on it; a message
//!   its receiver will never act on, whatever happens, is dropped. A
//!   refusal is not answered, so both only merge states with a message
//!   lost; a test checks that pruning changes no verdict.
//! - The checks (`tests/reconfig.rs`), each of one driver and one attempt
//!   per proposer unless said: the replacement with two drivers, node 1
//!   proposing in `C0` with a late epoch and node 4 in `C1`; the
//!   replacement with nodes 1, 2 and 4 proposing and a late epoch; growth
//!   with node 1 proposing twice (in `C0`, then in `C1` once installed)
//!   and node 4 once; shrinking with node 4 (removed) and node 1 proposing.
//!   Each is 2.6 to 4.5 million states, 10 to 20 s.

use std::collections::VecDeque;

use stateright::{Model, Path, Property};

use crate::node::{Acceptor, Ballot, NodeId, Nodes, Proposer, Snapshot, Value, highest};

/// Safety: no two different values are ever chosen.
pub const AGREEMENT: &str = "agreement";
/// A value is chosen in `C0` with every vote cast before any node froze.
pub const CHOSEN_IN_C0_BEFORE_FREEZE: &str = "a value is chosen in C0 before the freeze";
/// A value is chosen in `C1` (so after some node installed it).
pub const CHOSEN_IN_C1: &str = "a value is chosen in C1";
/// A value is chosen in `C0` and then again in `C1`: the scan and the
/// seeds carry it over.
pub const CARRIED_OVER: &str = "a value chosen in C0 is chosen in C1";

/// The procedure, or one of its planted faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Freeze, scan, seed, install, as `docs/membership.md` says.
    Real,
    /// Scan and seed without freezing.
    NoFreeze,
    /// Install once a driver holds its snapshots, without the seeds.
    InstallBeforeSeed,
    /// Acceptors vote, and proposers count, whatever the sender's epoch.
    NoEpochCheck,
}

/// A message between nodes; `cfg` is the sender's active epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Msg {
    Prepare { cfg: u8, ballot: Ballot },
    Promise { cfg: u8, ballot: Ballot, accepted: crate::node::Accepted },
    Accept { cfg: u8, ballot: Ballot, value: Value },
}

/// A message in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Envelope {
    pub src: NodeId,
    pub dst: NodeId,
    pub msg: Msg,
}

/// A node: its acceptor and proposer, and where it stands in the change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Node {
    pub acceptor: Acceptor,
    /// Its `seen` ballot sets the epoch of its next ballot.
    pub proposer: Proposer,
    /// The epoch of its active configuration: 0 for `C0`, 1 for `C1`.
    pub active: u8,
    pub frozen: bool,
}

/// What a driver holds: the nodes it scanned and their snapshots merged
/// (it seeds only their maxima), and the nodes it seeded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Driver {
    pub scanned: Nodes,
    pub merged: Snapshot,
    pub seeded: Nodes,
}

/// An accept that happened, kept as history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vote {
    /// The epoch of the configuration the accept was sent in.
    pub cfg: u8,
    pub ballot: Ballot,
    pub value: Value,
    pub acceptor: NodeId,
    /// Cast before any node froze or installed.
    pub before_freeze: bool,
}

/// The state of the whole cluster and of the drivers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Node `id` is at index `id - 1`.
    pub nodes: Vec<Node>,
    pub drivers: Vec<Driver>,
    /// Messages in flight, sorted; a multiset.
    pub network: Vec<Envelope>,
    /// Messages a node sent itself in the current step; empty between steps.
    pub loopback: VecDeque<Envelope>,
    /// Every accept so far, sorted, for the properties only.
    pub votes: Vec<Vote>,
    /// The epoch register: the last epoch issued (the change holds 1).
    pub epochs_issued: u8,
}

/// A step of the cluster or of a driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A proposer starts an attempt: Prepare to its configuration.
    Propose(NodeId),
    Deliver(Envelope),
    /// A node takes a fresh epoch for its later ballots.
    TakeEpoch(NodeId),
    Freeze(NodeId),
    /// Driver `.0` scans node `.1`.
    Scan(u8, NodeId),
    /// Driver `.0` seeds node `.1`.
    Seed(u8, NodeId),
    Install(NodeId),
}

/// Single-decree paxos across the change `C0 → C1`.
#[derive(Clone, Debug)]
pub struct ReconfigModel {
    pub c0: Nodes,
    pub c1: Nodes,
    /// The nodes that propose, each with the number of attempts it may
    /// start. Each proposes its own id as its value.
    pub proposers: Vec<(NodeId, u8)>,
    /// How many drivers run the change, each with its own snapshots.
    pub drivers: u8,
    /// A node that may once take an epoch above the change's for its
    /// ballots, as a node rejoining during the change would.
    pub late_epoch: Option<NodeId>,
    pub variant: Variant,
    /// Whether messages no receiver will act on are dropped. It only
    /// merges states; turning it off checks that it hides nothing.
    pub prune: bool,
}

impl ReconfigModel {
    /// `C0 → C1` with the given members; node 1 proposes in `C0` and
    /// node 4 in `C1`, once each; one driver.
    pub fn new(c0: &[NodeId], c1: &[NodeId], variant: Variant) -> ReconfigModel {
        ReconfigModel {
            c0: c0.iter().copied().collect(),
            c1: c1.iter().copied().collect(),
            proposers: vec![(1, 1), (4, 1)],
            drivers: 1,
            late_epoch: None,
            variant,
            prune: true,
        }
    }

    /// Replacing node 1 by node 4: `{1,2,3} → {2,3,4}`. A majority of `C0`
    /// and one of `C1` may be disjoint, so the procedure is what keeps it
    /// safe.
    pub fn replace(variant: Variant) -> ReconfigModel {
        ReconfigModel::new(&[1, 2, 3], &[2, 3, 4], variant)
    }

    /// Growing by node 4: `{1,2,3} → {1,2,3,4}`.
    pub fn grow(variant: Variant) -> ReconfigModel {
        ReconfigModel::new(&[1, 2, 3], &[1, 2, 3, 4], variant)
    }

    /// Removing node 4: `{1,2,3,4} → {1,2,3}`.
    pub fn shrink(variant: Variant) -> ReconfigModel {
        ReconfigModel::new(&[1, 2, 3, 4], &[1, 2, 3], variant)
    }

    /// The members of the configuration of epoch `cfg`.
    pub fn members(&self, cfg: u8) -> Nodes {
        if cfg == 0 { self.c0 } else { self.c1 }
    }

    fn everyone(&self) -> Nodes {
        self.c0.union(self.c1)
    }

    fn n(&self) -> usize {
        self.everyone().ids().max().map_or(0, usize::from)
    }

    fn node<'a>(&self, state: &'a State, id: NodeId) -> &'a Node {
        &state.nodes[id as usize - 1]
    }

    fn freezes(&self) -> bool {
        self.variant != Variant::NoFreeze
    }

    fn checks_epochs(&self) -> bool {
        self.variant != Variant::NoEpochCheck
    }

    /// Whether node `id`, as `node` stands, votes for a message of epoch
    /// `cfg` with `ballot` (an accept, or else a prepare).
    fn votes_for(&self, id: NodeId, node: &Node, cfg: u8, ballot: Ballot, accept: bool) -> bool {
        if (node.frozen && self.freezes()) || !self.members(node.active).contains(id) {
            return false;
        }
        if self.checks_epochs() && cfg != node.active {
            return false;
        }
        let promise = node.acceptor.effective_promise();
        if accept { ballot >= promise } else { ballot > promise }
    }

    /// Node `id` as it would stand once it installs `C1`.
    fn installed(node: &Node) -> Node {
        let mut node = node.clone();
        node.install();
        node
    }

    /// Whether the proposer at `dst` counts a promise for `ballot` from
    /// `src`, whose epoch is `cfg`.
    fn counts(&self, state: &State, src: NodeId, dst: NodeId, cfg: u8, ballot: Ballot) -> bool {
        let node = self.node(state, dst);
        let current = node.proposer.preparing.as_ref().is_some_and(|a| a.ballot == ballot);
        let epoch_ok = !self.checks_epochs() || cfg == node.active;
        current && epoch_ok && self.members(node.active).contains(src)
    }

    /// Whether the receiver acts on the message now.
    fn deliverable(&self, state: &State, env: &Envelope) -> bool {
        let node = self.node(state, env.dst);
        match env.msg {
            Msg::Prepare { cfg, ballot } => self.votes_for(env.dst, node, cfg, ballot, false),
            Msg::Accept { cfg, ballot, .. } => self.votes_for(env.dst, node, cfg, ballot, true),
            Msg::Promise { cfg, ballot, .. } => self.counts(state, env.src, env.dst, cfg, ballot),
        }
    }

    /// Whether the receiver will never act on the message. A node still in
    /// `C0` votes for no more than it does now, or than it will once it
    /// installs `C1` (freezing only takes votes away, and promises and
    /// seeds only raise the promise); an installed node changes only by
    /// raising its promise. A proposer's attempt, once over or abandoned,
    /// never comes back, and its epoch changes only when it is abandoned.
    fn dead(&self, state: &State, env: &Envelope) -> bool {
        if self.deliverable(state, env) {
            return false;
        }
        let node = self.node(state, env.dst);
        let (cfg, ballot, accept) = match env.msg {
            Msg::Prepare { cfg, ballot } => (cfg, ballot, false),
            Msg::Accept { cfg, ballot, .. } => (cfg, ballot, true),
            Msg::Promise { .. } => return true,
        };
        node.active != 0 || !self.votes_for(env.dst, &Self::installed(node), cfg, ballot, accept)
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
        if src == dst {
            state.loopback.push_back(env);
            return;
        }
        let at = state.network.partition_point(|e| *e < env);
        state.network.insert(at, env);
    }

    /// Sends to every member of the configuration of epoch `cfg`.
    fn multicast(&self, state: &mut State, src: NodeId, cfg: u8, msg: Msg) {
        for dst in self.members(cfg).ids() {
            self.send(state, src, dst, msg);
        }
    }

    fn can_propose(&self, state: &State, id: NodeId, attempts: u8) -> bool {
        let node = self.node(state, id);
        self.members(node.active).contains(id) && node.proposer.attempts < attempts
    }

    fn propose(&self, state: &mut State, id: NodeId) {
        let node = &mut state.nodes[id as usize - 1];
        // Above its own acceptor's promise, as the reject of its own
        // prepare would teach it.
        node.proposer.reject(node.acceptor.effective_promise());
        let (cfg, ballot) = (node.active, node.proposer.start(id));
        self.multicast(state, id, cfg, Msg::Prepare { cfg, ballot });
    }

    /// The epoch register is linearizable, so taking an epoch is one step.
    fn take_epoch(&self, state: &mut State, id: NodeId) {
        state.epochs_issued += 1;
        let proposer = &mut state.nodes[id as usize - 1].proposer;
        proposer.seen = proposer.seen.max(Ballot::floor(state.epochs_issued));
    }

    fn deliver(&self, state: &mut State, env: Envelope) {
        let at = state.network.binary_search(&env).expect("delivered message in flight");
        state.network.remove(at);
        self.handle(state, env);
    }

    fn drain_loopback(&self, state: &mut State) {
        while let Some(env) = state.loopback.pop_front() {
            if self.deliverable(state, &env) {
                self.handle(state, env);
            }
        }
    }

    /// Handles a message its receiver acts on.
    fn handle(&self, state: &mut State, Envelope { src, dst, msg }: Envelope) {
        let node = &mut state.nodes[dst as usize - 1];
        let active = node.active;
        match msg {
            Msg::Prepare { ballot, .. } => {
                let accepted = node.acceptor.prepare(ballot).expect("a deliverable prepare");
                self.send(state, dst, src, Msg::Promise { cfg: active, ballot, accepted });
            }
            Msg::Promise { ballot, accepted, .. } => {
                let quorum = self.members(active).majority();
                let chosen = node.proposer.promise(src, ballot, accepted, quorum, dst);
                if let Some((ballot, value)) = chosen {
                    self.multicast(state, dst, active, Msg::Accept { cfg: active, ballot, value });
                }
            }
            Msg::Accept { cfg, ballot, value } => {
                node.acceptor.accept(ballot, value).expect("a deliverable accept");
                let before_freeze = self.untouched(state);
                let vote = Vote { cfg, ballot, value, acceptor: dst, before_freeze };
                if let Err(at) = state.votes.binary_search(&vote) {
                    state.votes.insert(at, vote);
                }
            }
        }
    }

    /// Whether no node has frozen or installed yet.
    fn untouched(&self, state: &State) -> bool {
        state.nodes.iter().all(|n| !n.frozen && n.active == 0)
    }

    /// Whether the change may go on to step 5.
    fn may_install(&self, state: &State) -> bool {
        let q1 = self.c1.majority();
        if self.variant == Variant::InstallBeforeSeed {
            let q0 = self.c0.majority();
            return state.drivers.iter().any(|d| d.scanned.len() >= q0);
        }
        state.drivers.iter().any(|d| d.seeded.len() >= q1) || state.nodes.iter().any(|n| n.active == 1)
    }

    fn scan(&self, state: &mut State, d: u8, id: NodeId) {
        let acceptor = &state.nodes[id as usize - 1].acceptor;
        let snapshot = Snapshot { promised: acceptor.promised, accepted: acceptor.accepted };
        let driver = &mut state.drivers[d as usize];
        driver.scanned.insert(id);
        driver.merged = driver.merged.merge(snapshot);
    }

    fn seed(&self, state: &mut State, d: u8, id: NodeId) {
        let driver = &mut state.drivers[d as usize];
        driver.seeded.insert(id);
        let merged = driver.merged;
        let acceptor = &mut state.nodes[id as usize - 1].acceptor;
        acceptor.promised = acceptor.promised.max(merged.promised);
        acceptor.accepted = highest(acceptor.accepted, merged.accepted);
    }

    fn driver_actions(&self, state: &State, actions: &mut Vec<Action>) {
        let (q0, everyone) = (self.c0.majority(), self.everyone());
        let in_c0 = |id: NodeId| self.node(state, id).active == 0;
        let frozen = |id: NodeId| self.node(state, id).frozen || !self.freezes();
        for id in everyone.ids().filter(|&id| in_c0(id)) {
            if self.freezes() && !self.node(state, id).frozen {
                actions.push(Action::Freeze(id));
            }
        }
        for (d, driver) in state.drivers.iter().enumerate() {
            let d = d as u8;
            if driver.scanned.len() < q0 {
                let scannable = self.c0.ids().filter(|&id| in_c0(id) && frozen(id));
                for id in scannable.filter(|&id| !driver.scanned.contains(id)) {
                    actions.push(Action::Scan(d, id));
                }
            } else {
                let seedable = self.c1.ids().filter(|&id| in_c0(id) && frozen(id));
                for id in seedable.filter(|&id| !driver.seeded.contains(id)) {
                    actions.push(Action::Seed(d, id));
                }
            }
        }
        if self.may_install(state) {
            actions.extend(everyone.ids().filter(|&id| in_c0(id)).map(Action::Install));
        }
    }

    /// The (epoch, ballot, value) triples accepted in one ballot by a
    /// majority of the members of the configuration it was sent in, each
    /// with whether that majority voted before any node froze.
    pub fn chosen<'a>(&self, state: &'a State) -> impl Iterator<Item = (u8, Ballot, Value, bool)> + 'a {
        let (c0, c1) = (self.c0, self.c1);
        // Votes are sorted by epoch, ballot, value, then acceptor.
        state.votes.chunk_by(|a, b| (a.cfg, a.ballot, a.value) == (b.cfg, b.ballot, b.value)).filter_map(
            move |votes| {
                let members = if votes[0].cfg == 0 { c0 } else { c1 };
                let voters = |early: bool| {
                    let ids = votes.iter().filter(|v| v.before_freeze || !early).map(|v| v.acceptor);
                    ids.filter(|&id| members.contains(id)).collect::<Nodes>().len()
                };
                let quorum = members.majority();
                let Vote { cfg, ballot, value, .. } = votes[0];
                (voters(false) >= quorum).then_some((cfg, ballot, value, voters(true) >= quorum))
            },
        )
    }
}

impl Node {
    /// Installs `C1`: votes in it, leaves the frozen state, refuses every
    /// ballot below epoch 1, and drops its attempt of epoch 0.
    fn install(&mut self) {
        self.active = 1;
        self.frozen = false;
        self.acceptor.floor = self.acceptor.floor.max(1);
        self.proposer.preparing = None;
        self.proposer.seen = self.proposer.seen.max(Ballot::floor(1));
    }
}

/// A run as lines: each step, then the values chosen at its end.
pub fn trace(model: &ReconfigModel, path: Path<State, Action>) -> String {
    let mut lines = Vec::new();
    let steps = path.into_vec();
    for (i, (_, action)) in steps.iter().enumerate() {
        if let Some(action) = action {
            lines.push(format!("{:3}. {}", i + 1, model.format_action(action)));
        }
    }
    if let Some((last, _)) = steps.last() {
        for (cfg, ballot, value, _) in model.chosen(last) {
            lines.push(format!("     chosen in C{cfg}: value {value} in ballot {ballot:?}"));
        }
    }
    lines.join("\n")
}

impl Model for ReconfigModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            nodes: vec![Node::default(); self.n()],
            drivers: vec![Driver::default(); self.drivers as usize],
            network: Vec::new(),
            loopback: VecDeque::new(),
            votes: Vec::new(),
            epochs_issued: 1,
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
        let late = self.late_epoch.filter(|&id| self.node(state, id).active == 0);
        if let Some(id) = late.filter(|_| state.epochs_issued == 1) {
            actions.push(Action::TakeEpoch(id));
        }
        self.driver_actions(state, actions);
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Propose(id) => self.propose(&mut state, id),
            Action::Deliver(env) => self.deliver(&mut state, env),
            Action::TakeEpoch(id) => self.take_epoch(&mut state, id),
            Action::Freeze(id) => state.nodes[id as usize - 1].frozen = true,
            Action::Scan(d, id) => self.scan(&mut state, d, id),
            Action::Seed(d, id) => self.seed(&mut state, d, id),
            Action::Install(id) => state.nodes[id as usize - 1].install(),
        }
        self.drain_loopback(&mut state);
        self.drop_dead(&mut state);
        Some(state)
    }

    fn format_action(&self, action: &Action) -> String {
        match action {
            Action::Propose(id) => format!("proposer {id} starts an attempt (prepare to its configuration)"),
            Action::Deliver(Envelope { src, dst, msg }) => format!("{src} -> {dst}: {msg:?}"),
            Action::TakeEpoch(id) => format!("node {id} takes epoch 2 for its ballots"),
            Action::Freeze(id) => format!("node {id} freezes"),
            Action::Scan(d, id) => format!("driver {d} scans node {id}"),
            Action::Seed(d, id) => format!("driver {d} seeds node {id}"),
            Action::Install(id) => format!("node {id} installs C1"),
        }
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(AGREEMENT, |model, state| {
                let mut values = model.chosen(state).map(|(_, _, value, _)| value);
                let first = values.next();
                values.all(|value| Some(value) == first)
            }),
            Property::sometimes(CHOSEN_IN_C0_BEFORE_FREEZE, |model, state| {
                model.chosen(state).any(|(cfg, _, _, early)| cfg == 0 && early)
            }),
            Property::sometimes(CHOSEN_IN_C1, |model, state| model.chosen(state).any(|(cfg, ..)| cfg == 1)),
            Property::sometimes(CARRIED_OVER, |model, state| {
                let chosen = || model.chosen(state);
                chosen().any(|(cfg, ..)| cfg == 0) && chosen().any(|(cfg, ..)| cfg == 1)
            }),
        ]
    }
}
