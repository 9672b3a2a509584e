//! Node-level tests: feed one input, assert exactly what came out.

use super::node::{Envelope, Node, Ready};
use super::proposer::ReqHandle;
use crate::change::Change;
use crate::limits;
use crate::storage::{Record, Synced};
use crate::types::{Ancestor, Ballot, Key, NodeId, RegisterState, Time, Value, Version};
use crate::wire::{Message, Outcome, Refusal};

const T0: Time = Time(1_000_000);

fn n(id: u16) -> NodeId {
    NodeId(id)
}

fn b(round: u64, node: u16) -> Ballot {
    Ballot::new(round, n(node))
}

fn k() -> Key {
    Key::from("k")
}

fn st(v: &str, version: u64) -> RegisterState {
    RegisterState { value: Some(Value::from(v)), version: Version(version), ..Default::default() }
}

/// A state written by the attempt at `origin`.
/// (The initial state, version 0, is its parent.)
fn written(v: &str, version: u64, origin: Ballot) -> RegisterState {
    written_on(v, version, origin, &[(Ballot::ZERO, 0)])
}

/// A state written by the attempt at `origin` on top of the states
/// `lineage` names (origin, version), newest first.
fn written_on(v: &str, version: u64, origin: Ballot, lineage: &[(Ballot, u64)]) -> RegisterState {
    let lineage =
        lineage.iter().map(|&(origin, version)| Ancestor { origin, version: Version(version) }).collect();
    RegisterState { origin, lineage, ..st(v, version) }
}

fn node1() -> Node {
    Node::new(n(1), vec![n(1), n(2), n(3)], Vec::new(), 7)
}

/// Takes the node's output, checking its records, and returns its messages.
fn drain(node: &mut Node) -> (Vec<Record>, Vec<Envelope>) {
    let ready: Ready = node.take_ready();
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

fn put(node: &mut Node, handle: u64, value: &str) {
    node.handle_request(T0, ReqHandle(handle), k(), Change::Put(Value::from(value)), 1000);
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
    node.handle_message(T0, n(2), promise);
    let (records, messages) = drain(&mut node);
    // Node 2 reported a state accepted at a ballot above "none": the change
    // applies to it, so the version continues from 4.
    assert_eq!(records, vec![slot(b(1, 1), b(1, 1), written_on("new", 5, b(1, 1), &[(Ballot::ZERO, 4)]))]);
    assert_eq!(
        messages,
        vec![
            Envelope::Peer(
                n(2),
                Message::Accept {
                    key: k(),
                    ballot: b(1, 1),
                    state: written_on("new", 5, b(1, 1), &[(Ballot::ZERO, 4)])
                }
            ),
            Envelope::Peer(
                n(3),
                Message::Accept {
                    key: k(),
                    ballot: b(1, 1),
                    state: written_on("new", 5, b(1, 1), &[(Ballot::ZERO, 4)])
                }
            ),
        ]
    );
}

#[test]
fn the_highest_accepted_ballot_wins_among_promises() {
    let mut node = Node::new(n(1), vec![n(1), n(2), n(3), n(4), n(5)], Vec::new(), 7);
    node.handle_request(T0, ReqHandle(1), k(), Change::Read, 1000);
    drain(&mut node);
    let promise = |accepted, state| Message::Promise { key: k(), ballot: b(1, 1), accepted, state };
    node.handle_message(T0, n(2), promise(b(0, 3), st("older", 2)));
    assert!(drain(&mut node).1.is_empty(), "two of five promises are not a quorum");
    node.handle_message(T0, n(3), promise(b(0, 4), st("newest", 3)));
    let (_, messages) = drain(&mut node);
    let accept = Message::Accept { key: k(), ballot: b(1, 1), state: st("newest", 3) };
    assert_eq!(messages[0], Envelope::Peer(n(2), accept));
}

#[test]
fn a_majority_of_accepted_answers_the_client() {
    let mut node = node1();
    put(&mut node, 9, "v");
    node.handle_message(T0, n(2), empty_promise(b(1, 1)));
    drain(&mut node);
    node.handle_message(T0, n(3), Message::Accepted { key: k(), ballot: b(1, 1) });
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    let done = Outcome::Done { state: written("v", 1, b(1, 1)), precondition_held: true };
    assert_eq!(messages, vec![Envelope::Client(ReqHandle(9), done)]);
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn duplicate_answers_from_one_node_do_not_make_a_quorum() {
    let mut node = Node::new(n(1), vec![n(1), n(2), n(3), n(4), n(5)], Vec::new(), 7);
    put(&mut node, 1, "v");
    drain(&mut node);
    let promise = Message::Promise {
        key: k(),
        ballot: b(1, 1),
        accepted: Ballot::ZERO,
        state: RegisterState::default(),
    };
    node.handle_message(T0, n(2), promise.clone());
    node.handle_message(T0, n(2), promise);
    assert!(drain(&mut node).1.is_empty());
}

#[test]
fn a_rejection_fast_forwards_the_next_ballot_past_the_promise() {
    let mut node = node1();
    put(&mut node, 1, "v");
    drain(&mut node);
    node.handle_message(T0, n(2), Message::Reject { key: k(), ballot: b(1, 1), promised: b(40, 3) });
    node.handle_message(T0, n(3), Message::Reject { key: k(), ballot: b(1, 1), promised: b(41, 2) });
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
    let reply = run_until_answered(&mut node, T0.plus_millis(1000));
    assert_eq!(reply, Some(Envelope::Client(ReqHandle(1), Outcome::Unavailable { maybe_applied: false })));
}

#[test]
fn at_the_deadline_a_request_that_sent_an_accept_has_an_unknown_outcome() {
    let mut node = node1();
    put(&mut node, 1, "v");
    node.handle_message(T0, n(2), empty_promise(b(1, 1)));
    drain(&mut node);
    let reply = run_until_answered(&mut node, T0.plus_millis(1000));
    assert_eq!(reply, Some(Envelope::Client(ReqHandle(1), Outcome::Unavailable { maybe_applied: true })));
}

/// Fires every timer up to `until` (peers stay silent) and returns the
/// first client reply.
fn run_until_answered(node: &mut Node, until: Time) -> Option<Envelope> {
    for _ in 0..10_000 {
        let t = node.next_deadline().filter(|t| *t <= until)?;
        node.handle_timeout(t);
        let (_, messages) = drain(node);
        if let Some(reply) = messages.into_iter().find(|m| matches!(m, Envelope::Client(..))) {
            return Some(reply);
        }
    }
    panic!("timers did not settle");
}

#[test]
fn requests_on_one_key_run_one_after_another() {
    let mut node = node1();
    put(&mut node, 1, "a");
    put(&mut node, 2, "b");
    let (_, messages) = drain(&mut node);
    assert_eq!(messages.len(), 2, "only the first request prepares: {messages:?}");
    node.handle_message(T0, n(2), empty_promise(b(1, 1)));
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(1, 1) });
    let (_, messages) = drain(&mut node);
    let done = Outcome::Done { state: written("a", 1, b(1, 1)), precondition_held: true };
    assert!(messages.contains(&Envelope::Client(ReqHandle(1), done)));
    assert!(messages.contains(&Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(2, 1) })));
}

#[test]
fn oversized_and_bad_requests_are_refused_at_once() {
    let mut node = node1();
    let big = Value(vec![0; limits::VALUE_BYTES_MAX + 1]);
    node.handle_request(T0, ReqHandle(1), k(), Change::Put(big), 1000);
    node.handle_request(T0, ReqHandle(2), Key(vec![0; limits::KEY_BYTES_MAX + 1]), Change::Read, 1000);
    node.handle_request(T0, ReqHandle(3), k(), Change::Read, 0);
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    assert_eq!(
        messages,
        vec![
            Envelope::Client(ReqHandle(1), Outcome::Refused(Refusal::ValueTooLarge)),
            Envelope::Client(ReqHandle(2), Outcome::Refused(Refusal::KeyTooLarge)),
            Envelope::Client(ReqHandle(3), Outcome::Refused(Refusal::BadTimeout)),
        ]
    );
}

#[test]
fn a_restart_skips_the_rest_of_the_reserved_block() {
    let records = vec![Record::RoundsReserved { round_limit: 1025 }, slot(b(3, 2), b(3, 2), st("x", 1))];
    let mut node = Node::new(n(1), vec![n(1), n(2), n(3)], records, 7);
    put(&mut node, 1, "v");
    let (records, messages) = drain(&mut node);
    assert_eq!(records[0], Record::RoundsReserved { round_limit: 1025 + limits::ROUND_BLOCK });
    assert_eq!(messages[0], Envelope::Peer(n(2), Message::Prepare { key: k(), ballot: b(1025, 1) }));
}

#[test]
fn restored_slots_answer_prepares_with_their_accepted_state() {
    let records = vec![slot(b(3, 2), b(3, 2), st("x", 1))];
    let mut node = Node::new(n(1), vec![n(1), n(2), n(3)], records, 7);
    node.handle_message(T0, n(2), Message::Prepare { key: k(), ballot: b(2, 2) });
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty());
    assert_eq!(
        messages,
        vec![Envelope::Peer(n(2), Message::Reject { key: k(), ballot: b(2, 2), promised: b(3, 2) })]
    );
    node.handle_message(T0, n(3), Message::Prepare { key: k(), ballot: b(4, 3) });
    let (records, messages) = drain(&mut node);
    assert_eq!(records, vec![slot(b(4, 3), b(3, 2), st("x", 1))]);
    let promise = Message::Promise { key: k(), ballot: b(4, 3), accepted: b(3, 2), state: st("x", 1) };
    assert_eq!(messages, vec![Envelope::Peer(n(3), promise)]);
}

#[test]
fn shutdown_answers_every_request() {
    let mut node = node1();
    put(&mut node, 1, "a");
    put(&mut node, 2, "b");
    drain(&mut node);
    node.shutdown();
    let (_, messages) = drain(&mut node);
    assert_eq!(
        messages,
        vec![
            Envelope::Client(ReqHandle(1), Outcome::Unavailable { maybe_applied: false }),
            Envelope::Client(ReqHandle(2), Outcome::Refused(Refusal::ShuttingDown)),
        ]
    );
}

/// Runs a write's first attempt to the accept phase (node 1 accepts its own
/// state), then loses it to rejections, and starts the second attempt.
fn interrupted_after_accept(change: Change) -> Node {
    let mut node = node1();
    node.handle_request(T0, ReqHandle(1), k(), change, 5000);
    let none = empty_promise(b(1, 1));
    node.handle_message(T0, n(2), none);
    drain(&mut node);
    for peer in [2, 3] {
        node.handle_message(T0, n(peer), Message::Reject { key: k(), ballot: b(1, 1), promised: b(5, 2) });
    }
    drain(&mut node);
    let retry_at = node.next_deadline().expect("a retry is scheduled");
    node.handle_timeout(retry_at);
    drain(&mut node);
    node
}

#[test]
fn a_retry_that_finds_its_own_state_proposes_it_again_instead_of_applying_twice() {
    // A CAS that wrote "v" in its first attempt: applying it again on top of
    // "v" would fail the precondition and report a failure that is false.
    let mut node = interrupted_after_accept(Change::CasValue { expect: None, new: Value::from("v") });
    let ours = written("v", 1, b(1, 1));
    let promise = Message::Promise { key: k(), ballot: b(6, 1), accepted: b(1, 1), state: ours.clone() };
    node.handle_message(T0, n(2), promise);
    let (_, messages) = drain(&mut node);
    let accept = Message::Accept { key: k(), ballot: b(6, 1), state: ours.clone() };
    assert_eq!(messages[0], Envelope::Peer(n(2), accept));
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(6, 1) });
    let (_, messages) = drain(&mut node);
    let done = Outcome::Done { state: ours, precondition_held: true };
    assert_eq!(messages, vec![Envelope::Client(ReqHandle(1), done)]);
}

#[test]
fn a_retry_that_finds_another_state_in_its_place_applies_the_change_again() {
    let mut node = interrupted_after_accept(Change::Put(Value::from("v")));
    // Version 1 of the chain was written by (3,2), not by our (1,1): ours
    // was never chosen and never will be alongside this chain.
    let foreign = written_on("other", 2, b(4, 3), &[(b(3, 2), 1), (Ballot::ZERO, 0)]);
    let promise = Message::Promise { key: k(), ballot: b(6, 1), accepted: b(4, 3), state: foreign };
    node.handle_message(T0, n(2), promise);
    let (_, messages) = drain(&mut node);
    let again = written_on("v", 3, b(6, 1), &[(b(4, 3), 2), (b(3, 2), 1), (Ballot::ZERO, 0)]);
    assert_eq!(
        messages[0],
        Envelope::Peer(n(2), Message::Accept { key: k(), ballot: b(6, 1), state: again })
    );
}

#[test]
fn a_retry_that_finds_its_state_among_the_ancestors_reports_it_done() {
    let mut node = interrupted_after_accept(Change::Put(Value::from("v")));
    let descendant = written_on("other", 2, b(4, 3), &[(b(1, 1), 1), (Ballot::ZERO, 0)]);
    let promise =
        Message::Promise { key: k(), ballot: b(6, 1), accepted: b(4, 3), state: descendant.clone() };
    node.handle_message(T0, n(2), promise);
    let (_, messages) = drain(&mut node);
    let accept = Message::Accept { key: k(), ballot: b(6, 1), state: descendant };
    assert_eq!(messages[0], Envelope::Peer(n(2), accept), "the descendant is proposed unchanged");
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(6, 1) });
    let (_, messages) = drain(&mut node);
    let done = Outcome::Done { state: written("v", 1, b(1, 1)), precondition_held: true };
    assert_eq!(messages, vec![Envelope::Client(ReqHandle(1), done)]);
}

#[test]
fn a_retry_whose_version_is_beyond_the_lineage_reports_an_unknown_outcome() {
    let mut node = interrupted_after_accept(Change::Put(Value::from("v")));
    let lineage: Vec<(Ballot, u64)> =
        (0..limits::LINEAGE_ORIGINS_MAX as u64).map(|r| (b(100 - r, 3), 29 - r)).collect();
    let far = written_on("other", 30, b(101, 3), &lineage);
    let promise = Message::Promise { key: k(), ballot: b(6, 1), accepted: b(4, 3), state: far };
    node.handle_message(T0, n(2), promise);
    let (_, messages) = drain(&mut node);
    assert_eq!(messages, vec![Envelope::Client(ReqHandle(1), Outcome::Unavailable { maybe_applied: true })]);
}

#[test]
fn requests_queued_behind_a_round_share_the_next_one() {
    let mut node = node1();
    put(&mut node, 1, "a");
    put(&mut node, 2, "b");
    node.handle_request(T0, ReqHandle(3), k(), Change::Read, 1000);
    node.handle_request(
        T0,
        ReqHandle(4),
        k(),
        Change::CasValue { expect: Some(Value::from("b")), new: Value::from("c") },
        1000,
    );
    drain(&mut node);
    let none = || empty_promise(b(1, 1));
    node.handle_message(T0, n(2), none());
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(1, 1) });
    let (_, messages) = drain(&mut node);
    // Request 1 is answered, and one prepare starts the round for 2, 3, 4.
    let prepares =
        messages.iter().filter(|m| matches!(m, Envelope::Peer(_, Message::Prepare { .. }))).count();
    assert_eq!(prepares, 2, "one prepare per peer: {messages:?}");
    let promise =
        Message::Promise { key: k(), ballot: b(2, 1), accepted: b(1, 1), state: written("a", 1, b(1, 1)) };
    node.handle_message(T0, n(2), promise);
    let (_, messages) = drain(&mut node);
    let c_state = written_on("c", 3, b(2, 1), &[(b(1, 1), 1), (Ballot::ZERO, 0)]);
    let accept = Message::Accept { key: k(), ballot: b(2, 1), state: c_state.clone() };
    assert_eq!(messages[0], Envelope::Peer(n(2), accept), "one accept carries all three changes");
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(2, 1) });
    let (_, messages) = drain(&mut node);
    let done = |state, held| Outcome::Done { state, precondition_held: held };
    assert_eq!(
        messages,
        vec![
            Envelope::Client(
                ReqHandle(2),
                done(written_on("b", 2, b(2, 1), &[(b(1, 1), 1), (Ballot::ZERO, 0)]), true)
            ),
            Envelope::Client(
                ReqHandle(3),
                done(written_on("b", 2, b(2, 1), &[(b(1, 1), 1), (Ballot::ZERO, 0)]), true)
            ),
            Envelope::Client(ReqHandle(4), done(c_state, true)),
        ]
    );
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn a_short_deadline_in_a_batch_expires_alone() {
    let mut node = node1();
    put(&mut node, 1, "a");
    node.handle_request(T0, ReqHandle(2), k(), Change::Put(Value::from("b")), 5000);
    node.handle_request(T0, ReqHandle(3), k(), Change::Put(Value::from("c")), 1);
    let none = || empty_promise(b(1, 1));
    node.handle_message(T0, n(2), none());
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(1, 1) });
    // Requests 2 and 3 share the second round; it reaches the accept phase.
    let promise =
        Message::Promise { key: k(), ballot: b(2, 1), accepted: b(1, 1), state: written("a", 1, b(1, 1)) };
    node.handle_message(T0, n(2), promise);
    drain(&mut node);
    node.handle_timeout(T0.plus_millis(1));
    let (_, messages) = drain(&mut node);
    assert_eq!(messages, vec![Envelope::Client(ReqHandle(3), Outcome::Unavailable { maybe_applied: true })]);
    node.handle_message(T0, n(2), Message::Accepted { key: k(), ballot: b(2, 1) });
    let (_, messages) = drain(&mut node);
    assert!(
        matches!(
            &messages[..],
            [Envelope::Client(ReqHandle(2), Outcome::Done { precondition_held: true, .. })]
        ),
        "{messages:?}"
    );
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn a_spent_round_counter_stops_proposing_instead_of_reusing_a_ballot() {
    let mut node = node1();
    put(&mut node, 1, "a");
    drain(&mut node);
    for peer in [2, 3] {
        let reject = Message::Reject { key: k(), ballot: b(1, 1), promised: b(u64::MAX, 2) };
        node.handle_message(T0, n(peer), reject);
    }
    drain(&mut node);
    let retry_at = node.next_deadline().expect("a retry is scheduled");
    node.handle_timeout(retry_at);
    let (_, messages) = drain(&mut node);
    assert_eq!(messages, vec![Envelope::Client(ReqHandle(1), Outcome::Unavailable { maybe_applied: false })]);
}
