//! Node-level tests: feed one input, assert exactly what came out.

use super::node::{ClientLimits, Envelope, Node, NodeSetup, Ready};
use crate::change::Change;
use crate::limits;
use crate::members::Members;
use crate::storage::{Record, Synced};
use crate::types::{
    Ballot, Evaluation, Fingerprint, History, Incarnation, Key, NodeId, PastState, RegisterState, RequestId,
    SessionId, Time, Value, Version,
};
use crate::wire::{self, Message, Outcome, QueryId, Refusal, WatchAnswer, WatchId};

const T0: Time = Time(1_000_000);
/// The client's address, as the node sees it.
const CLIENT: u32 = 77;
const SESSION: SessionId = SessionId(0xC11E);

fn n(id: u16) -> NodeId {
    NodeId(id)
}

fn b(round: u64, node: u16) -> Ballot {
    Ballot::new(round, n(node))
}

fn k() -> Key {
    Key::from("k")
}

fn id(seq: u64) -> RequestId {
    RequestId { session: SESSION, seq }
}

fn fp(seq: u64) -> Fingerprint {
    id(seq).fingerprint()
}

fn st(v: &str, version: u64) -> RegisterState {
    RegisterState { value: Some(Value::from(v)), version: Version(version), ..Default::default() }
}

/// `st` remembering the given evaluations (newest first): (request seq,
/// version, took effect).
fn st_with(v: &str, version: u64, recent: &[(u64, u64, bool)]) -> RegisterState {
    let recent = recent
        .iter()
        .map(|&(seq, at, took_effect)| Evaluation { request: fp(seq), version: Version(at), took_effect })
        .collect();
    RegisterState { recent, ..st(v, version) }
}

/// A state remembering `RECENT_WRITES_MAX` writes by others, the oldest at
/// `oldest`, the newest (and the state's version) at `oldest + MAX - 1`.
fn full_of_others(v: &str, oldest: u64) -> RegisterState {
    let max = limits::RECENT_WRITES_MAX as u64;
    let others: Vec<(u64, u64, bool)> = (0..max).rev().map(|i| (1000 + i, oldest + i, true)).collect();
    st_with(v, oldest + max - 1, &others)
}

/// `state` as the attempt at `ballot` writes it on top of `parent`.
fn written_on(mut state: RegisterState, ballot: Ballot, parent: &RegisterState) -> RegisterState {
    state.written_by(ballot, parent);
    state
}

fn setup(members: u16, records: Vec<Record>) -> NodeSetup {
    NodeSetup {
        id: n(1),
        founding: Members::named(&(1..=members).map(NodeId).collect::<Vec<_>>()),
        records,
        seed: 7,
        now: Time(0),
        limits: ClientLimits::default(),
    }
}

fn node1() -> Node<u32> {
    Node::new(setup(3, Vec::new()))
}

fn incarnation(node: &Node<u32>) -> Incarnation {
    node.status().incarnation
}

/// Takes the node's output and returns its records and messages.
fn drain(node: &mut Node<u32>) -> (Vec<Record>, Vec<Envelope<u32>>) {
    let ready: Ready<u32> = node.take_ready();
    let records = ready.records.clone();
    (records, ready.release(Synced(())))
}

/// A promise from an acceptor that has accepted nothing for the key.
fn empty_promise(ballot: Ballot) -> Message {
    Message::Promise { key: k(), ballot, accepted: Ballot::ZERO, state: RegisterState::default() }
}

fn slot(promised: Ballot, accepted: Ballot, state: RegisterState) -> Record {
    Record::Slot { key: k(), promised, accepted, state }
}

/// The first copy of request `seq`, as a client that knows the node sends it.
fn request(node: &Node<u32>, seq: u64, change: Change, timeout_ms: u32) -> wire::Request {
    wire::Request {
        id: id(seq),
        key: k(),
        change,
        timeout_ms,
        incarnation: incarnation(node),
        sent_at: T0,
        resent: false,
        floor: Version(0),
    }
}

fn send(node: &mut Node<u32>, at: Time, request: wire::Request) {
    node.handle_client(at, CLIENT, Message::Request(request));
}

fn put(node: &mut Node<u32>, seq: u64, value: &str) {
    let r = request(node, seq, Change::Put(Value::from(value)), 1000);
    send(node, T0, r);
}

/// The reply the node sends for request `seq` at `at`.
fn reply_at(node: &Node<u32>, seq: u64, at: Time, outcome: Outcome) -> Envelope<u32> {
    let reply = Message::Reply { id: id(seq), incarnation: incarnation(node), node_time: at, outcome };
    Envelope::Client(CLIENT, reply)
}

fn reply(node: &Node<u32>, seq: u64, outcome: Outcome) -> Envelope<u32> {
    reply_at(node, seq, T0, outcome)
}

fn written(version: u64) -> Outcome {
    Outcome::Done { version: Version(version), precondition_held: true, value: None }
}

/// An accepted from a peer that did not promise the proposer's next ballot
/// (so the node's next attempt on the key prepares again).
fn accepted(ballot: Ballot) -> Message {
    Message::Accepted { key: k(), ballot, promised: ballot }
}

fn accepts(ballot: Ballot, state: RegisterState) -> Vec<Envelope<u32>> {
    let next = Ballot::new(ballot.round + 1, ballot.node);
    [2, 3]
        .map(|p| Envelope::Peer(n(p), Message::Accept { key: k(), ballot, state: state.clone(), next }))
        .to_vec()
}

#[test]
fn a_request_reserves_rounds_promises_locally_and_prepares_at_peers() {
    let mut node = node1();
    put(&mut node, 1, "v");
    let (records, messages) = drain(&mut node);
    assert_eq!(
        records,
        vec![
            Record::RoundsReserved { round_limit: 1 + limits::ROUND_BLOCK },
            slot(b(1, 1), Ballot::ZERO, RegisterState::default()),
        ]
    );
    assert_eq!(
        messages,
        vec![
            Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(1, 1) }),
            Envelope::Peer(n(3), Message::Prepare { key: k(), ballot: b(1, 1) }),
        ]
    );
}

#[test]
fn a_majority_of_promises_leads_to_accept_of_the_changed_highest_state() {
    let mut node = node1();
    put(&mut node, 1, "new");
    drain(&mut node);
    let promise = Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state: st("old", 4) };
    node.handle_peer(T0, n(2), promise);
    let (records, messages) = drain(&mut node);
    // Node 2 reported a state accepted at a ballot above "none": the change
    // applies to it, so the version continues from 4, and the new state
    // remembers the request.
    let new = written_on(st_with("new", 5, &[(1, 5, true)]), b(1, 1), &st("old", 4));
    assert_eq!(new.writers, vec![b(1, 1)]);
    // The local acceptor accepts, and promises the next ballot too.
    assert_eq!(records, vec![slot(b(2, 1), b(1, 1), new.clone())]);
    assert_eq!(messages, accepts(b(1, 1), new));
}

#[test]
fn the_highest_accepted_ballot_wins_among_promises() {
    let mut node = Node::new(setup(5, Vec::new()));
    put(&mut node, 1, "new");
    drain(&mut node);
    let promise = |accepted, state| Message::Promise { key: k(), ballot: b(1, 1), accepted, state };
    node.handle_peer(T0, n(2), promise(b(0, 3), st("older", 2)));
    assert!(drain(&mut node).1.is_empty(), "two of five promises are not a quorum");
    node.handle_peer(T0, n(3), promise(b(0, 4), st("newest", 3)));
    let (_, messages) = drain(&mut node);
    let [Envelope::Peer(_, Message::Accept { ballot, state, next, .. }), ..] = &messages[..] else {
        panic!("no accept: {messages:?}");
    };
    assert_eq!((*ballot, *next), (b(1, 1), b(2, 1)));
    assert_eq!(state.version, Version(4), "built on the newest state: {state:?}");
}

#[test]
fn a_majority_of_accepted_answers_the_client() {
    let mut node = node1();
    put(&mut node, 9, "v");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    drain(&mut node);
    node.handle_peer(T0, n(3), accepted(b(1, 1)));
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    assert_eq!(messages, vec![reply(&node, 9, written(1))]);
    assert_eq!(node.requests_in_flight(), 0);
}

fn query_reply(query: QueryId, accepted: Ballot, state: RegisterState) -> Message {
    Message::QueryReply { key: k(), query, accepted, state }
}

/// Sends a read and returns the id of the query it started.
fn read_queried(node: &mut Node<u32>, seq: u64) -> QueryId {
    let read = request(node, seq, Change::Read, 1000);
    send(node, T0, read);
    let (_, messages) = drain(node);
    match messages.first() {
        Some(Envelope::Peer(_, Message::Query { query, .. })) => *query,
        other => panic!("no query sent: {other:?}"),
    }
}

#[test]
fn a_read_asks_every_acceptor_what_it_accepted_and_nothing_is_written() {
    let mut node = node1();
    let read = request(&node, 1, Change::Read, 1000);
    send(&mut node, T0, read);
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    let [
        Envelope::Peer(n2, Message::Query { query, .. }),
        Envelope::Peer(n3, Message::Query { query: q3, .. }),
    ] = &messages[..]
    else {
        panic!("not a query to each peer: {messages:?}");
    };
    assert_eq!((*n2, *n3, query), (n(2), n(3), q3));
}

#[test]
fn a_read_answers_in_one_round_when_a_majority_reports_one_ballot() {
    let mut node = node1();
    let query = read_queried(&mut node, 1);
    // The local acceptor has nothing; two peers agree on (0,2).
    node.handle_peer(T0, n(2), query_reply(query, b(0, 2), st("x", 2)));
    assert!(drain(&mut node).1.is_empty(), "one for nothing, one for (0,2): no majority yet");
    node.handle_peer(T0, n(3), query_reply(query, b(0, 2), st("x", 2)));
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    let found =
        Outcome::Done { version: Version(2), precondition_held: true, value: Some(Some(Value::from("x"))) };
    assert_eq!(messages, vec![reply(&node, 1, found)]);
}

#[test]
fn a_read_whose_acceptors_disagree_runs_both_phases_and_writes_back() {
    let mut node = node1();
    let query = read_queried(&mut node, 1);
    node.handle_peer(T0, n(2), query_reply(query, b(0, 2), st("x", 2)));
    node.handle_peer(T0, n(3), query_reply(query, b(0, 3), st("y", 3)));
    let (_, messages) = drain(&mut node);
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(1, 1) }));
    let promise = Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 3), state: st("y", 3) };
    node.handle_peer(T0, n(3), promise);
    assert_eq!(drain(&mut node).1, accepts(b(1, 1), st("y", 3)), "the newest state is written back");
    node.handle_peer(T0, n(3), accepted(b(1, 1)));
    let found =
        Outcome::Done { version: Version(3), precondition_held: true, value: Some(Some(Value::from("y"))) };
    assert_eq!(drain(&mut node).1, vec![reply(&node, 1, found)]);
}

/// Lets the query of a read started at `T0` go unanswered through every
/// resend: the read falls back to both phases. Returns the time it did.
fn query_unanswered(node: &mut Node<u32>, query: QueryId) -> Time {
    let mut at = T0;
    for _ in 0..limits::QUERY_RESENDS_MAX {
        at = at.plus_millis(limits::PHASE_RESEND_MS);
        node.handle_timeout(at);
        let again = [2, 3].map(|p| Envelope::Peer(n(p), Message::Query { key: k(), query })).to_vec();
        assert_eq!(drain(node).1, again, "silent members are asked again");
    }
    at = at.plus_millis(limits::PHASE_RESEND_MS);
    node.handle_timeout(at);
    at
}

#[test]
fn a_read_whose_query_goes_unanswered_falls_back_to_both_phases() {
    let mut node = node1();
    let query = read_queried(&mut node, 1);
    query_unanswered(&mut node, query);
    let (_, messages) = drain(&mut node);
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(1, 1) }));
}

#[test]
fn a_read_whose_query_is_answered_after_a_resend_needs_one_round() {
    let mut node = node1();
    let query = read_queried(&mut node, 1);
    node.handle_timeout(T0.plus_millis(limits::PHASE_RESEND_MS));
    drain(&mut node);
    node.handle_peer(T0, n(3), query_reply(query, Ballot::ZERO, RegisterState::default()));
    let absent = Outcome::Done { version: Version(0), precondition_held: true, value: Some(None) };
    assert_eq!(drain(&mut node), (vec![], vec![reply(&node, 1, absent)]));
}

#[test]
fn a_read_in_both_phases_of_a_key_nothing_was_accepted_for_writes_nothing_back() {
    let mut node = node1();
    let query = read_queried(&mut node, 1);
    query_unanswered(&mut node, query);
    let (records, _) = drain(&mut node);
    let promise = slot(b(1, 1), Ballot::ZERO, RegisterState::default());
    assert_eq!(records.last(), Some(&promise), "the local promise");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    let absent = Outcome::Done { version: Version(0), precondition_held: true, value: Some(None) };
    assert_eq!(drain(&mut node), (vec![], vec![reply(&node, 1, absent)]), "answered without accepts");
    // The next read of the key finds only the promise, and reads in one
    // round again.
    let query = read_queried(&mut node, 2);
    node.handle_peer(T0, n(3), query_reply(query, Ballot::ZERO, RegisterState::default()));
    assert_eq!(drain(&mut node).1.len(), 1, "answered");
}

#[test]
fn dropped_promises_survive_compaction_and_a_restart_as_the_floor_of_keys_without_a_slot() {
    let promise = |name: &str, round| Record::Slot {
        key: Key::from(name),
        promised: b(round, 2),
        accepted: Ballot::ZERO,
        state: RegisterState::default(),
    };
    let limits = ClientLimits { absent_promises_max: 1, ..ClientLimits::default() };
    let node: Node<u32> = Node::new(NodeSetup { limits, ..setup(3, vec![promise("a", 4), promise("b", 6)]) });
    let live: Vec<Record> = node.live_records().collect();
    assert!(live.contains(&Record::AbsentFloor { promised: b(4, 2) }), "{live:?}");
    assert!(!live.iter().any(|r| matches!(r, Record::Slot { key, .. } if *key == Key::from("a"))));
    // Restarted from the compacted log, with room for every promise, it
    // still refuses a ballot below the promise it dropped.
    let mut restarted: Node<u32> = Node::new(setup(3, live));
    let accept =
        Message::Accept { key: Key::from("a"), ballot: b(3, 3), state: st("x", 1), next: Ballot::ZERO };
    restarted.handle_peer(T0, n(3), accept);
    let reject = Message::Reject { key: Key::from("a"), ballot: b(3, 3), promised: b(4, 2) };
    assert_eq!(drain(&mut restarted), (vec![], vec![Envelope::Peer(n(3), reject)]));
}

#[test]
fn a_late_answer_to_a_query_of_an_earlier_life_is_not_counted() {
    let mut node = node1();
    let old_query = read_queried(&mut node, 1);
    // Nodes 2 and 3 answer "old" at (0,2), and the answers are delayed.
    // Node 2 then writes "new" at (5,2), accepted by nodes 1 and 2: chosen.
    // Node 1 restarts, and a client reads.
    let records = vec![
        Record::RoundsReserved { round_limit: 1 + limits::ROUND_BLOCK },
        slot(b(5, 2), b(5, 2), st("new", 2)),
    ];
    let mut node: Node<u32> = Node::new(NodeSetup { seed: 8, ..setup(3, records) });
    read_queried(&mut node, 2);
    node.handle_peer(T0, n(2), query_reply(old_query, b(0, 2), st("old", 1)));
    node.handle_peer(T0, n(3), query_reply(old_query, b(0, 2), st("old", 1)));
    let (_, messages) = drain(&mut node);
    assert!(messages.is_empty(), "answers to another query counted: {messages:?}");
}

// One round trip per write.

/// Runs a put of `seq` through both phases at ballot (1,1), with node 2
/// promising the next ballot (2,1) in its accepted.
fn put_with_next_promised(node: &mut Node<u32>, seq: u64) {
    put(node, seq, "a");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    node.handle_peer(T0, n(2), Message::Accepted { key: k(), ballot: b(1, 1), promised: b(2, 1) });
    drain(node);
}

#[test]
fn after_a_write_whose_accepts_promised_the_next_ballot_the_next_write_skips_the_prepare() {
    let mut node = node1();
    put_with_next_promised(&mut node, 1);
    put(&mut node, 2, "b");
    let (records, messages) = drain(&mut node);
    let base = written_on(st_with("a", 1, &[(1, 1, true)]), b(1, 1), &RegisterState::default());
    let new = written_on(st_with("b", 2, &[(2, 2, true), (1, 1, true)]), b(2, 1), &base);
    assert_eq!(messages, accepts(b(2, 1), new.clone()), "accepts at the promised ballot, asking for (3,1)");
    assert_eq!(records, vec![slot(b(3, 1), b(2, 1), new)]);
    node.handle_peer(T0, n(3), Message::Accepted { key: k(), ballot: b(2, 1), promised: b(3, 1) });
    assert_eq!(drain(&mut node).1, vec![reply(&node, 2, written(2))]);
    assert_eq!((node.status().writes_one_round, node.status().writes_two_rounds), (1, 1));
}

#[test]
fn without_a_majority_promising_the_next_ballot_the_next_write_prepares() {
    let mut node = node1();
    put(&mut node, 1, "a");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    // Node 2 accepted, but had promised a higher ballot already (a copy).
    node.handle_peer(T0, n(2), Message::Accepted { key: k(), ballot: b(1, 1), promised: b(7, 3) });
    drain(&mut node);
    put(&mut node, 2, "b");
    let (_, messages) = drain(&mut node);
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(8, 1) }));
}

#[test]
fn a_prepare_of_another_proposer_at_the_local_acceptor_ends_the_one_round_writes() {
    let mut node = node1();
    put_with_next_promised(&mut node, 1);
    node.handle_peer(T0, n(3), Message::Prepare { key: k(), ballot: b(5, 3) });
    drain(&mut node);
    put(&mut node, 2, "b");
    let (_, messages) = drain(&mut node);
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(6, 1) }));
}

#[test]
fn a_refused_accept_without_prepare_falls_back_to_both_phases() {
    let mut node = node1();
    put_with_next_promised(&mut node, 1);
    put(&mut node, 2, "b");
    drain(&mut node);
    // Node 2 promised node 3's ballot in the meantime; node 3 too.
    for peer in [2, 3] {
        node.handle_peer(T0, n(peer), Message::Reject { key: k(), ballot: b(2, 1), promised: b(9, 3) });
    }
    drain(&mut node);
    let retry_at = node.next_deadline().expect("a retry is scheduled");
    node.handle_timeout(retry_at);
    let (_, messages) = drain(&mut node);
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(10, 1) }));
}

#[test]
fn duplicate_answers_from_one_node_do_not_make_a_quorum() {
    let mut node = Node::new(setup(5, Vec::new()));
    put(&mut node, 1, "v");
    drain(&mut node);
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    assert!(drain(&mut node).1.is_empty());
}

#[test]
fn a_rejection_fast_forwards_the_next_ballot_past_the_promise() {
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    node.handle_peer(T0, n(2), Message::Reject { key: k(), ballot: b(1, 1), promised: b(40, 3) });
    node.handle_peer(T0, n(3), Message::Reject { key: k(), ballot: b(1, 1), promised: b(41, 2) });
    assert!(drain(&mut node).1.is_empty(), "waits out a backoff before retrying");
    let wake = node.next_deadline().expect("a retry is scheduled");
    assert!(wake <= T0.plus_millis(limits::BACKOFF_MS_MIN), "first backoff is at most the minimum");
    node.handle_timeout(wake);
    let (_, messages) = drain(&mut node);
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(42, 1) }));
}

#[test]
fn silent_peers_get_the_prepare_again_after_the_resend_interval() {
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    node.handle_timeout(T0.plus_millis(limits::PHASE_RESEND_MS));
    let (_, messages) = drain(&mut node);
    assert_eq!(
        messages,
        vec![
            Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(1, 1) }),
            Envelope::Peer(n(3), Message::Prepare { key: k(), ballot: b(1, 1) }),
        ]
    );
}

#[test]
fn at_the_deadline_a_request_that_never_sent_an_accept_is_known_not_applied() {
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    let (at, reply) = run_until_answered(&mut node, T0.plus_millis(1000));
    assert_eq!(reply, reply_at(&node, 1, at, Outcome::Unavailable { maybe_applied: false }));
}

#[test]
fn at_the_deadline_a_request_that_sent_an_accept_has_an_unknown_outcome() {
    let mut node = node1();
    put(&mut node, 1, "v");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    drain(&mut node);
    let (at, reply) = run_until_answered(&mut node, T0.plus_millis(1000));
    assert_eq!(reply, reply_at(&node, 1, at, Outcome::Unavailable { maybe_applied: true }));
}

/// Fires every timer up to `until` (peers stay silent) and returns the
/// first client reply that ends a request, and when it came.
fn run_until_answered(node: &mut Node<u32>, until: Time) -> (Time, Envelope<u32>) {
    for _ in 0..10_000 {
        let Some(t) = node.next_deadline().filter(|t| *t <= until) else { break };
        node.handle_timeout(t);
        let (_, messages) = drain(node);
        let in_progress = |m: &Envelope<u32>| {
            matches!(m, Envelope::Client(_, Message::Reply { outcome: Outcome::InProgress { .. }, .. }))
        };
        let mut to_clients = messages.into_iter().filter(|m| matches!(m, Envelope::Client(..)));
        if let Some(reply) = to_clients.find(|m| !in_progress(m)) {
            return (t, reply);
        }
    }
    panic!("no answer by {until:?}");
}

/// Runs the node's timers until one sends clients something: when, and
/// every message to clients then.
fn run_until_clients_hear(node: &mut Node<u32>, until: Time) -> (Time, Vec<Envelope<u32>>) {
    for _ in 0..10_000 {
        let Some(t) = node.next_deadline().filter(|t| *t <= until) else { break };
        node.handle_timeout(t);
        let (_, messages) = drain(node);
        let to_clients: Vec<_> = messages.into_iter().filter(|m| matches!(m, Envelope::Client(..))).collect();
        if !to_clients.is_empty() {
            return (t, to_clients);
        }
    }
    panic!("no answer by {until:?}");
}

#[test]
fn requests_on_one_key_run_one_after_another() {
    let mut node = node1();
    put(&mut node, 1, "a");
    let second = RequestId { session: SessionId(2), seq: 1 };
    let r = wire::Request { id: second, ..request(&node, 1, Change::Put(Value::from("b")), 1000) };
    send(&mut node, T0, r);
    let (_, messages) = drain(&mut node);
    assert_eq!(messages.len(), 2, "only the first request prepares: {messages:?}");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    let (_, messages) = drain(&mut node);
    assert!(messages.contains(&reply(&node, 1, written(1))));
    assert!(messages.contains(&Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(3, 1) })));
}

#[test]
fn oversized_and_bad_requests_are_refused_at_once() {
    let mut node = node1();
    let big = Value(vec![0; limits::VALUE_BYTES_MAX + 1]);
    let r = request(&node, 1, Change::Put(big), 1000);
    send(&mut node, T0, r);
    let r = wire::Request {
        key: Key(vec![0; limits::KEY_BYTES_MAX + 1]),
        ..request(&node, 2, Change::Read, 1000)
    };
    send(&mut node, T0, r);
    let r = request(&node, 3, Change::Read, 0);
    send(&mut node, T0, r);
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    assert_eq!(
        messages,
        vec![
            reply(&node, 1, Outcome::Refused(Refusal::ValueTooLarge)),
            reply(&node, 2, Outcome::Refused(Refusal::KeyTooLarge)),
            reply(&node, 3, Outcome::Refused(Refusal::BadTimeout)),
        ]
    );
}

#[test]
fn a_restart_skips_the_rest_of_the_reserved_block() {
    let records = vec![Record::RoundsReserved { round_limit: 1025 }, slot(b(3, 2), b(3, 2), st("x", 1))];
    let mut node = Node::new(setup(3, records));
    put(&mut node, 1, "v");
    let (records, messages) = drain(&mut node);
    assert_eq!(records[0], Record::RoundsReserved { round_limit: 1025 + limits::ROUND_BLOCK });
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(1025, 1) }));
}

#[test]
fn restored_slots_answer_prepares_with_their_accepted_state() {
    let records = vec![slot(b(3, 2), b(3, 2), st("x", 1))];
    let mut node: Node<u32> = Node::new(setup(3, records));
    node.handle_peer(T0, n(2), Message::Prepare { key: k(), ballot: b(2, 2) });
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    assert_eq!(
        messages,
        vec![Envelope::Peer(n(2), Message::Reject { key: k(), ballot: b(2, 2), promised: b(3, 2) })]
    );
    node.handle_peer(T0, n(3), Message::Prepare { key: k(), ballot: b(4, 3) });
    let (records, messages) = drain(&mut node);
    assert_eq!(records, vec![slot(b(4, 3), b(3, 2), st("x", 1))]);
    let promise = Message::Promise { key: k(), ballot: b(4, 3), accepted: b(3, 2), state: st("x", 1) };
    assert_eq!(messages, vec![Envelope::Peer(n(3), promise)]);
}

#[test]
fn shutdown_answers_every_request() {
    let mut node = node1();
    put(&mut node, 1, "a");
    let second = RequestId { session: SessionId(2), seq: 1 };
    let r = wire::Request { id: second, ..request(&node, 1, Change::Put(Value::from("b")), 1000) };
    send(&mut node, T0, r);
    drain(&mut node);
    node.shutdown();
    let (_, messages) = drain(&mut node);
    let refused = Message::Reply {
        id: second,
        incarnation: incarnation(&node),
        node_time: T0,
        outcome: Outcome::Refused(Refusal::ShuttingDown),
    };
    assert_eq!(
        messages,
        vec![
            reply(&node, 1, Outcome::Unavailable { maybe_applied: false }),
            Envelope::Client(CLIENT, refused)
        ]
    );
}

#[test]
fn a_short_deadline_in_a_batch_expires_alone() {
    let mut node = node1();
    put(&mut node, 1, "a");
    let other = |session: u128| RequestId { session: SessionId(session), seq: 1 };
    let r = wire::Request { id: other(2), ..request(&node, 1, Change::Put(Value::from("b")), 5000) };
    send(&mut node, T0, r);
    let r = wire::Request { id: other(3), ..request(&node, 1, Change::Put(Value::from("c")), 1) };
    send(&mut node, T0, r);
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    // Requests 2 and 3 share the second round (the first took ballots 1 and
    // 2); it reaches the accept phase.
    let promise = Message::Promise {
        key: k(),
        ballot: b(3, 1),
        accepted: b(1, 1),
        state: st_with("a", 1, &[(1, 1, true)]),
    };
    node.handle_peer(T0, n(2), promise);
    drain(&mut node);
    let expiry = T0.plus_millis(1);
    node.handle_timeout(expiry);
    let (_, messages) = drain(&mut node);
    let unknown = Message::Reply {
        id: other(3),
        incarnation: incarnation(&node),
        node_time: expiry,
        outcome: Outcome::Unavailable { maybe_applied: true },
    };
    assert_eq!(messages, vec![Envelope::Client(CLIENT, unknown)]);
    node.handle_peer(expiry, n(2), accepted(b(3, 1)));
    let (_, messages) = drain(&mut node);
    assert!(
        matches!(
            &messages[..],
            [Envelope::Client(
                _,
                Message::Reply { outcome: Outcome::Done { precondition_held: true, .. }, .. }
            )]
        ),
        "{messages:?}"
    );
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn a_deadline_that_passes_while_promises_come_is_answered_not_evaluated() {
    let mut node = node1();
    let r = request(&node, 1, Change::Put(Value::from("late")), 10);
    send(&mut node, T0, r);
    drain(&mut node);
    let late = T0.plus_millis(10);
    node.handle_peer(late, n(2), empty_promise(b(1, 1)));
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty(), "nothing accepted: {records:?}");
    assert_eq!(messages, vec![reply_at(&node, 1, late, Outcome::Unavailable { maybe_applied: false })]);
}

#[test]
fn a_spent_round_counter_stops_proposing_instead_of_reusing_a_ballot() {
    // Only a damaged log could hold such a reservation: promises at the
    // end of the rounds are never adopted (`core::node`, "Ballots from the
    // network"), so no honest counter gets here.
    let spent = Record::RoundsReserved { round_limit: u64::MAX };
    let mut node = Node::new(setup(3, vec![spent]));
    put(&mut node, 1, "a");
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty(), "{records:?}");
    assert_eq!(messages, vec![reply(&node, 1, Outcome::Unavailable { maybe_applied: false })]);
}

// Applying a write at most once.

/// Runs `r` to its promise quorum at ballot (1,1), with node 2 reporting
/// `state` accepted at (0,2); returns what the node sent.
fn promised(node: &mut Node<u32>, at: Time, r: wire::Request, state: RegisterState) -> Vec<Envelope<u32>> {
    send(node, T0, r);
    drain(node);
    node.handle_peer(at, n(2), Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state });
    drain(node).1
}

#[test]
fn a_retried_write_found_among_the_remembered_writes_is_answered_not_applied_again() {
    let mut node = node1();
    // The request ran elsewhere (or before a restart) and wrote version 3;
    // another write came after it.
    let base = st_with("other", 4, &[(1000, 4, true), (1, 3, true)]);
    let retry = wire::Request {
        resent: true,
        floor: Version(2),
        ..request(&node, 1, Change::Put(Value::from("v")), 1000)
    };
    let messages = promised(&mut node, T0, retry, base.clone());
    assert_eq!(messages, accepts(b(1, 1), base), "the base is proposed unchanged");
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    assert_eq!(drain(&mut node).1, vec![reply(&node, 1, written(3))]);
}

#[test]
fn a_retried_compare_and_set_that_failed_before_fails_again_even_if_it_would_hold_now() {
    let mut node = node1();
    let cas = Change::CasValue { expect: Some(Value::from("a")), new: Value::from("b") };
    // It found "x" at version 2 and failed; the key went back to "a" since.
    let base = st_with("a", 3, &[(1000, 3, true), (1, 2, false)]);
    let retry = wire::Request { resent: true, floor: Version(1), ..request(&node, 1, cas, 1000) };
    assert_eq!(promised(&mut node, T0, retry, base.clone()), accepts(b(1, 1), base));
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    // The answer is the failure as it was: at version 2, the value it was
    // compared with no longer known (not "a", which would contradict it).
    let failed = Outcome::Done { version: Version(2), precondition_held: false, value: None };
    assert_eq!(drain(&mut node).1, vec![reply(&node, 1, failed)]);
}

#[test]
fn a_resent_write_not_remembered_since_its_floor_is_applied() {
    let mut node = node1();
    // The oldest remembered write is at version 10; the client saw
    // version 10, so any evaluation of its request would be remembered.
    let base = full_of_others("x", 10);
    let top = base.version.0;
    let retry = wire::Request {
        resent: true,
        floor: Version(10),
        ..request(&node, 1, Change::Put(Value::from("v")), 1000)
    };
    let messages = promised(&mut node, T0, retry, base.clone());
    let mut new = RegisterState { value: Some(Value::from("v")), version: Version(top + 1), ..base.clone() };
    new.remember(Evaluation { request: fp(1), version: Version(top + 1), took_effect: true });
    assert_eq!(messages, accepts(b(1, 1), written_on(new, b(1, 1), &base)));
}

#[test]
fn a_resent_write_that_may_have_been_forgotten_is_indeterminate_and_never_applied() {
    let mut node = node1();
    // The client last saw version 9, but the key forgot everything before
    // version 10: its request may have been evaluated on version 9 and
    // forgotten.
    let base = full_of_others("x", 10);
    let retry = wire::Request {
        resent: true,
        floor: Version(9),
        ..request(&node, 1, Change::Put(Value::from("v")), 1000)
    };
    let messages = promised(&mut node, T0, retry, base);
    assert_eq!(messages, vec![reply(&node, 1, Outcome::Indeterminate)], "nothing accepted");
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn an_exclusive_first_copy_is_applied_within_its_window_whatever_the_floor() {
    let mut node = node1();
    let base = full_of_others("x", 10);
    let first = request(&node, 1, Change::Put(Value::from("v")), 1000);
    let within = T0.plus_millis(limits::EXCLUSIVE_WINDOW_MS - 1);
    let messages = promised(&mut node, within, first, base);
    assert!(
        matches!(&messages[..], [Envelope::Peer(_, Message::Accept { state, .. }), _] if state.version.0 == 10 + limits::RECENT_WRITES_MAX as u64)
    );
}

#[test]
fn after_its_window_an_exclusive_copy_is_judged_by_its_floor() {
    let mut node = node1();
    let base = full_of_others("x", 10);
    let first = request(&node, 1, Change::Put(Value::from("v")), 1000);
    let after = T0.plus_millis(limits::EXCLUSIVE_WINDOW_MS);
    assert_eq!(
        promised(&mut node, after, first, base),
        vec![reply_at(&node, 1, after, Outcome::Indeterminate)]
    );
}

#[test]
fn a_copy_whose_sending_time_lies_ahead_of_the_node_clock_gets_no_window() {
    let mut node = node1();
    let base = full_of_others("x", 10);
    let confused = wire::Request {
        sent_at: T0.plus_millis(1),
        ..request(&node, 1, Change::Put(Value::from("v")), 1000)
    };
    assert_eq!(promised(&mut node, T0, confused, base), vec![reply(&node, 1, Outcome::Indeterminate)]);
}

/// Runs a write's first attempt to the accept phase (its state at version
/// 1, written by ballot (1,1), left in accepts), loses it to a rejection,
/// and starts the second attempt; returns when the retry prepares.
fn interrupted_after_accept(node: &mut Node<u32>) -> Time {
    put(node, 1, "v");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    drain(node);
    node.handle_peer(T0, n(2), Message::Reject { key: k(), ballot: b(1, 1), promised: b(5, 2) });
    drain(node);
    let retry_at = node.next_deadline().expect("a retry is scheduled");
    node.handle_timeout(retry_at);
    drain(node);
    retry_at
}

/// A chain that moved on 32 writes past version 2, whose newest states by
/// each node are `writers`.
fn moved_on(writers: &[Ballot]) -> RegisterState {
    RegisterState { writers: writers.to_vec(), ..full_of_others("y", 2) }
}

#[test]
fn a_retry_whose_own_state_is_not_in_the_chain_applies_the_write_again_however_far_the_key_moved_on() {
    let mut node = node1();
    let retry_at = interrupted_after_accept(&mut node);
    // Node 1 wrote nothing in this chain: its state (1,1) lost.
    let base = moved_on(&[b(40, 3)]);
    let promise = Message::Promise { key: k(), ballot: b(6, 1), accepted: b(40, 3), state: base.clone() };
    node.handle_peer(retry_at, n(2), promise);
    let [Envelope::Peer(_, Message::Accept { state, .. }), _] = &drain(&mut node).1[..] else {
        panic!("no accept")
    };
    assert_eq!((state.value.clone(), state.version), (Some(Value::from("v")), Version(base.version.0 + 1)));
    assert_eq!(state.writers, vec![b(6, 1), b(40, 3)], "its new state is node 1's newest");
}

#[test]
fn a_retry_whose_own_state_is_in_the_chain_is_answered_from_it_beyond_the_remembered_writes() {
    let mut node = node1();
    let retry_at = interrupted_after_accept(&mut node);
    // Another proposer adopted our state (1,1) and built on it; 32 later
    // writes pushed our request out of the remembered ones.
    let base = moved_on(&[b(1, 1), b(40, 3)]);
    let promise = Message::Promise { key: k(), ballot: b(6, 1), accepted: b(40, 3), state: base.clone() };
    node.handle_peer(retry_at, n(2), promise);
    assert_eq!(drain(&mut node).1, accepts(b(6, 1), base), "nothing applied again");
    node.handle_peer(retry_at, n(2), accepted(b(6, 1)));
    assert_eq!(drain(&mut node).1, vec![reply_at(&node, 1, retry_at, written(1))]);
}

#[test]
fn a_retry_ignores_states_this_node_wrote_for_earlier_requests() {
    let mut node = node1();
    let retry_at = interrupted_after_accept(&mut node);
    // Node 1's newest state in the chain is older than this proposal.
    let base = moved_on(&[b(0, 1), b(40, 3)]);
    let promise = Message::Promise { key: k(), ballot: b(6, 1), accepted: b(40, 3), state: base };
    node.handle_peer(retry_at, n(2), promise);
    assert!(
        matches!(&drain(&mut node).1[..], [Envelope::Peer(_, Message::Accept { .. }), _]),
        "evaluated again"
    );
}

// Admission: sessions and incarnations.

#[test]
fn a_copy_of_a_running_request_is_told_it_is_in_progress_and_a_copy_of_an_answered_one_gets_the_answer_again()
{
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    put(&mut node, 1, "v");
    let working = reply(&node, 1, Outcome::InProgress { exclusive: true, cut_off: false });
    assert_eq!(drain(&mut node), (Vec::new(), vec![working]), "already running: not run twice");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    drain(&mut node);
    put(&mut node, 1, "v");
    assert_eq!(drain(&mut node), (Vec::new(), vec![reply(&node, 1, written(1))]));
}

#[test]
fn a_later_only_copy_renews_the_exclusive_window_and_a_resent_one_revokes_it() {
    let mut node = node1();
    let base = full_of_others("x", 10);
    put(&mut node, 1, "v");
    drain(&mut node);
    // The client, still waiting, sends it again 100 ms later.
    let later = T0.plus_millis(100);
    let renewal = wire::Request { sent_at: later, ..request(&node, 1, Change::Put(Value::from("v")), 1000) };
    send(&mut node, later, renewal);
    drain(&mut node);
    // The promises come 200 ms after the first copy, within the renewed window.
    let decided = T0.plus_millis(200);
    node.handle_peer(
        decided,
        n(2),
        Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state: base },
    );
    assert!(matches!(&drain(&mut node).1[..], [Envelope::Peer(_, Message::Accept { .. }), _]), "evaluated");

    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    let moved = wire::Request { resent: true, ..request(&node, 1, Change::Put(Value::from("v")), 1000) };
    send(&mut node, T0, moved);
    assert_eq!(
        drain(&mut node).1,
        vec![reply(&node, 1, Outcome::InProgress { exclusive: false, cut_off: false })]
    );
    node.handle_peer(
        T0,
        n(2),
        Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state: full_of_others("x", 10) },
    );
    assert_eq!(drain(&mut node).1, vec![reply(&node, 1, Outcome::Indeterminate)], "judged by its floor");
}

#[test]
fn a_cut_off_node_gives_up_what_it_never_sent_and_keeps_the_rest_without_exclusivity() {
    let mut node = node1();
    // Request 1 reaches the accept phase with node 2's promise; then both
    // peers fall silent. Request 2 (another session, another key) only
    // ever prepares.
    put(&mut node, 1, "v");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    let other = RequestId { session: SessionId(2), seq: 1 };
    let r = wire::Request {
        id: other,
        key: Key::from("other"),
        ..request(&node, 1, Change::Put(Value::from("w")), 5000)
    };
    send(&mut node, T0, r);
    drain(&mut node);
    let (at, replies) = run_until_clients_hear(&mut node, T0.plus_millis(1000));
    // Node 2 was last heard at T0, its promise quorum was immediate: the
    // node finds itself cut off as soon as the shortest stall is over, not
    // at its next resend.
    let stall = T0.plus_millis(limits::STALL_MS_MIN);
    assert!(at > stall && at <= stall.plus_millis(1), "{at:?}");
    let gave_up = Message::Reply {
        id: other,
        incarnation: incarnation(&node),
        node_time: at,
        outcome: Outcome::Unavailable { maybe_applied: false },
    };
    assert!(replies.contains(&Envelope::Client(CLIENT, gave_up)), "the request that never left gives up");
    // The client of the write that did leave hears at once that the node is
    // cut off, without waiting to renew its copy, and hears it once.
    let told = reply_at(&node, 1, at, Outcome::InProgress { exclusive: false, cut_off: true });
    assert!(replies.contains(&told), "{replies:?}");
    assert_eq!(replies.len(), 2, "{replies:?}");
    node.handle_timeout(at.plus_millis(limits::PHASE_RESEND_MS));
    assert!(!drain(&mut node).1.iter().any(|m| matches!(m, Envelope::Client(..))), "told once");
    let again = request(&node, 1, Change::Put(Value::from("v")), 1000);
    send(&mut node, at, again);
    let working = Outcome::InProgress { exclusive: false, cut_off: true };
    assert_eq!(drain(&mut node).1, vec![reply_at(&node, 1, at, working)]);
}

/// A write of session `session` on a key of its own, from `client`.
fn write_from(node: &mut Node<u32>, client: u32, session: u128) {
    let r = wire::Request {
        id: RequestId { session: SessionId(session), seq: 1 },
        key: Key::from(format!("k{session}").as_str()),
        ..request(node, 1, Change::Put(Value::from("v")), 1000)
    };
    node.handle_client(T0, client, Message::Request(r));
}

/// The refusals among `messages`, by client and session.
fn refused(messages: &[Envelope<u32>]) -> Vec<(u32, u128)> {
    let busy = Outcome::Refused(Refusal::Overloaded);
    messages
        .iter()
        .filter_map(|m| match m {
            Envelope::Client(to, Message::Reply { id, outcome, .. }) if *outcome == busy => {
                Some((*to, id.session.0))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_behind_on_its_votes_refuses_a_client_with_its_share_running_and_serves_the_others() {
    let limits = ClientLimits { requests_per_client_behind_max: 2, ..ClientLimits::default() };
    let mut node: Node<u32> = Node::new(NodeSetup { limits, ..setup(3, Vec::new()) });
    write_from(&mut node, CLIENT, 1);
    write_from(&mut node, CLIENT, 2);
    node.set_behind(true);
    write_from(&mut node, CLIENT, 3);
    write_from(&mut node, WATCHER, 4);
    assert_eq!(refused(&drain(&mut node).1), [(CLIENT, 3)], "only the client with its share running");
    assert_eq!(node.requests_in_flight(), 3);
    node.set_behind(false);
    write_from(&mut node, CLIENT, 5);
    assert_eq!(refused(&drain(&mut node).1), [], "caught up, the node takes more");
    assert_eq!(node.requests_in_flight(), 4);
}

#[test]
fn a_request_naming_another_incarnation_is_refused_unrun_and_names_the_current_one() {
    let mut node = node1();
    let stale = wire::Request {
        incarnation: Incarnation::UNKNOWN,
        ..request(&node, 1, Change::Put(Value::from("v")), 1000)
    };
    send(&mut node, T0, stale);
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty(), "not run: {records:?}");
    assert_eq!(messages, vec![reply(&node, 1, Outcome::Refused(Refusal::StaleIncarnation))]);
    assert_ne!(incarnation(&node), Incarnation::UNKNOWN);
}

#[test]
fn an_overloaded_refusal_stays_true_for_later_copies() {
    let limits = ClientLimits { requests_in_flight_max: 1, ..Default::default() };
    let mut node = Node::new(NodeSetup { limits, ..setup(3, Vec::new()) });
    put(&mut node, 1, "a");
    drain(&mut node);
    let other = RequestId { session: SessionId(2), seq: 1 };
    let r = wire::Request { id: other, ..request(&node, 1, Change::Put(Value::from("b")), 1000) };
    send(&mut node, T0, r.clone());
    let refused = |node: &Node<u32>| {
        let outcome = Outcome::Refused(Refusal::Overloaded);
        Envelope::Client(
            CLIENT,
            Message::Reply { id: other, incarnation: incarnation(node), node_time: T0, outcome },
        )
    };
    assert_eq!(drain(&mut node).1, vec![refused(&node)]);
    // The first request ends; the node has room again, but the refused
    // request must not run: its client was told it did not.
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    drain(&mut node);
    send(&mut node, T0, r);
    assert_eq!(drain(&mut node), (Vec::new(), vec![refused(&node)]));
}

#[test]
fn a_status_request_is_answered_at_once_with_the_node_clock() {
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    node.set_log_bytes(123);
    node.handle_client(T0, CLIENT, Message::StatusRequest { session: SESSION, probe: 4 });
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    let [Envelope::Client(CLIENT, Message::StatusReply { session, probe: 4, node_time, status })] =
        &messages[..]
    else {
        panic!("{messages:?}")
    };
    assert_eq!((*session, *node_time), (SESSION, T0));
    assert_eq!(
        (status.node, status.requests_in_flight, status.sessions, status.log_bytes),
        (n(1), 1, 1, 123)
    );
    assert_eq!(status.uptime_ms, T0.0 / 1000);
}

// Found in review: each failed before its fix.

/// A compare-and-set that failed must never take effect later, even when a
/// network duplicate of its first copy arrives within its window after the
/// key forgot the failed evaluation: the node evaluated it before, and the
/// window only rules out evaluations by other proposers.
#[test]
fn a_duplicate_of_a_failed_compare_and_set_never_takes_effect_later() {
    let mut node = node1();
    let cas = Change::CasValue { expect: Some(Value::from("a")), new: Value::from("b") };
    let first = request(&node, 1, cas, 1000);
    send(&mut node, T0, first.clone());
    drain(&mut node);
    node.handle_peer(
        T0,
        n(2),
        Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state: st("x", 1) },
    );
    drain(&mut node);
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    let failed =
        Outcome::Done { version: Version(1), precondition_held: false, value: Some(Some(Value::from("x"))) };
    assert_eq!(drain(&mut node).1, vec![reply(&node, 1, failed)]);
    // Other writes follow, the last setting "a"; then the duplicate comes:
    // it gets the failure again (at the version it failed at; the value it
    // was compared with is not kept), and nothing is evaluated.
    let dup_at = T0.plus_millis(50);
    send(&mut node, dup_at, first);
    let again = Outcome::Done { version: Version(1), precondition_held: false, value: None };
    assert_eq!(drain(&mut node), (Vec::new(), vec![reply_at(&node, 1, dup_at, again)]));
}

/// A healthy quorum slower than the shortest stall (a slow disk at the
/// peers) is not taken for a cut-off node: before the node has measured
/// any quorum it waits the longest stall, and after, a multiple of what it
/// measured.
#[test]
fn a_slow_but_healthy_quorum_is_not_taken_for_a_cut_off_node() {
    let mut node = node1();
    let mut now = T0;
    for seq in 1..=3u64 {
        let r = request(&node, seq, Change::Put(Value::from("v")), 5000);
        send(&mut node, now, r);
        drain(&mut node);
        // Peers answer each phase 200 ms after it starts; timers run meanwhile.
        for phase in [empty_promise(b(seq, 1)), accepted(b(seq, 1))] {
            let answer_at = now.plus_millis(200);
            while let Some(t) = node.next_deadline().filter(|t| *t < answer_at) {
                node.handle_timeout(t);
                let (_, out) = drain(&mut node);
                assert!(
                    !out.iter().any(|m| matches!(m, Envelope::Client(..))),
                    "request {seq} given up at {t:?}"
                );
            }
            now = answer_at;
            node.handle_peer(now, n(2), phase.clone());
            node.handle_peer(now, n(3), phase);
            drain(&mut node);
        }
    }
}

/// Once a node answers that it no longer runs a request as the only copy,
/// that stays true: a renewal still on its way does not re-arm the window.
#[test]
fn a_window_the_node_said_was_over_is_not_renewed_by_a_late_copy() {
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    let late = T0.plus_millis(200);
    let copy = request(&node, 1, Change::Put(Value::from("v")), 1000);
    send(&mut node, late, copy);
    let lapsed = Outcome::InProgress { exclusive: false, cut_off: false };
    assert_eq!(drain(&mut node).1, vec![reply_at(&node, 1, late, lapsed.clone())]);
    let renewal = wire::Request {
        sent_at: T0.plus_millis(120),
        ..request(&node, 1, Change::Put(Value::from("v")), 1000)
    };
    let later = T0.plus_millis(210);
    send(&mut node, later, renewal);
    assert_eq!(drain(&mut node).1, vec![reply_at(&node, 1, later, lapsed)]);
}

#[test]
fn accepts_leave_before_the_local_sync_unless_the_turn_reserves_rounds() {
    let mut node = node1();
    put(&mut node, 1, "a");
    let mut ready = node.take_ready();
    assert!(ready.take_early().is_empty(), "the first ballot's block must be reserved on disk first");
    drop(ready);
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    let mut ready = node.take_ready();
    assert_eq!(
        ready.take_early(),
        accepts(b(1, 1), written_on(st_with("a", 1, &[(1, 1, true)]), b(1, 1), &RegisterState::default()))
    );
    assert_eq!(ready.records.len(), 1, "the local acceptance is synced meanwhile");
}

#[test]
fn a_refusal_naming_the_attempts_own_next_ballot_does_not_abandon_it() {
    let mut node = node1();
    put(&mut node, 1, "a");
    node.handle_peer(T0, n(2), empty_promise(b(1, 1)));
    drain(&mut node);
    // Node 3 got the prepare late (a resend or a duplicate), after it had
    // accepted (1,1) and promised (2,1).
    node.handle_peer(T0, n(3), Message::Reject { key: k(), ballot: b(1, 1), promised: b(2, 1) });
    drain(&mut node);
    node.handle_peer(T0, n(3), Message::Accepted { key: k(), ballot: b(1, 1), promised: b(2, 1) });
    let (_, messages) = drain(&mut node);
    assert_eq!(messages, vec![reply(&node, 1, written(1))]);
    put(&mut node, 2, "b");
    let (_, messages) = drain(&mut node);
    assert!(
        matches!(&messages[..], [Envelope::Peer(_, Message::Accept { ballot, .. }), _] if *ballot == b(2, 1))
    );
}

// Watches.

/// The watching client's address.
const WATCHER: u32 = 88;

fn watch_request(id: u64, after: Option<u64>) -> Message {
    Message::WatchRequest { id: WatchId(id), key: k(), after: after.map(Version), every_version: true }
}

fn watch_reply(id: u64, answer: WatchAnswer) -> Envelope<u32> {
    Envelope::Client(WATCHER, Message::WatchReply { id: WatchId(id), key: k(), answer })
}

fn watch_states(versions: &[(u64, &str)], current: u64) -> WatchAnswer {
    let versions = versions
        .iter()
        .map(|&(v, x)| PastState { version: Version(v), value: Some(Value::from(x)) })
        .collect();
    WatchAnswer::States { versions, current: Version(current), gap: false }
}

/// `st(v, version)` of a watched key, with these past states (newest first).
fn watched(v: &str, version: u64, past: &[(u64, &str)]) -> RegisterState {
    let past = past.iter().map(|&(p, x)| PastState { version: Version(p), value: Some(Value::from(x)) });
    RegisterState { history: Some(History { past: past.collect() }), ..st(v, version) }
}

/// The first query among `messages`.
fn query_of(messages: &[Envelope<u32>]) -> QueryId {
    let query = messages.iter().find_map(|m| match m {
        Envelope::Peer(_, Message::Query { query, .. }) => Some(*query),
        _ => None,
    });
    query.unwrap_or_else(|| panic!("no query sent: {messages:?}"))
}

/// A node whose acceptor holds `state` accepted at (0,2), with a watch of
/// the versions after `after` whose read (in one round: node 2 agrees)
/// found nothing newer, so it is parked.
fn parked(after: u64, state: RegisterState) -> Node<u32> {
    let mut node = Node::new(setup(3, vec![slot(b(0, 2), b(0, 2), state.clone())]));
    node.handle_client(T0, WATCHER, watch_request(1, Some(after)));
    let query = query_of(&drain(&mut node).1);
    node.handle_peer(T0, n(2), query_reply(query, b(0, 2), state));
    let (records, messages) = drain(&mut node);
    assert_eq!((records, messages), (vec![], vec![]), "parked, nothing written");
    node
}

#[test]
fn a_watch_of_an_unwatched_key_writes_the_state_back_to_switch_its_history_on() {
    let state = st("v", 1);
    let mut node = Node::new(setup(3, vec![slot(b(0, 2), b(0, 2), state.clone())]));
    node.handle_client(T0, WATCHER, watch_request(1, Some(1)));
    let query = query_of(&drain(&mut node).1);
    // Its own acceptor and node 2 agree on the state. A read would be done;
    // the watch must write the state back with its history on.
    node.handle_peer(T0, n(2), query_reply(query, b(0, 2), state.clone()));
    let prepares: Vec<Envelope<u32>> =
        [2, 3].map(|p| Envelope::Peer(n(p), Message::Prepare { key: k(), ballot: b(1, 1) })).to_vec();
    assert_eq!(drain(&mut node).1, prepares);
    node.handle_peer(T0, n(2), Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state });
    let on = RegisterState { history: Some(History::default()), ..st("v", 1) };
    assert_eq!(drain(&mut node).1, accepts(b(1, 1), on));
    node.handle_peer(T0, n(3), accepted(b(1, 1)));
    assert_eq!(drain(&mut node).1, vec![], "nothing after version 1 yet: parked");
}

#[test]
fn a_watch_of_a_key_that_does_not_exist_writes_nothing() {
    let mut node = node1();
    node.handle_client(T0, WATCHER, watch_request(1, Some(0)));
    let query = query_of(&drain(&mut node).1);
    // Its own acceptor and node 2 agree: nothing accepted. The key keeps
    // no history before it exists, so there is nothing to write back.
    node.handle_peer(T0, n(2), query_reply(query, Ballot::ZERO, RegisterState::default()));
    assert_eq!(drain(&mut node), (vec![], vec![]), "nothing after version 0 yet: parked");
    assert_eq!(node.status().keys, 0);
}

#[test]
fn a_parked_watch_is_answered_once_a_newer_state_accepted_from_a_peer_is_read() {
    let mut node = parked(5, watched("v5", 5, &[(4, "v4")]));
    let newer = watched("v6", 6, &[(5, "v5"), (4, "v4")]);
    let accept = Message::Accept { key: k(), ballot: b(1, 2), state: newer.clone(), next: Ballot::ZERO };
    node.handle_peer(T0, n(2), accept);
    let (records, messages) = drain(&mut node);
    assert_eq!(records, vec![slot(b(1, 2), b(1, 2), newer.clone())]);
    let query = query_of(&messages);
    let vote = Envelope::Peer(n(2), Message::Accepted { key: k(), ballot: b(1, 2), promised: b(1, 2) });
    assert!(messages.contains(&vote), "{messages:?}");
    node.handle_peer(T0, n(3), query_reply(query, b(1, 2), newer));
    assert_eq!(drain(&mut node).1, vec![watch_reply(1, watch_states(&[(6, "v6")], 6))]);
}

#[test]
fn a_write_by_the_node_itself_answers_its_parked_watches_with_the_reply() {
    let state = watched("v5", 5, &[(4, "v4")]);
    let mut node = parked(5, state.clone());
    put(&mut node, 1, "v6");
    drain(&mut node);
    let promise = Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state };
    node.handle_peer(T0, n(2), promise);
    drain(&mut node);
    node.handle_peer(T0, n(2), accepted(b(1, 1)));
    let messages = drain(&mut node).1;
    let watch = watch_reply(1, watch_states(&[(6, "v6")], 6));
    assert_eq!(messages, vec![watch, reply(&node, 1, written(6))]);
}

#[test]
fn a_parked_watch_is_answered_unchanged_when_its_time_is_up() {
    let mut node = parked(5, watched("v5", 5, &[]));
    let up = T0.plus_millis(limits::WATCH_PARK_MS);
    assert_eq!(node.next_deadline(), Some(up));
    node.handle_timeout(Time(up.0 - 1));
    assert_eq!(drain(&mut node).1, vec![], "not yet");
    node.handle_timeout(up);
    assert_eq!(drain(&mut node).1, vec![watch_reply(1, watch_states(&[], 5))]);
    assert_eq!(node.next_deadline(), None, "nothing left");
}

#[test]
fn watches_beyond_the_table_bound_are_refused_and_copies_take_no_room() {
    let mut node = node1();
    for id in 0..limits::WATCHES_PARKED_MAX as u64 {
        node.handle_client(T0, WATCHER, watch_request(id, Some(0)));
    }
    drain(&mut node);
    node.handle_client(T0, WATCHER, watch_request(0, Some(0)));
    assert_eq!(drain(&mut node).1, vec![], "a copy of a held watch");
    let over = limits::WATCHES_PARKED_MAX as u64;
    node.handle_client(T0, WATCHER, watch_request(over, Some(0)));
    assert_eq!(drain(&mut node).1, vec![watch_reply(over, WatchAnswer::Refused(Refusal::Overloaded))]);
}

/// Drives `node` alone from `start` until `end`, as a driver would: a turn
/// whenever its deadline passes. Returns the turns it asked for at or
/// before the time it already had (a driver would spin on them), and the
/// watch answers it sent.
fn run_alone(node: &mut Node<u32>, start: Time, end: Time) -> (u32, Vec<Envelope<u32>>) {
    let (mut now, mut past, mut answers) = (start, 0, Vec::new());
    while let Some(deadline) = node.next_deadline().filter(|d| *d <= end) {
        if deadline <= now {
            past += 1;
            if past > 1_000 {
                break;
            }
        }
        now = deadline.max(now);
        node.handle_timeout(now);
        let messages = drain(node).1;
        answers.extend(messages.into_iter().filter(|m| matches!(m, Envelope::Client(WATCHER, _))));
    }
    (past, answers)
}

#[test]
fn a_state_found_by_an_attempt_begun_before_a_watch_came_does_not_answer_it() {
    let v4 = watched("v4", 4, &[]);
    let mut node = Node::new(setup(3, vec![slot(b(0, 2), b(0, 2), v4.clone())]));
    put(&mut node, 1, "v5");
    drain(&mut node);
    node.handle_peer(T0, n(2), Message::Promise { key: k(), ballot: b(1, 1), accepted: b(0, 2), state: v4 });
    let (records, _) = drain(&mut node);
    let Some(Record::Slot { state: v5, .. }) = records.last().cloned() else { panic!("{records:?}") };
    assert_eq!(v5.version, Version(5));
    // Node 2 builds v6 on the v5 this acceptor holds; with this acceptor's
    // vote and its own, v6 is chosen.
    node.handle_peer(T0, n(2), Message::Prepare { key: k(), ballot: b(2, 2) });
    drain(&mut node);
    let v6 = written_on(Change::Put(Value::from("v6")).apply(&v5, fp(99)).state, b(2, 2), &v5);
    let accept = Message::Accept { key: k(), ballot: b(2, 2), state: v6.clone(), next: Ballot::ZERO };
    node.handle_peer(T0, n(2), accept);
    drain(&mut node);
    // Then a client waits for version 5.
    let wait =
        Message::WatchRequest { id: WatchId(1), key: k(), after: Some(Version(4)), every_version: false };
    node.handle_client(T0, WATCHER, wait);
    assert_eq!(drain(&mut node).1, vec![], "its read waits behind the write");
    // Node 3's late vote finishes this node's write of v5, begun before the
    // wait came: v5 answers the write, not the wait, which gets its own read.
    node.handle_peer(T0, n(3), Message::Accepted { key: k(), ballot: b(1, 1), promised: b(2, 1) });
    let messages = drain(&mut node).1;
    let query = query_of(&messages);
    let mut expected: Vec<Envelope<u32>> =
        [2, 3].map(|p| Envelope::Peer(n(p), Message::Query { key: k(), query })).to_vec();
    expected.push(reply(&node, 1, written(5)));
    assert_eq!(messages, expected);
    node.handle_peer(T0, n(2), query_reply(query, b(2, 2), v6));
    let current = PastState { version: Version(6), value: Some(Value::from("v6")) };
    let answer = WatchAnswer::States { versions: vec![current], current: Version(6), gap: true };
    assert_eq!(drain(&mut node).1, vec![watch_reply(1, answer)]);
}

#[test]
fn a_leftover_accept_is_read_again_once_in_both_phases_which_settles_it() {
    let v5 = watched("v5", 5, &[(4, "v4")]);
    // This acceptor alone accepted v6 (its proposer died); 2 and 3 hold v5.
    let leftover = watched("v6", 6, &[(5, "v5"), (4, "v4")]);
    let mut node = Node::new(setup(3, vec![slot(b(1, 3), b(1, 3), leftover.clone())]));
    node.handle_client(T0, WATCHER, watch_request(1, Some(5)));
    let query = query_of(&drain(&mut node).1);
    node.handle_peer(T0, n(2), query_reply(query, b(0, 2), v5.clone()));
    node.handle_peer(T0, n(3), query_reply(query, b(0, 2), v5.clone()));
    assert_eq!(drain(&mut node), (vec![], vec![]), "v5 agreed, this acceptor holds 6: read again later");
    let later = T0.plus_millis(limits::WATCH_REREAD_MS);
    assert_eq!(node.next_deadline(), Some(later));
    node.handle_timeout(later);
    let prepares: Vec<Envelope<u32>> =
        [2, 3].map(|p| Envelope::Peer(n(p), Message::Prepare { key: k(), ballot: b(2, 1) })).to_vec();
    assert_eq!(drain(&mut node).1, prepares, "in both phases");
    node.handle_peer(
        later,
        n(2),
        Message::Promise { key: k(), ballot: b(2, 1), accepted: b(0, 2), state: v5 },
    );
    // The leftover has the highest ballot: it is written back as it is,
    // and chosen.
    let (records, messages) = drain(&mut node);
    let record = slot(b(3, 1), b(2, 1), leftover.clone());
    assert_eq!((records, messages), (vec![record], accepts(b(2, 1), leftover)));
    node.handle_peer(later, n(2), accepted(b(2, 1)));
    assert_eq!(drain(&mut node).1, vec![watch_reply(1, watch_states(&[(6, "v6")], 6))]);
    assert_eq!(node.next_deadline(), None, "no more reads");
}

#[test]
fn a_watch_read_put_off_by_a_full_queue_leaves_no_deadline_in_the_past() {
    let v5 = watched("v5", 5, &[(4, "v4")]);
    let limits = ClientLimits { requests_queued_per_key_max: 1, ..ClientLimits::default() };
    let mut node = Node::new(NodeSetup { limits, ..setup(3, vec![slot(b(0, 2), b(0, 2), v5)]) });
    // A write runs on the key, another waits behind it: the queue is full.
    put(&mut node, 1, "v6");
    put(&mut node, 2, "v7");
    drain(&mut node);
    node.handle_client(T0, WATCHER, watch_request(1, Some(5)));
    assert_eq!(drain(&mut node).1, vec![]);
    let up = T0.plus_millis(limits::WATCH_PARK_MS);
    let (past, answers) = run_alone(&mut node, T0, up);
    assert_eq!(past, 0, "every deadline lay ahead");
    assert_eq!(answers, vec![watch_reply(1, WatchAnswer::Unavailable)], "no read covered it");
}

#[test]
fn a_watch_no_read_covered_is_answered_unavailable_not_a_made_up_version() {
    let limits = ClientLimits { watch_reads_in_flight_max: 0, ..ClientLimits::default() };
    let state = watched("v5", 5, &[(4, "v4")]);
    let mut node = Node::new(NodeSetup { limits, ..setup(3, vec![slot(b(0, 2), b(0, 2), state)]) });
    node.handle_client(T0, WATCHER, watch_request(1, None));
    assert_eq!(drain(&mut node).1, vec![], "no room to read");
    let up = T0.plus_millis(limits::WATCH_PARK_MS);
    assert_eq!(node.next_deadline(), Some(up));
    node.handle_timeout(up);
    assert_eq!(drain(&mut node).1, vec![watch_reply(1, WatchAnswer::Unavailable)]);
}

#[test]
fn watch_reads_have_a_budget_of_their_own_and_leave_client_requests_theirs() {
    let limits =
        ClientLimits { requests_in_flight_max: 1, watch_reads_in_flight_max: 1, ..Default::default() };
    let mut node = Node::new(NodeSetup { limits, ..setup(3, Vec::new()) });
    let other =
        Message::WatchRequest { id: WatchId(1), key: Key::from("w"), after: None, every_version: true };
    node.handle_client(T0, WATCHER, other);
    assert_eq!(drain(&mut node).1.len(), 2, "a query to each peer");
    node.handle_client(T0, WATCHER, watch_request(2, None));
    assert_eq!(drain(&mut node).1, vec![], "the watch reads' budget is spent");
    assert!(node.next_deadline() > Some(T0), "a key waiting for room is no timer");
    put(&mut node, 1, "v");
    let prepares: Vec<Envelope<u32>> =
        [2, 3].map(|p| Envelope::Peer(n(p), Message::Prepare { key: k(), ballot: b(1, 1) })).to_vec();
    assert_eq!(drain(&mut node).1, prepares, "the write runs");
}

#[test]
fn a_full_table_of_parked_watches_gives_other_inputs_no_watch_work() {
    let mut node = Node::new(setup(1, Vec::new()));
    for i in 0..limits::WATCHES_PARKED_MAX as u64 {
        let key = Key(format!("w{i}").into_bytes());
        let msg = Message::WatchRequest { id: WatchId(i), key, after: Some(Version(0)), every_version: true };
        node.handle_client(T0.plus_micros(i), WATCHER, msg);
    }
    drain(&mut node);
    assert_eq!(node.next_deadline(), Some(T0.plus_millis(limits::WATCH_PARK_MS)), "all parked");
    let read = request(&node, 1, Change::Read, 1000);
    send(&mut node, T0, read);
    let outcome = Outcome::Done { version: Version(0), precondition_held: true, value: Some(None) };
    assert_eq!(drain(&mut node).1, vec![reply(&node, 1, outcome)]);
    assert_eq!(node.next_deadline(), Some(T0.plus_millis(limits::WATCH_PARK_MS)));
}

#[test]
fn one_turn_answers_at_most_its_share_of_watches_and_the_rest_in_the_next() {
    let mut node = Node::new(setup(1, Vec::new()));
    let watches = limits::WATCH_ANSWERS_PER_TURN_MAX as u64 + 10;
    for id in 0..watches {
        node.handle_client(T0, WATCHER, watch_request(id, Some(0)));
    }
    drain(&mut node);
    put(&mut node, 1, "v");
    let answers = |messages: Vec<Envelope<u32>>| {
        messages.iter().filter(|m| matches!(m, Envelope::Client(WATCHER, _))).count()
    };
    assert_eq!(answers(drain(&mut node).1), limits::WATCH_ANSWERS_PER_TURN_MAX);
    assert_eq!(node.next_deadline(), Some(T0), "the rest are read in the next turn");
    node.handle_timeout(T0);
    assert_eq!(answers(drain(&mut node).1), 10);
    assert_eq!(node.next_deadline(), None);
}
