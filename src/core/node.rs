//! A node: acceptor and proposer for every key, the round counter, and the
//! clients' side of it: which requests to run (`sessions`), where answers
//! go, and status. See `core` for the order in which a driver calls it.
//!
//! The node is generic over a client's address `A` (a socket address in
//! the daemon, a number in the simulator): it never looks inside one, only
//! sends answers back to it.

use super::acceptor::{Acceptor, Slot, Vote};
use super::membership::{ConfigTag, Configuration, FreezeAnswer, MemberChange, Members, Membership};
use super::proposer::{Ctx, Dedupe, FastPath, Outbox, Progress, Proposal, ReqHandle, Request};
use super::reconfig::{Reconfig, ReconfigEnding};
use super::rejoin::{PageFate, Rejoin};
use super::rng::Rng;
use super::sessions::{Admission, Sessions};
use super::watches::Watches;
use crate::limits;
use crate::storage::{Record, Synced};
use crate::types::RegisterState;
use crate::types::{Ballot, Epoch, Key, NodeId, RequestId, SessionId, Time};
use crate::wire::{self, MembersOutcome, Message, NodeStatus, Outcome, QueryId, Refusal, ScanSlot};
use std::collections::{BTreeMap, VecDeque};

// A child module: it works on the node's private parts.
#[path = "node_watch.rs"]
mod node_watch;

/// Where an output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope<A> {
    Peer(NodeId, Message),
    Client(A, Message),
}

/// The clients waiting for a membership change, with their request ids.
type Waiting<A> = Vec<(ReplyTo<A>, u64)>;

/// Where a request's answer goes: a client, or a peer that asks as a client
/// does (a node catching up writes the epoch register so, see `rejoin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ReplyTo<A> {
    Client(A),
    Peer(NodeId),
}

impl<A> ReplyTo<A> {
    fn envelope(self, msg: Message) -> Envelope<A> {
        match self {
            ReplyTo::Client(addr) => Envelope::Client(addr, msg),
            ReplyTo::Peer(id) => Envelope::Peer(id, msg),
        }
    }
}

/// Everything a node produced since the last `take_ready`: records to make
/// durable, and messages that may leave only once they are. The messages are
/// private: the only ways to get them are `release` with a `Synced` proof or
/// `release_if_nothing_to_sync`, so no driver can send a promise, an
/// accepted or a reply before the state it depends on is on disk.
///
/// A proposer's own messages (prepare, accept, query) depend on nothing on
/// this node's disk but the reservation of the ballots they carry, so they
/// may leave before the sync (`take_early`) unless the turn reserves a new
/// block of rounds: the peers' syncs then run alongside this node's own,
/// and a write costs one sync's time, not two in a row.
#[derive(Debug)]
pub struct Ready<A> {
    pub records: Vec<Record>,
    early: Vec<Envelope<A>>,
    messages: Vec<Envelope<A>>,
    /// `records` holds a reservation of rounds: set by `Node::take_ballot`,
    /// the only place that reserves, so that sending a message need not
    /// search the turn's records.
    reserves_rounds: bool,
}

impl<A> Default for Ready<A> {
    fn default() -> Self {
        Ready { records: Vec::new(), early: Vec::new(), messages: Vec::new(), reserves_rounds: false }
    }
}

impl<A> Ready<A> {
    /// The messages that may leave before the records are synced.
    pub fn take_early(&mut self) -> Vec<Envelope<A>> {
        std::mem::take(&mut self.early)
    }

    /// Whether a message to a peer may leave before this turn's sync: a
    /// proposer's, when no round reservation waits to be synced.
    fn may_leave_early(&self, msg: &Message) -> bool {
        let proposer =
            matches!(msg, Message::Prepare { .. } | Message::Accept { .. } | Message::Query { .. });
        proposer && !self.reserves_rounds
    }

    pub fn release(mut self, _proof: Synced) -> Vec<Envelope<A>> {
        let mut all = std::mem::take(&mut self.early);
        all.append(&mut self.messages);
        all
    }

    /// The messages, when no record needs syncing first.
    pub fn release_if_nothing_to_sync(mut self) -> Result<Vec<Envelope<A>>, Ready<A>> {
        if !self.records.is_empty() {
            return Err(self);
        }
        let mut all = std::mem::take(&mut self.early);
        all.append(&mut self.messages);
        Ok(all)
    }

    /// Messages a deliberately broken driver sends before syncing (tests only).
    #[cfg(feature = "planted-bugs")]
    pub fn take_messages_unsynced(&mut self) -> Vec<Envelope<A>> {
        std::mem::take(&mut self.messages)
    }
}

/// The round counter, and the epoch this node's ballots carry. Rounds
/// below `limit` are reserved on disk; using one at or above it first
/// appends a reservation for a new block. Rounds never go back, not even in
/// a new epoch, so a ballot is never issued twice; a node that lost its
/// reservations comes back in an epoch no ballot of its old life had.
#[derive(Debug)]
struct Rounds {
    epoch: Epoch,
    next: u64,
    limit: u64,
    /// The counter when the node started (or last adopted a whole key
    /// space), and when: a peer's round is within reach of it, grown at
    /// the fastest rate rounds are ever used (see `reach`).
    reach_base: u64,
    reach_since: Time,
}

impl Rounds {
    /// The next ballot of `node`, or `None` when the counter is spent: only
    /// a peer lying about its ballots could push a 64-bit counter to its
    /// end, and reusing the last round would reuse a ballot, so the node
    /// stops proposing instead.
    fn take(&mut self, node: NodeId, records: &mut Vec<Record>) -> Option<Ballot> {
        let round = self.next;
        self.next = round.checked_add(1)?;
        if round >= self.limit {
            self.limit = round.saturating_add(limits::ROUND_BLOCK);
            records.push(Record::RoundsReserved { round_limit: self.limit });
        }
        Some(Ballot::at(self.epoch, round, node))
    }

    /// The highest round a peer's ballot may have at `now`: the counter at
    /// `reach_since`, what the whole cluster could have used since at
    /// `ROUND_RATE_MAX` rounds a second, and `ROUND_LEAP_MAX` for what it
    /// used before that this node has not seen. It grows with time only,
    /// not with the rounds this node adopts: forged ballots each within
    /// reach cannot walk the counter to the end of the rounds.
    fn reach(&self, now: Time) -> u64 {
        let seconds = now.micros_since(self.reach_since) / 1_000_000;
        let used = seconds.saturating_mul(limits::ROUND_RATE_MAX);
        self.reach_base.saturating_add(used).saturating_add(limits::ROUND_LEAP_MAX)
    }

    /// Adopts the promises of a whole key space (a rejoin's or a seed's
    /// pages, from a quorum of peers): what they say is what the cluster
    /// used, so reach starts over from there.
    fn adopt(&mut self, promised: Ballot) {
        self.observe(promised);
        self.reach_base = self.reach_base.max(self.next);
    }

    /// Fast-forward past a ballot another proposer used, and into its
    /// epoch: ballots of older epochs are refused by fenced acceptors.
    /// Ballots at or past `ROUND_MAX` or `EPOCH_MAX` are no honest ones
    /// (a log written before ballots from the network were checked may
    /// hold one): adopting them would spend the counter for every key.
    fn observe(&mut self, ballot: Ballot) {
        if ballot.round >= limits::ROUND_MAX || ballot.epoch.0 >= limits::EPOCH_MAX {
            return;
        }
        self.epoch = self.epoch.max(ballot.epoch);
        self.next = self.next.max(ballot.round.saturating_add(1));
    }
}

/// How this node's attempts went, for status: accepts sent without a
/// prepare, both phases, and reads tried in one round.
#[derive(Clone, Copy, Debug, Default)]
struct RoundsTaken {
    writes_one_round: u64,
    writes_two_rounds: u64,
    reads_one_round: u64,
}

/// The limits a node enforces on clients; the daemon uses `limits.rs`, the
/// simulator shrinks them to put nodes under pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    pub requests_in_flight_max: usize,
    pub requests_queued_per_key_max: usize,
    pub sessions_per_generation: usize,
    /// Reads run for watches at once, apart from the requests' budget.
    pub watch_reads_in_flight_max: usize,
    /// Slots of the acceptor that hold only a promise (see
    /// `core::acceptor`): what reads of keys that do not exist may leave.
    pub absent_promises_max: usize,
    /// Requests one client address may have running while the node is
    /// behind on its votes (see `Node::set_behind`).
    pub requests_per_client_behind_max: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            requests_in_flight_max: limits::REQUESTS_IN_FLIGHT_MAX,
            requests_queued_per_key_max: limits::REQUESTS_QUEUED_PER_KEY_MAX,
            sessions_per_generation: limits::SESSIONS_PER_GENERATION,
            watch_reads_in_flight_max: limits::WATCH_READS_IN_FLIGHT_MAX,
            absent_promises_max: limits::ABSENT_PROMISES_MAX,
            requests_per_client_behind_max: limits::REQUESTS_PER_CLIENT_BEHIND_MAX,
        }
    }
}

/// What a node starts from.
pub struct NodeSetup {
    pub id: NodeId,
    /// The founding configuration's members (`Record::Membership` in the
    /// log overrides it).
    pub founding: Members,
    /// The records its log held, in log order.
    pub records: Vec<Record>,
    /// Seeds the node's randomness (jitter, incarnations).
    pub seed: u64,
    /// The driver's clock when the node starts.
    pub now: Time,
    pub limits: ClientLimits,
}

/// The requests running at this node, and where their answers go.
#[derive(Debug)]
struct Running<A> {
    next_handle: u64,
    by_handle: BTreeMap<ReqHandle, (ReplyTo<A>, RequestId)>,
    by_id: BTreeMap<RequestId, ReqHandle>,
    /// How many run for each client address that has any.
    by_client: BTreeMap<A, usize>,
}

impl<A: Copy + Ord> Running<A> {
    fn new() -> Running<A> {
        Running {
            next_handle: 0,
            by_handle: BTreeMap::new(),
            by_id: BTreeMap::new(),
            by_client: BTreeMap::new(),
        }
    }

    fn insert(&mut self, handle: ReqHandle, to: ReplyTo<A>, id: RequestId) {
        self.by_handle.insert(handle, (to, id));
        self.by_id.insert(id, handle);
        if let ReplyTo::Client(addr) = to {
            *self.by_client.entry(addr).or_default() += 1;
        }
    }

    fn remove(&mut self, handle: ReqHandle) -> Option<(ReplyTo<A>, RequestId)> {
        let (to, id) = self.by_handle.remove(&handle)?;
        self.by_id.remove(&id);
        if let ReplyTo::Client(addr) = to
            && let Some(count) = self.by_client.get_mut(&addr)
        {
            *count -= 1;
            if *count == 0 {
                self.by_client.remove(&addr);
            }
        }
        Some((to, id))
    }

    /// Requests running for `from`, when it is a client.
    fn of_client(&self, from: ReplyTo<A>) -> usize {
        match from {
            ReplyTo::Client(addr) => self.by_client.get(&addr).copied().unwrap_or(0),
            ReplyTo::Peer(_) => 0,
        }
    }
}

pub struct Node<A> {
    id: NodeId,
    members: Vec<NodeId>,
    acceptor: Acceptor,
    rounds: Rounds,
    proposals: BTreeMap<Key, Proposal>,
    queued: BTreeMap<Key, VecDeque<Request>>,
    /// Keys whose last proposal here left a majority promising its next
    /// ballot (see `FastPath`), at most `FAST_PATH_KEYS_MAX`.
    fast_paths: BTreeMap<Key, FastPath>,
    next_query: u64,
    rounds_taken: RoundsTaken,
    running: Running<A>,
    /// The driver has votes from peers waiting that it had no room for in
    /// this turn (see `set_behind`).
    behind: bool,
    sessions: Sessions,
    limits: ClientLimits,
    rng: Rng,
    ready: Ready<A>,
    loopback: VecDeque<Message>,
    /// The latest time a driver passed in; replies carry it.
    clock: Time,
    /// When each peer was last heard from, to tell when this node is cut off.
    last_heard: BTreeMap<NodeId, Time>,
    /// How long promise quorums took lately (a moving average), to tell a
    /// slow quorum from none.
    quorum_us: Option<u64>,
    started: Time,
    log_bytes: u64,
    /// What was turned away (status).
    guarded: wire::Guarded,
    /// Set while the node catches up after losing data: it then votes on
    /// nothing and proposes nothing.
    rejoin: Option<Rejoin>,
    /// The configuration this node votes in, and the change it takes part
    /// in (see `membership`); `members` is its active member ids.
    membership: Membership,
    /// When this node last asked each peer for its configuration, or told
    /// it its own: once per `CONFIG_GOSSIP_MS` each.
    config_gossip: BTreeMap<NodeId, Time>,
    /// The membership change this node drives for clients, and the clients
    /// (with their request ids) waiting for it.
    reconfig: Option<(Reconfig, Waiting<A>)>,
    /// While frozen: when to ask the members for their configuration next,
    /// and since when it has been frozen (in this life).
    frozen_poll_at: Time,
    frozen_since: Option<Time>,
    /// Lost its data while it knew no members: it catches up once it
    /// installs a configuration (and votes on nothing until it has).
    rejoin_pending: bool,
    /// A peer named a later configuration than this node's: a node catching
    /// up does not finish before it has installed one that late.
    newer_config_seen: bool,
    /// `compute_tag` of the membership, kept up to date by `install`.
    tag: ConfigTag,
    /// The clients' watches, and the reads run for them (by handle).
    watches: Watches<A>,
    watch_reads: BTreeMap<ReqHandle, Key>,
    /// Watch answers produced since the last `take_ready`: answers that
    /// carry states stop at `WATCH_ANSWERS_PER_TURN_MAX`.
    watch_answers_in_turn: usize,
    #[cfg(feature = "planted-bugs")]
    bugs: super::PlantedBugs,
}

impl<A: Copy + Ord> Node<A> {
    /// A node restored from its log.
    pub fn new(setup: NodeSetup) -> Node<A> {
        let mut rounds = Rounds { epoch: Epoch(0), next: 1, limit: 1, reach_base: 1, reach_since: setup.now };
        let mut floor = Epoch(0);
        let mut absent_floor = Ballot::ZERO;
        let mut catching_up = false;
        let mut adopted = Epoch(0);
        // A node the founding members do not name joins a running cluster:
        // it votes once a change installs a configuration naming it.
        let mut membership = if setup.founding.contains(setup.id) {
            Membership::founding(setup.founding)
        } else {
            Membership::joining()
        };
        // At most one key per record; usually a few records per key.
        let keys_hint = setup.records.len() / 2;
        let slots = setup.records.into_iter().filter_map(|record| match record {
            Record::Slot { key, promised, accepted, state } => {
                rounds.observe(promised);
                Some((key, Slot { promised, accepted, state }))
            }
            // Skip the rest of the reserved block: ballots in it may have
            // been sent before the restart.
            Record::RoundsReserved { round_limit } => {
                rounds.next = rounds.next.max(round_limit);
                rounds.limit = rounds.limit.max(round_limit);
                None
            }
            Record::Fence { epoch } => {
                floor = floor.max(epoch);
                None
            }
            Record::AbsentFloor { promised } => {
                rounds.observe(promised);
                absent_floor = absent_floor.max(promised);
                None
            }
            Record::CatchingUp => {
                catching_up = true;
                None
            }
            Record::CaughtUp { epoch } => {
                catching_up = false;
                adopted = adopted.max(epoch);
                None
            }
            Record::Membership(m) => {
                membership = m;
                None
            }
        });
        let mut acceptor = Acceptor::restored(slots, keys_hint, setup.limits.absent_promises_max);
        acceptor.restore_absent_floor(absent_floor);
        acceptor.raise_floor(floor);
        acceptor.mark_adopted_below(adopted);
        rounds.observe(Ballot::floor_of(floor));
        rounds.reach_base = rounds.next;
        let mut rng = Rng::new(setup.seed);
        let sessions = Sessions::new(setup.limits.sessions_per_generation, Rng::new(rng.next_u64()));
        let members = membership.active.members.ids();
        let tag = Self::compute_tag(&membership);
        // A node that knows no members yet (joining) starts catching up
        // once it installs a configuration that names some.
        let rejoin_pending = catching_up && members.is_empty();
        let rejoin =
            (catching_up && !rejoin_pending).then(|| Rejoin::new(setup.now, setup.id, &members, &mut rng));
        let mut node = Node {
            id: setup.id,
            members,
            acceptor,
            rounds,
            proposals: BTreeMap::new(),
            queued: BTreeMap::new(),
            fast_paths: BTreeMap::new(),
            // Query ids start at random in every life, so that a late answer
            // to a query of an earlier life is never taken for one of this
            // life's (the one-round read needs answers sent after it began).
            next_query: rng.next_u64(),
            rounds_taken: RoundsTaken::default(),
            running: Running::new(),
            behind: false,
            sessions,
            limits: setup.limits,
            rng,
            ready: Ready::default(),
            loopback: VecDeque::new(),
            clock: setup.now,
            last_heard: BTreeMap::new(),
            quorum_us: None,
            started: setup.now,
            log_bytes: 0,
            guarded: wire::Guarded::default(),
            rejoin,
            membership,
            config_gossip: BTreeMap::new(),
            reconfig: None,
            frozen_poll_at: setup.now,
            frozen_since: None,
            rejoin_pending,
            newer_config_seen: false,
            tag,
            watches: Watches::new(limits::WATCHES_PARKED_MAX),
            watch_reads: BTreeMap::new(),
            watch_answers_in_turn: 0,
            #[cfg(feature = "planted-bugs")]
            bugs: super::PlantedBugs::default(),
        };
        node.flush_rejoin();
        node
    }

    /// What the membership change this node drives is doing, if any.
    pub fn driving(&self) -> Option<String> {
        self.reconfig.as_ref().map(|(r, _)| r.describe())
    }

    /// True while the node catches up after losing data (see `rejoin`).
    pub fn catching_up(&self) -> bool {
        self.rejoin.is_some() || self.rejoin_pending
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Switches on deliberate bugs (tests only). The acceptor keeps its own
    /// copy, and is reachable only through the node.
    #[cfg(feature = "planted-bugs")]
    pub fn set_bugs(&mut self, bugs: super::PlantedBugs) {
        self.bugs = bugs;
        self.acceptor.bugs = bugs;
        if bugs.vote_while_catching_up {
            self.rejoin = None;
        }
    }

    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// Every durable fact of this node, for compacting the log: each key's
    /// slot and the round reservation.
    pub fn live_records(&self) -> impl Iterator<Item = Record> + '_ {
        let rounds = Record::RoundsReserved { round_limit: self.rounds.limit };
        let fence = Record::Fence { epoch: self.acceptor.floor() };
        let absent = Record::AbsentFloor { promised: self.acceptor.absent_floor() };
        let adopted = Record::CaughtUp { epoch: self.acceptor.adopted_epoch() };
        // Last, so that a restart replays it after the mark above.
        let catching_up = self.catching_up().then_some(Record::CatchingUp);
        let membership = Record::Membership(self.membership.clone());
        self.acceptor.live_records().chain([rounds, fence, absent, adopted, membership]).chain(catching_up)
    }

    pub fn requests_in_flight(&self) -> usize {
        self.running.by_handle.len()
    }

    /// The driver says whether messages from peers wait that it had no
    /// room for before this turn's clients (`limits::TURN_MESSAGES_MAX`):
    /// the node is behind on the work it took on, here and at its peers.
    /// While it is, a client that has `requests_per_client_behind_max`
    /// requests running here already is refused as overloaded: a client
    /// that floods the node is told it is busy (and tries elsewhere), its
    /// requests stop crowding out the votes, and clients that ask little
    /// are still served. The driver says it again every turn.
    pub fn set_behind(&mut self, behind: bool) {
        self.behind = behind;
    }

    /// The driver tells how large the log is, for status replies.
    pub fn set_log_bytes(&mut self, bytes: u64) {
        self.log_bytes = bytes;
    }

    /// The driver tells what it dropped before the node saw it (whether it
    /// checks MACs, and the datagrams it dropped), for status replies.
    pub fn set_dropped(&mut self, secret: bool, unauthenticated: u64, malformed: u64) {
        self.guarded.secret = secret;
        self.guarded.unauthenticated = unauthenticated;
        self.guarded.malformed = malformed;
    }

    /// What a status request is answered with.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            node: self.id,
            incarnation: self.sessions.incarnation(),
            // Slots holding only a promise are no keys of the store.
            keys: (self.acceptor.keys() - self.acceptor.absent_promises()) as u64,
            requests_in_flight: self.requests_in_flight() as u64,
            sessions: self.sessions.len() as u64,
            uptime_ms: self.clock.micros_since(self.started) / 1000,
            log_bytes: self.log_bytes,
            writes_one_round: self.rounds_taken.writes_one_round,
            writes_two_rounds: self.rounds_taken.writes_two_rounds,
            reads_one_round: self.rounds_taken.reads_one_round,
            epoch: self.rounds.epoch.0,
            catching_up: self.catching_up(),
            config: self.membership.active.clone(),
            frozen: self.membership.frozen.clone(),
            driving: self.reconfig.as_ref().map(|(r, _)| r.describe()),
            guarded: self.guarded,
        }
    }

    /// Everything produced since the last call.
    pub fn take_ready(&mut self) -> Ready<A> {
        self.watch_answers_in_turn = 0;
        std::mem::take(&mut self.ready)
    }

    /// The earliest time at which `handle_timeout` has work to do.
    pub fn next_deadline(&self) -> Option<Time> {
        let proposals = self.proposals.values().map(Proposal::wake_at);
        let queued = self.queued.values().flat_map(|q| q.iter().map(|r| r.deadline));
        let rejoin = self.rejoin.as_ref().and_then(Rejoin::poll_timeout);
        let reconfig = self.reconfig.as_ref().and_then(|(r, _)| r.poll_timeout());
        let frozen = self.membership.frozen.is_some().then_some(self.frozen_poll_at);
        let watches = self.watches.next_deadline().into_iter().chain(self.watch_reads_due_now());
        let others = rejoin.into_iter().chain(reconfig).chain(frozen).chain(watches).chain(self.next_stall());
        proposals.chain(queued).chain(others).min()
    }

    /// The next instant at which a running proposal finds the node cut off
    /// if it hears nothing more: checked then, not at the proposal's next
    /// resend, so that waiting clients hear it as soon as it is true.
    fn next_stall(&self) -> Option<Time> {
        let after = self.stall_after_us();
        let need = super::quorum::majority(self.members.len()).saturating_sub(1);
        let mut heard: Vec<Time> = self.last_heard.values().copied().collect();
        heard.sort_unstable_by(|a, b| b.cmp(a));
        // Cut off once the need-th most recently heard peer falls silent
        // for longer than `after`.
        if need == 0 {
            return None; // alone, the node is its own majority
        }
        let silent_from = heard.get(need - 1).map_or(Time(0), |t| t.plus_micros(after + 1));
        self.proposals
            .values()
            .map(|p| p.running_since().plus_micros(after).max(silent_from))
            .filter(|t| *t > self.clock)
            .min()
    }

    /// A message from a peer (decoded, validated, and known to come from
    /// `from`). A peer may also ask as a client does (a node catching up
    /// writes the epoch register so), and scan this node's slots.
    /// A message from a peer whose datagram named this node's own active
    /// configuration (tests, mostly: see `handle_peer_tagged`).
    pub fn handle_peer(&mut self, now: Time, from: NodeId, msg: Message) {
        self.handle_peer_tagged(now, from, self.config_tag(), msg);
    }

    /// What this node's datagrams say of its configuration.
    pub fn config_tag(&self) -> ConfigTag {
        self.tag
    }

    /// What the node's datagrams name, kept rather than computed for every
    /// datagram. A node joining names no configuration: it has none yet.
    fn compute_tag(membership: &Membership) -> ConfigTag {
        let tag = membership.active.tag();
        if membership.joining { ConfigTag { digest: wire::ConfigDigest::NONE, ..tag } } else { tag }
    }

    /// A message from a peer whose datagram named the configuration `tag`.
    /// Votes, asked or given, pass only between nodes that name the same
    /// one (see `membership`); a node that names another learns ours, or
    /// teaches us theirs.
    pub fn handle_peer_tagged(&mut self, now: Time, from: NodeId, tag: ConfigTag, msg: Message) {
        self.clock = now;
        if from == self.id {
            return;
        }
        // A header naming an epoch beyond reach (see `epoch_in_range`) would
        // keep a node catching up waiting for a configuration that never
        // comes.
        if !self.epoch_within_reach(tag.epoch) {
            self.guarded.ballots_out_of_range += 1;
            return;
        }
        self.last_heard.insert(from, now);
        self.gossip_config(now, from, tag);
        if is_vote(&msg) && !(self.membership.votes(self.id) && tag == self.tag) {
            return;
        }
        // A node catching up adopts pages only from peers of its own
        // configuration: one that names a newer one is asked for it, and
        // the catching up starts over among its members (`install`).
        let answer =
            matches!(msg, Message::ScanPage { .. } | Message::Reply { .. } | Message::StatusReply { .. });
        if self.rejoin.is_some() && answer && tag != self.config_tag() {
            return;
        }
        match msg {
            Message::Request(_) | Message::StatusRequest { .. } => {
                self.client_message(now, ReplyTo::Peer(from), msg)
            }
            // A node catching up votes on nothing and proposes nothing.
            msg if is_vote(&msg) && self.rejoin.is_some() => {}
            msg if is_vote(&msg) && !self.ballots_in_range(&msg) => self.guarded.ballots_out_of_range += 1,
            msg if is_vote(&msg) => self.dispatch(now, from, msg),
            msg if !self.epoch_in_range(&msg) => self.guarded.ballots_out_of_range += 1,
            msg => self.membership_message(now, from, msg),
        }
        self.drain_loopback(now);
        // Here, with no proposal half-finished: an accept or a read's end
        // may have left watches waiting for a read.
        self.start_watch_reads(now);
    }

    /// # Ballots from the network
    ///
    /// Whether every ballot `msg` carries lies within reach of what this
    /// node has seen: rounds within `Rounds::reach` (its counter at start,
    /// grown with time at the fastest rate rounds are ever used, plus
    /// `ROUND_LEAP_MAX`), epochs at most `EPOCH_LEAP_MAX` above its own. An
    /// honest peer's ballot is ahead of this node by no more than the
    /// rounds the cluster used since they last spoke, which never comes
    /// near that; a ballot further ahead is forged or corrupt. Such a
    /// message is dropped whole: an acceptor that promised or accepted it
    /// would refuse every honest ballot on its key for good, and a
    /// proposer that fast-forwarded to it would have spent its round
    /// counter, for every key. Dropped, it costs at most the one key a
    /// poisoned acceptor already refuses: its proposals find no quorum.
    fn ballots_in_range(&self, msg: &Message) -> bool {
        let reach = self.rounds.reach(self.clock);
        let within = |b: &Ballot| {
            b.round < limits::ROUND_MAX
                && b.epoch.0 < limits::EPOCH_MAX
                && b.round <= reach
                && b.epoch.0 <= self.rounds.epoch.0.saturating_add(limits::EPOCH_LEAP_MAX)
        };
        match msg {
            Message::Prepare { ballot, .. } => within(ballot),
            Message::Accept { ballot, next, .. } => within(ballot) && within(next),
            Message::Promise { ballot, accepted, .. } => within(ballot) && within(accepted),
            Message::Accepted { ballot, promised, .. } | Message::Reject { ballot, promised, .. } => {
                within(ballot) && within(promised)
            }
            Message::QueryReply { accepted, .. } => within(accepted),
            _ => true,
        }
    }

    /// Whether the epoch a membership message names is within reach (see
    /// `ballots_in_range`): a fence or a configuration at an absurd epoch
    /// would make the node refuse every honest ballot, on every key.
    fn epoch_in_range(&self, msg: &Message) -> bool {
        let epoch = match msg {
            Message::Scan { epoch, .. } | Message::Seed { epoch, .. } => *epoch,
            Message::ConfigInfo { config } | Message::Install { config } => config.epoch,
            Message::Freeze { change } => change.epoch,
            _ => return true,
        };
        self.epoch_within_reach(epoch)
    }

    fn epoch_within_reach(&self, epoch: Epoch) -> bool {
        epoch.0 < limits::EPOCH_MAX && epoch.0 <= self.rounds.epoch.0.saturating_add(limits::EPOCH_LEAP_MAX)
    }

    /// The messages of catching up and of membership changes, from a peer
    /// or from this node itself (a change this node drives concerns it too).
    fn membership_message(&mut self, now: Time, from: NodeId, msg: Message) {
        match msg {
            Message::Reply { .. } | Message::StatusReply { .. } if self.reconfig.is_some() => {
                self.reconfig_answer(now, from, msg)
            }
            Message::Reply { .. } | Message::StatusReply { .. } => self.rejoin_answer(now, from, msg),
            Message::Scan { epoch, after } => self.serve_scan(from, epoch, after),
            Message::ScanPage { .. } if self.reconfig.is_some() => self.reconfig_answer(now, from, msg),
            Message::ScanPage { epoch, after, slots, done } => {
                self.adopt_page(now, from, epoch, &after, &slots, done)
            }
            Message::ConfigQuery => {
                let config = self.membership.active.clone();
                self.send(from, Message::ConfigInfo { config });
            }
            Message::ConfigInfo { config } => self.install(&config),
            Message::Freeze { change } => self.freeze(from, &change),
            Message::Seed { epoch, after, slots, done } => self.seed(from, epoch, after, &slots, done),
            Message::Install { config } => {
                self.install(&config);
                if self.membership.active.epoch >= config.epoch {
                    self.send(from, Message::Installed { epoch: config.epoch });
                }
            }
            Message::Frozen { .. } | Message::Seeded { .. } | Message::Installed { .. } => {
                self.reconfig_answer(now, from, msg)
            }
            _ => {}
        }
    }

    fn reconfig_answer(&mut self, now: Time, from: NodeId, msg: Message) {
        if let Some((machine, _)) = self.reconfig.as_mut() {
            machine.handle_message(now, from, msg);
            self.flush_reconfig();
        }
    }

    /// A client asks for the membership to become `target`: this node
    /// drives the change (or joins the waiters of the one it drives).
    fn members_request(&mut self, now: Time, from: ReplyTo<A>, id: u64, target: Members) {
        let refuse =
            |why: &str| Message::MembersReply { id, outcome: MembersOutcome::Failed(why.to_string()) };
        // Decoded members skip `Members::new`: check they are sorted and
        // unique, and that there are some.
        let list: Vec<_> = target.iter().cloned().collect();
        if target.is_empty() || Members::new(list).as_ref() != Some(&target) {
            let reply = refuse("the target must name one member or more, each id once");
            return self.ready.messages.push(from.envelope(reply));
        }
        if self.catching_up() {
            let reply = refuse("this node is catching up after losing data; ask another");
            return self.ready.messages.push(from.envelope(reply));
        }
        if let Some((machine, waiting)) = self.reconfig.as_mut() {
            let reply = if *machine.target() == target {
                // Beyond the bound a client is not told the end unasked:
                // it learns it from its next copy of the request.
                if waiting.len() < limits::MEMBER_CHANGE_WAITERS_MAX && !waiting.contains(&(from, id)) {
                    waiting.push((from, id));
                }
                Message::MembersReply { id, outcome: MembersOutcome::InProgress(machine.describe()) }
            } else {
                refuse(&format!(
                    "this node is changing the members to {} already; try again later",
                    machine.target()
                ))
            };
            return self.ready.messages.push(from.envelope(reply));
        }
        let session = SessionId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
        log::info!("node {}: asked to change the members to {target}", self.id);
        #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
        let mut machine = Reconfig::new(now, self.status(), target, session);
        #[cfg(feature = "planted-bugs")]
        {
            machine.bugs = self.bugs;
        }
        self.reconfig = Some((machine, vec![(from, id)]));
        self.flush_reconfig();
        let describe = self.reconfig.as_ref().map(|(r, _)| r.describe());
        if let Some(text) = describe {
            let reply = Message::MembersReply { id, outcome: MembersOutcome::InProgress(text) };
            self.ready.messages.push(from.envelope(reply));
        }
    }

    /// Sends the change's messages (those to this node come back through
    /// the loopback), and answers its clients once it ended.
    fn flush_reconfig(&mut self) {
        let Some((machine, _)) = self.reconfig.as_mut() else { return };
        let out = machine.take_outbox();
        let ending = machine.take_ending();
        for (to, msg) in out {
            self.send(to, msg);
        }
        let Some(ending) = ending else { return };
        let Some((_, waiting)) = self.reconfig.take() else { return };
        let outcome = match ending {
            ReconfigEnding::Done(config) => MembersOutcome::Done(config),
            ReconfigEnding::Failed(why) => MembersOutcome::Failed(why),
        };
        for (to, id) in waiting {
            let reply = Message::MembersReply { id, outcome: outcome.clone() };
            self.ready.messages.push(to.envelope(reply));
        }
    }

    /// A message from a client at `from`.
    pub fn handle_client(&mut self, now: Time, from: A, msg: Message) {
        self.clock = now;
        self.client_message(now, ReplyTo::Client(from), msg);
        self.start_watch_reads(now);
    }

    /// A client's message from a datagram sent outside the replay window
    /// (`wire::is_fresh`): a recorded datagram replayed, or a client whose
    /// clock is far off. A request is refused unrun, and the node never
    /// runs it (every later copy of that datagram is older still); the
    /// rest asks for nothing that a replay could change, and is dropped.
    pub fn handle_client_stale(&mut self, now: Time, from: A, msg: Message) {
        self.clock = now;
        self.stale_message(ReplyTo::Client(from), msg);
    }

    /// A peer's datagram sent outside the replay window: requests it
    /// carries (a node catching up writes as a client does) are refused as
    /// a client's would be; votes and membership messages are judged by
    /// their ballots and epochs, which a replay cannot raise.
    pub fn handle_peer_stale(&mut self, now: Time, from: NodeId, tag: ConfigTag, msg: Message) {
        match msg {
            Message::Request(_) | Message::MembersRequest { .. } => {
                self.clock = now;
                self.stale_message(ReplyTo::Peer(from), msg);
            }
            msg => self.handle_peer_tagged(now, from, tag, msg),
        }
    }

    fn stale_message(&mut self, from: ReplyTo<A>, msg: Message) {
        let why = "the request was sent outside the replay window: check that the clocks of nodes and \
                   clients agree (NTP)";
        match msg {
            Message::Request(request) => {
                self.guarded.requests_expired += 1;
                self.reply(from, request.id, Outcome::Refused(Refusal::Expired));
            }
            Message::MembersRequest { id, .. } => {
                self.guarded.requests_expired += 1;
                let reply = Message::MembersReply { id, outcome: MembersOutcome::Failed(why.to_string()) };
                self.ready.messages.push(from.envelope(reply));
            }
            // Counted too: a client whose clock is off sees its probes
            // unanswered, and status shows why.
            Message::StatusRequest { .. } | Message::WatchRequest { .. } => {
                self.guarded.requests_expired += 1
            }
            _ => {}
        }
    }

    fn client_message(&mut self, now: Time, from: ReplyTo<A>, msg: Message) {
        match msg {
            Message::Request(request) => self.handle_request(now, from, request),
            Message::StatusRequest { session, probe } => {
                let status = self.status();
                let reply = Message::StatusReply { session, probe, node_time: now, status };
                self.ready.messages.push(from.envelope(reply));
            }
            Message::MembersRequest { id, target } => self.members_request(now, from, id, target),
            Message::WatchRequest { id, key, after, every_version } => {
                if let ReplyTo::Client(addr) = from {
                    self.watch_request(now, addr, id, key, after, every_version);
                }
            }
            // A client lists keys (`paxosctl export`): it fences nothing.
            Message::Scan { epoch: Epoch(0), after } if !self.catching_up() => {
                let (slots, done) = self.acceptor.scan(after.as_ref());
                let page = Message::ScanPage { epoch: Epoch(0), after, slots, done };
                self.ready.messages.push(from.envelope(page));
            }
            // Clients have no business sending anything else.
            _ => {}
        }
    }

    /// A peer fences this node at `epoch` and asks for its slots after
    /// `after` (see `rejoin`). The page leaves after the fence is synced.
    /// A node that is catching up itself has nothing trustworthy to tell.
    fn serve_scan(&mut self, from: NodeId, epoch: Epoch, after: Option<Key>) {
        if self.catching_up() {
            return;
        }
        if self.membership.frozen.as_ref().is_some_and(|c| c.epoch == epoch) {
            self.frozen_since = Some(self.clock); // a driver is at work
        }
        if let Some(record) = self.acceptor.raise_floor(epoch) {
            log::info!("node {}: fenced at epoch {epoch} by node {from}, which is catching up", self.id);
            self.ready.records.push(record);
        }
        self.rounds.observe(Ballot::floor_of(epoch));
        let (slots, done) = self.acceptor.scan(after.as_ref());
        self.send(from, Message::ScanPage { epoch, after, slots, done });
    }

    /// A peer that names a newer configuration is asked for it; one that
    /// names an older one is told ours. At most once per peer per
    /// `CONFIG_GOSSIP_MS`, so that a stale peer's stream costs little.
    fn gossip_config(&mut self, now: Time, from: NodeId, tag: ConfigTag) {
        let mine = self.membership.active.epoch;
        if tag.epoch == mine {
            return;
        }
        if tag.epoch > mine {
            // A node catching up does not finish before it has installed a
            // configuration that late: it may have voted in it before it
            // lost its data.
            self.newer_config_seen = true;
        }
        let due = self
            .config_gossip
            .get(&from)
            .is_none_or(|t| now.micros_since(*t) >= limits::CONFIG_GOSSIP_MS * 1000);
        if !due {
            return;
        }
        self.config_gossip.insert(from, now);
        if tag.epoch > mine {
            self.send(from, Message::ConfigQuery);
        } else {
            let config = self.membership.active.clone();
            self.send(from, Message::ConfigInfo { config });
        }
    }

    /// Every proposal's attempt in progress counted its quorum in the
    /// configuration just left: abandoned, to start again in the new one.
    fn abandon_attempts(&mut self) {
        let now = self.clock;
        let keys: Vec<Key> = self.proposals.keys().cloned().collect();
        for key in keys {
            self.with_proposal(now, &key, |p, ctx| p.on_configuration_change(now, ctx.rng));
        }
    }

    /// A frozen node hears of the change's end only from others: it asks
    /// the old and the new members for their configuration now and then.
    fn poll_while_frozen(&mut self, now: Time) {
        let Some(change) = self.membership.frozen.clone() else { return };
        let since = *self.frozen_since.get_or_insert(now);
        let stuck = now.micros_since(since) >= limits::FROZEN_RESUME_MS * 1000;
        if stuck && self.reconfig.is_none() && !self.catching_up() && !self.membership.joining {
            // No driver brought the change to its end: drive it here.
            log::warn!(
                "node {}: frozen for the change of epoch {} too long; driving it to its end",
                self.id,
                change.epoch
            );
            self.frozen_since = Some(now);
            let session =
                SessionId((u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64()));
            #[cfg_attr(not(feature = "planted-bugs"), allow(unused_mut))]
            let mut machine = Reconfig::new(now, self.status(), change.to.clone(), session);
            #[cfg(feature = "planted-bugs")]
            {
                machine.bugs = self.bugs;
            }
            self.reconfig = Some((machine, Vec::new()));
            self.flush_reconfig();
        }
        if now < self.frozen_poll_at {
            return;
        }
        self.frozen_poll_at = now.plus_millis(limits::FROZEN_POLL_MS);
        let nodes = self.membership.active.members.ids_with(&change.to);
        let me = self.id;
        for node in nodes.into_iter().filter(|n| *n != me) {
            self.send(node, Message::ConfigQuery);
        }
    }

    /// Installs `config` if it is newer than the active one: the node votes
    /// in it from now on, refusing every ballot of an older epoch.
    fn install(&mut self, config: &Configuration) {
        if !self.membership.install(config) {
            return;
        }
        self.frozen_since = None;
        self.newer_config_seen = false;
        self.tag = Self::compute_tag(&self.membership);
        self.ready.records.push(Record::Membership(self.membership.clone()));
        self.ready.records.extend(self.acceptor.raise_floor(config.epoch));
        self.rounds.observe(Ballot::floor_of(config.epoch));
        self.members = config.members.ids();
        self.fast_paths.clear();
        self.abandon_attempts();
        // A node catching up counted its majority among the old members:
        // it starts over among the new ones.
        if self.rejoin.is_some() || std::mem::take(&mut self.rejoin_pending) {
            log::info!("node {}: catching up again among the members of epoch {}", self.id, config.epoch);
            self.rejoin = Some(Rejoin::new(self.clock, self.id, &self.members, &mut self.rng));
            self.flush_rejoin();
        }
        let role = if self.membership.removed(self.id) { "not a member" } else { "a member" };
        log::info!(
            "node {}: installed configuration {} of epoch {}; {role}",
            self.id,
            config.members,
            config.epoch
        );
    }

    /// The driver of a change asks this node to take part: it answers once
    /// the frozen state is synced (the answer goes out after this turn's
    /// sync).
    fn freeze(&mut self, from: NodeId, change: &MemberChange) {
        // A node that lost its data has nothing trustworthy to be scanned
        // for, nor to be seeded on top of: it takes part in no change.
        if self.catching_up() {
            return self.send(from, Message::Frozen { epoch: change.epoch, answer: FreezeAnswer::Refused });
        }
        let (answer, changed) = self.membership.freeze(change);
        if answer == FreezeAnswer::Frozen {
            self.frozen_since = Some(self.clock); // a driver is at work
        }
        if changed {
            self.ready.records.push(Record::Membership(self.membership.clone()));
            self.fast_paths.clear();
            self.abandon_attempts();
            log::info!("node {}: frozen for the change to {} in epoch {}", self.id, change.to, change.epoch);
        }
        self.send(from, Message::Frozen { epoch: change.epoch, answer });
    }

    /// A page of the change's merged scans: adopted only by a node frozen
    /// in that change, which votes for nobody, so below no promise it made
    /// in the new configuration. Adopted states are marked as such, as a
    /// rejoin's are: never confirmed as this node's own vote.
    fn seed(&mut self, from: NodeId, epoch: Epoch, after: Option<Key>, slots: &[ScanSlot], done: bool) {
        let adopted = self.membership.may_adopt(epoch) && !self.catching_up();
        if adopted {
            self.frozen_since = Some(self.clock); // a driver is at work
        }
        if adopted {
            for slot in slots {
                self.rounds.adopt(slot.promised);
                self.ready.records.extend(self.acceptor.adopt(slot));
            }
            // Marked adopted: below the change's epoch, and above any later
            // epoch a state was accepted in (a rejoin may have handed one
            // out after the change's), so none counts as this node's vote.
            let top = slots.iter().map(|s| s.accepted.epoch).max().unwrap_or_default();
            let mark = if top >= epoch { Epoch(top.0.saturating_add(1)) } else { epoch };
            if !slots.is_empty() && self.acceptor.adopted_epoch() < mark {
                self.acceptor.mark_adopted_below(mark);
                self.ready.records.push(Record::CaughtUp { epoch: mark });
            }
        }
        self.send(from, Message::Seeded { epoch, after, done, adopted });
    }

    fn rejoin_answer(&mut self, now: Time, from: NodeId, msg: Message) {
        if let Some(rejoin) = self.rejoin.as_mut() {
            rejoin.handle_client_message(now, from, msg);
            self.flush_rejoin();
        }
    }

    fn adopt_page(
        &mut self,
        now: Time,
        from: NodeId,
        epoch: Epoch,
        after: &Option<Key>,
        slots: &[ScanSlot],
        done: bool,
    ) {
        let Some(rejoin) = self.rejoin.as_mut() else { return };
        if rejoin.handle_page(now, from, epoch, after, slots, done) == PageFate::Adopt {
            for slot in slots {
                self.rounds.adopt(slot.promised);
                self.ready.records.extend(self.acceptor.adopt(slot));
            }
        }
        self.flush_rejoin();
        let caught_up = self.rejoin.as_ref().and_then(Rejoin::caught_up);
        if let Some(epoch) = caught_up.filter(|_| !self.newer_config_seen) {
            self.finish_rejoin(epoch);
        }
    }

    /// Caught up: the node fences itself at its new epoch and votes again,
    /// once this turn's records (what it adopted, the fence, the mark) are
    /// synced, since its votes leave only after later syncs.
    fn finish_rejoin(&mut self, epoch: Epoch) {
        self.rejoin = None;
        self.ready.records.extend(self.acceptor.raise_floor(epoch));
        self.acceptor.mark_adopted_below(epoch);
        self.ready.records.push(Record::CaughtUp { epoch });
        self.rounds.observe(Ballot::floor_of(epoch));
        log::info!("node {}: caught up in epoch {epoch}; voting again", self.id);
    }

    fn flush_rejoin(&mut self) {
        let out = self.rejoin.as_mut().map(Rejoin::take_outbox).unwrap_or_default();
        for (to, msg) in out {
            self.send(to, msg);
        }
    }

    fn handle_request(&mut self, now: Time, from: ReplyTo<A>, request: wire::Request) {
        let id = request.id;
        if let Some(refusal) = bad_input(&request) {
            return self.reply(from, id, Outcome::Refused(refusal));
        }
        if let Some(&handle) = self.running.by_id.get(&id) {
            return self.still_running(now, from, &request, handle);
        }
        // The planted bug refuses before the session table hears of the
        // request, as a reply cache full of answers once did.
        if self.forgets_refusals() && self.is_overloaded(&request.key, from) {
            return self.reply(from, id, Outcome::Refused(Refusal::Overloaded));
        }
        let exclusive = match self.sessions.admit(id, request.incarnation, request.resent) {
            Admission::Run { exclusive } => exclusive,
            Admission::Running | Admission::Stale => return,
            Admission::Replay(outcome) => return self.reply(from, id, outcome),
            Admission::WrongIncarnation => {
                return self.reply(from, id, Outcome::Refused(Refusal::StaleIncarnation));
            }
        };
        let refusal = if self.rejoin.is_some() {
            Some(Refusal::CatchingUp)
        } else if self.membership.joining || self.membership.removed(self.id) {
            Some(Refusal::NotMember)
        } else {
            self.is_overloaded(&request.key, from).then_some(Refusal::Overloaded)
        };
        if let Some(refusal) = refusal {
            // Remembered like any answer, so that no later copy runs here.
            self.sessions.finish(id, &Outcome::Refused(refusal));
            return self.reply(from, id, Outcome::Refused(refusal));
        }
        self.start_request(now, from, request, exclusive);
    }

    /// Whether a request on `key` from `from` is refused as overloaded:
    /// the node runs all the requests it may, or the key's queue is full,
    /// or the node is behind on its votes and `from` has its share running
    /// already (see `set_behind`).
    fn is_overloaded(&self, key: &Key, from: ReplyTo<A>) -> bool {
        let queue = self.queued.get(key).map_or(0, VecDeque::len);
        let share = self.behind && self.running.of_client(from) >= self.limits.requests_per_client_behind_max;
        self.requests_in_flight() >= self.limits.requests_in_flight_max
            || queue >= self.limits.requests_queued_per_key_max
            || share
    }

    fn start_request(&mut self, now: Time, from: ReplyTo<A>, request: wire::Request, exclusive: bool) {
        self.running.next_handle += 1;
        let handle = ReqHandle(self.running.next_handle);
        self.running.insert(handle, from, request.id);
        let proposal_request = Request {
            handle,
            fingerprint: request.id.fingerprint(),
            dedupe: Dedupe::new(request.floor, exclusive, request.sent_at, now),
            change: request.change,
            deadline: now.plus_millis(u64::from(request.timeout_ms)),
            resent: request.resent,
            write_back: false,
        };
        self.run_request(now, request.key, proposal_request);
    }

    /// Runs `proposal_request` on `key`: in a new proposal, or with the
    /// one running there.
    fn run_request(&mut self, now: Time, key: Key, proposal_request: Request) {
        if self.proposals.contains_key(&key) {
            // Joins the running batch at its next attempt if it is still
            // open, or runs in the next batch.
            self.queued.entry(key).or_default().push_back(proposal_request);
            return;
        }
        self.proposals.insert(key.clone(), Proposal::new(key.clone(), proposal_request, now));
        self.drive(now, &key);
        self.drain_loopback(now);
    }

    /// Another copy of a request that runs here: it renews the request's
    /// exclusive window if the client sent it as the only one, or revokes it
    /// for good (the client sent copies elsewhere, the window lapsed, or the
    /// node is cut off); the client hears that the node is still at it.
    fn still_running(&mut self, now: Time, from: ReplyTo<A>, request: &wire::Request, handle: ReqHandle) {
        let key = &request.key;
        let cut_off = self.is_cut_off(now);
        let renewal = (!request.resent && !cut_off && request.sent_at <= now)
            .then(|| request.sent_at.plus_millis(limits::EXCLUSIVE_WINDOW_MS));
        let mut exclusive = false;
        if let Some(p) = self.proposals.get_mut(key) {
            exclusive |= p.renew_exclusive(handle, renewal, now);
        }
        for r in self.queued.get_mut(key).into_iter().flatten().filter(|r| r.handle == handle) {
            exclusive |= r.dedupe.renew(renewal, now);
        }
        self.reply(from, request.id, Outcome::InProgress { exclusive, cut_off });
    }

    fn drain_loopback(&mut self, now: Time) {
        while let Some(msg) = self.loopback.pop_front() {
            if is_vote(&msg) {
                self.dispatch(now, self.id, msg);
            } else {
                self.membership_message(now, self.id, msg);
            }
        }
    }

    fn dispatch(&mut self, now: Time, from: NodeId, msg: Message) {
        // A frozen, joining or removed node votes for nobody, itself included.
        if is_vote_request(&msg) && !self.membership.votes(self.id) {
            return;
        }
        match msg {
            // Ballots seen as an acceptor raise the node's own round counter
            // too: a node that becomes the proposer for a key (a client moved
            // to it) then starts above what it promised, instead of losing
            // its first attempt to its own promise.
            Message::Prepare { key, ballot } => {
                self.rounds.observe(ballot);
                let vote = self.acceptor.handle_prepare(&key, ballot);
                self.vote(from, vote);
            }
            Message::Accept { key, ballot, state, next } => {
                let vote = self.acceptor.handle_accept(&key, ballot, &state, next);
                let promised = self.acceptor.promised(&key);
                self.rounds.observe(promised.max(ballot));
                // Another proposer's state may be chosen by now: the watches
                // of its key read it. (This node's own proposals tell its
                // watches what they chose.)
                if from != self.id && matches!(vote.reply, Message::Accepted { .. }) {
                    self.watch_accepted(&key, state.version);
                }
                self.vote(from, vote);
            }
            Message::Query { key, query } => {
                if let Some(reply) = self.acceptor.handle_query(&key, query) {
                    self.send(from, reply);
                }
            }
            Message::QueryReply { key, query, accepted, state } => {
                self.with_proposal(now, &key, |p, ctx| {
                    p.on_query_reply(now, from, query, accepted, &state, ctx)
                });
            }
            Message::Promise { key, ballot, accepted, state } => {
                self.rounds.observe(accepted);
                self.with_proposal(now, &key, |p, ctx| {
                    p.on_promise(now, from, ballot, accepted, &state, ctx)
                });
            }
            Message::Accepted { key, ballot, promised } => {
                self.rounds.observe(promised);
                self.with_proposal(now, &key, |p, _| p.on_accepted(now, from, ballot, promised));
            }
            Message::Reject { key, ballot, promised } => {
                self.rounds.observe(promised);
                // Another proposer's promise ends the key's one-round writes
                // here; one of this node's own (a late copy of its prepare
                // refused) does not.
                if promised.node != self.id && !self.keeps_fast_path_after_conflict() {
                    self.fast_paths.remove(&key);
                }
                self.with_proposal(now, &key, |p, ctx| p.on_reject(now, from, ballot, promised, ctx.rng));
            }
            // Handled before dispatch (`handle_peer`).
            Message::Request(_)
            | Message::Reply { .. }
            | Message::StatusRequest { .. }
            | Message::StatusReply { .. }
            | Message::Scan { .. }
            | Message::ScanPage { .. }
            | Message::ConfigQuery
            | Message::ConfigInfo { .. }
            | Message::Freeze { .. }
            | Message::Frozen { .. }
            | Message::Seed { .. }
            | Message::Seeded { .. }
            | Message::Install { .. }
            | Message::Installed { .. }
            | Message::MembersRequest { .. }
            | Message::MembersReply { .. }
            | Message::WatchRequest { .. }
            | Message::WatchReply { .. } => {}
        }
    }

    fn vote(&mut self, to: NodeId, vote: Vote) {
        self.ready.records.extend(vote.record);
        self.send(to, vote.reply);
    }

    /// Time passed: retries, backoffs and deadlines.
    pub fn handle_timeout(&mut self, now: Time) {
        self.clock = now;
        if let Some(rejoin) = self.rejoin.as_mut() {
            rejoin.handle_timeout(now);
            self.flush_rejoin();
        }
        let due: Vec<Key> =
            self.proposals.iter().filter(|(_, p)| p.wake_at() <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            self.with_proposal(now, &key, |p, ctx| p.on_timer(now, ctx));
        }
        if let Some((machine, _)) = self.reconfig.as_mut() {
            machine.handle_timeout(now);
            self.flush_reconfig();
        }
        self.poll_while_frozen(now);
        if self.is_cut_off(now) {
            self.give_up_stalled(now);
        }
        self.expire_queued(now);
        self.watch_timeout(now);
        self.drain_loopback(now);
    }

    /// How long without hearing from a majority makes this node cut off:
    /// a multiple of how long its quorums took lately (see `STALL_MS_MIN`).
    fn stall_after_us(&self) -> u64 {
        let (min, max) = (limits::STALL_MS_MIN * 1000, limits::STALL_MS_MAX * 1000);
        self.quorum_us.map_or(max, |q| q.saturating_mul(limits::STALL_QUORUM_MULTIPLE).clamp(min, max))
    }

    fn note_quorum(&mut self, us: u64) {
        self.quorum_us = Some(self.quorum_us.map_or(us, |q| (7 * q + us) / 8));
    }

    /// True when the node has been trying to reach a quorum (a proposal has
    /// been running) for `stall_after_us`, and heard from no majority of the
    /// members (itself included) in that time. Silence alone says nothing:
    /// an idle node hears from nobody.
    fn is_cut_off(&self, now: Time) -> bool {
        let after = self.stall_after_us();
        let trying = self.proposals.values().any(|p| now.micros_since(p.running_since()) >= after);
        let since = Time(now.0.saturating_sub(after));
        let heard = self.last_heard.values().filter(|t| **t >= since).count();
        trying && heard + 1 < super::quorum::majority(self.members.len())
    }

    /// Proposals that have tried for `stall_after_us` while the node is cut
    /// off give up what they never sent, and so do the requests queued
    /// behind them: their clients can go elsewhere at once.
    fn give_up_stalled(&mut self, now: Time) {
        let after = self.stall_after_us();
        let stalled: Vec<Key> = self
            .proposals
            .iter()
            .filter(|(_, p)| now.micros_since(p.running_since()) >= after)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stalled {
            let queued = self.queued.remove(&key).unwrap_or_default();
            let never_ran = queued.iter().map(|r| (r.handle, Outcome::Unavailable { maybe_applied: false }));
            self.answer(never_ran.collect());
            let waiting = self.proposals.get(&key).map(Proposal::exclusive_handles).unwrap_or_default();
            self.with_proposal(now, &key, |p, _| p.give_up_unsent());
            self.tell_cut_off(&waiting);
        }
    }

    /// Clients whose write ran here as the only copy wait for this node
    /// alone, renewing their copy now and then: tell them at once that the
    /// node is cut off, so they take the write elsewhere without waiting for
    /// their next renewal. Once per request: `give_up_unsent` has ended the
    /// window, so the next stalled turn finds nothing to tell.
    fn tell_cut_off(&mut self, handles: &[ReqHandle]) {
        for handle in handles {
            if let Some(&(to, id)) = self.running.by_handle.get(handle) {
                self.reply(to, id, Outcome::InProgress { exclusive: false, cut_off: true });
            }
        }
    }

    /// Queued requests whose deadline passed never ran: no accept carried them.
    fn expire_queued(&mut self, now: Time) {
        let mut expired = Vec::new();
        for queue in self.queued.values_mut() {
            queue.retain(|r| {
                let keep = r.deadline > now;
                if !keep {
                    expired.push((r.handle, Outcome::Unavailable { maybe_applied: false }));
                }
                keep
            });
        }
        self.queued.retain(|_, q| !q.is_empty());
        self.answer(expired);
    }

    /// Answers every request, for a clean shutdown: proposals still running
    /// may have sent accepts, so their outcome may be unknown.
    pub fn shutdown(&mut self) {
        let proposals: Vec<Proposal> = std::mem::take(&mut self.proposals).into_values().collect();
        for p in proposals {
            self.answer(p.unavailable());
        }
        let queued: Vec<Request> = std::mem::take(&mut self.queued).into_values().flatten().collect();
        let refused = queued.iter().map(|r| (r.handle, Outcome::Refused(Refusal::ShuttingDown)));
        self.answer(refused.collect());
        self.refuse_watches(Refusal::ShuttingDown);
    }

    /// Runs `f` on the proposal for `key` (if any), then starts attempts that
    /// need a ballot and finishes the proposal if `f` says it is over.
    fn with_proposal(
        &mut self,
        now: Time,
        key: &Key,
        f: impl FnOnce(&mut Proposal, &mut Ctx<'_>) -> Progress,
    ) {
        let Some(mut proposal) = self.proposals.remove(key) else {
            return;
        };
        let mut out = Outbox::new();
        let progress = {
            let mut ctx = self.ctx(&mut out);
            f(&mut proposal, &mut ctx)
        };
        if let Some(us) = proposal.take_quorum_sample_us() {
            self.note_quorum(us);
        }
        if let Some(fast) = proposal.take_fast_path() {
            self.note_fast_path(key, fast);
        }
        if let Some((chosen, mark)) = proposal.take_chosen() {
            self.watch_chosen(key, &chosen, mark);
        }
        self.flush(out);
        self.proposals.insert(key.clone(), proposal);
        match progress {
            Progress::Pending => self.drive(now, key),
            Progress::Settled(outcomes) => {
                self.answer(outcomes);
                self.drive(now, key);
            }
            Progress::Finished(outcomes) => self.finish(now, key, outcomes),
        }
    }

    /// Starts a new attempt if the proposal for `key` is ready for one,
    /// first letting queued requests join the batch while it may grow: a
    /// read in one round if the batch only reads, else accepts at once if
    /// the key's last proposal here left a promise of its next ballot, else
    /// both phases.
    fn drive(&mut self, now: Time, key: &Key) {
        let needs = self.proposals.get(key).is_some_and(|p| p.needs_ballot(now));
        if !needs {
            return;
        }
        self.join_queued(key);
        // Every attempt begins here: the state it finds chosen answers the
        // watches taken by now (see `Watches::deliver`).
        let mark = self.watches.arrivals();
        if let Some(p) = self.proposals.get_mut(key) {
            p.mark_attempt(mark);
        }
        if self.proposals.get(key).is_some_and(Proposal::wants_query) {
            return self.start_query(now, key);
        }
        // Ballots are taken in the order they are used: the attempt's, then
        // the next one its accepts ask to be promised.
        let fast = self.fast_base(key);
        let ballot = match fast.as_ref() {
            Some((ballot, _)) => Some(*ballot),
            None => self.take_ballot(),
        };
        let (Some(ballot), Some(next)) = (ballot, self.take_ballot()) else {
            let outcomes = self.proposals.get(key).map(Proposal::unavailable).unwrap_or_default();
            return self.finish(now, key, outcomes);
        };
        match fast {
            Some((_, base)) => {
                self.rounds_taken.writes_one_round += 1;
                self.with_proposal(now, key, |p, ctx| p.start_fast(now, ballot, next, &base, ctx));
            }
            None => {
                self.rounds_taken.writes_two_rounds += 1;
                let mut out = Outbox::new();
                if let Some(p) = self.proposals.get_mut(key) {
                    p.start(now, ballot, next, &self.members, &mut out);
                }
                self.flush(out);
            }
        }
    }

    fn join_queued(&mut self, key: &Key) {
        if let (Some(p), Some(queue)) = (self.proposals.get_mut(key), self.queued.get_mut(key)) {
            while p.can_grow() {
                let Some(request) = queue.pop_front() else { break };
                p.join(request);
            }
            if queue.is_empty() {
                self.queued.remove(key);
            }
        }
    }

    fn start_query(&mut self, now: Time, key: &Key) {
        self.next_query = self.next_query.wrapping_add(1);
        self.rounds_taken.reads_one_round += 1;
        let query = QueryId(self.next_query);
        let mut out = Outbox::new();
        if let Some(p) = self.proposals.get_mut(key) {
            p.start_query(now, query, &self.members, &mut out);
        }
        self.flush(out);
    }

    /// A fresh ballot of this node (see `Rounds::take`).
    fn take_ballot(&mut self) -> Option<Ballot> {
        let records = self.ready.records.len();
        let ballot = self.rounds.take(self.id, &mut self.ready.records);
        self.ready.reserves_rounds |= self.ready.records.len() > records;
        ballot
    }

    /// The ballot and base state for accepts without a prepare, if the
    /// key's last proposal here left a majority promising its next ballot,
    /// and this node's own acceptor still holds what it accepted then and
    /// promised nothing higher since (else some other proposer came by, and
    /// the prepare would most likely be needed anyway). The base is the
    /// state that proposal had chosen: this acceptor accepted it.
    fn fast_base(&mut self, key: &Key) -> Option<(Ballot, RegisterState)> {
        let fast = *self.fast_paths.get(key)?;
        let slot = self.acceptor.slot(key);
        if self.keeps_fast_path_after_conflict() {
            // The planted bug builds on what this acceptor holds, whatever
            // happened since, at a fresh ballot: the prepare skipped.
            let state = slot.map(|s| s.state.clone()).unwrap_or_default();
            return Some((self.take_ballot()?, state));
        }
        // Used once: the next ballot carries one state only.
        self.fast_paths.remove(key);
        match slot {
            Some(s) if s.accepted == fast.accepted && s.promised == fast.next => {
                Some((fast.next, s.state.clone()))
            }
            _ => None,
        }
    }

    fn note_fast_path(&mut self, key: &Key, fast: FastPath) {
        if self.fast_paths.len() >= limits::FAST_PATH_KEYS_MAX && !self.fast_paths.contains_key(key) {
            self.fast_paths.pop_first();
        }
        self.fast_paths.insert(key.clone(), fast);
    }

    fn finish(&mut self, now: Time, key: &Key, outcomes: Vec<(ReqHandle, Outcome)>) {
        if self.proposals.remove(key).is_none() {
            return;
        }
        self.answer(outcomes);
        let next = self.queued.get_mut(key).and_then(VecDeque::pop_front);
        if self.queued.get(key).is_some_and(VecDeque::is_empty) {
            self.queued.remove(key);
        }
        if let Some(request) = next {
            self.proposals.insert(key.clone(), Proposal::new(key.clone(), request, now));
            self.drive(now, key);
        }
    }

    /// Sends each request's answer to its client, and remembers it for the
    /// session.
    fn answer(&mut self, outcomes: Vec<(ReqHandle, Outcome)>) {
        for (handle, outcome) in outcomes {
            if self.watch_read_done(handle, &outcome) {
                continue;
            }
            let Some((to, id)) = self.running.remove(handle) else {
                continue;
            };
            self.sessions.finish(id, &outcome);
            self.reply(to, id, outcome);
        }
    }

    fn reply(&mut self, to: ReplyTo<A>, id: RequestId, outcome: Outcome) {
        let reply =
            Message::Reply { id, incarnation: self.sessions.incarnation(), node_time: self.clock, outcome };
        self.ready.messages.push(to.envelope(reply));
    }

    fn ctx<'a>(&'a mut self, out: &'a mut Outbox) -> Ctx<'a> {
        Ctx {
            members: &self.members,
            out,
            rng: &mut self.rng,
            #[cfg(feature = "planted-bugs")]
            bugs: self.bugs,
        }
    }

    fn flush(&mut self, out: Outbox) {
        for (to, msg) in out {
            self.send(to, msg);
        }
    }

    /// Messages to ourselves are handled in this turn; their effects leave
    /// the node in the same `Ready`, after the same sync.
    fn send(&mut self, to: NodeId, msg: Message) {
        if to == self.id {
            self.loopback.push_back(msg);
        } else if self.ready.may_leave_early(&msg) {
            self.ready.early.push(Envelope::Peer(to, msg));
        } else {
            self.ready.messages.push(Envelope::Peer(to, msg));
        }
    }

    #[cfg(feature = "planted-bugs")]
    fn keeps_fast_path_after_conflict(&self) -> bool {
        self.bugs.fast_path_after_conflict
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn keeps_fast_path_after_conflict(&self) -> bool {
        false
    }

    #[cfg(feature = "planted-bugs")]
    fn forgets_refusals(&self) -> bool {
        self.bugs.forget_refusals
    }

    #[cfg(not(feature = "planted-bugs"))]
    fn forgets_refusals(&self) -> bool {
        false
    }
}

/// A request refused for what it is, whoever sends it: the same copy would
/// be refused again, so nothing needs remembering.
fn bad_input(request: &wire::Request) -> Option<Refusal> {
    let timeout_ms = u64::from(request.timeout_ms);
    if request.key.0.len() > limits::KEY_BYTES_MAX {
        Some(Refusal::KeyTooLarge)
    } else if request.change.value_bytes() > limits::VALUE_BYTES_MAX {
        Some(Refusal::ValueTooLarge)
    } else if timeout_ms == 0 || timeout_ms > limits::REQUEST_TIMEOUT_MS_MAX {
        Some(Refusal::BadTimeout)
    } else {
        None
    }
}

/// Messages that ask for or carry a vote: they pass only between nodes of
/// one configuration.
fn is_vote(msg: &Message) -> bool {
    is_vote_request(msg)
        || matches!(
            msg,
            Message::Promise { .. }
                | Message::Accepted { .. }
                | Message::Reject { .. }
                | Message::QueryReply { .. }
        )
}

fn is_vote_request(msg: &Message) -> bool {
    matches!(msg, Message::Prepare { .. } | Message::Accept { .. } | Message::Query { .. })
}
