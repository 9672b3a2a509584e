//! Hostile input at the node: ballots and epochs beyond reach, and
//! requests from datagrams sent outside the replay window.

use super::client::{ClientMachine, Ending, NotRun, Routing};
use super::node::{ClientLimits, Envelope, Node, NodeSetup, Ready};
use crate::change::Change;
use crate::limits;
use crate::members::Members;
use crate::storage::{Record, Synced};
use crate::types::{Ballot, Epoch, Key, NodeId, RegisterState, RequestId, SessionId, Time, Value, Version};
use crate::wire::{self, Message, Outcome, Refusal};

const T0: Time = Time(1_000_000);
const CLIENT: u32 = 77;

fn node1() -> Node<u32> {
    Node::new(NodeSetup {
        id: NodeId(1),
        founding: Members::named(&[NodeId(1), NodeId(2), NodeId(3)]),
        records: Vec::new(),
        seed: 7,
        now: Time(0),
        limits: ClientLimits::default(),
    })
}

fn drain(node: &mut Node<u32>) -> (Vec<Record>, Vec<Envelope<u32>>) {
    let ready: Ready<u32> = node.take_ready();
    let records = ready.records.clone();
    (records, ready.release(Synced(())))
}

fn put(node: &mut Node<u32>, key: &str, seq: u64) -> Message {
    Message::Request(wire::Request {
        id: RequestId { session: SessionId(9), seq },
        key: Key::from(key),
        change: Change::Put(Value::from("v")),
        timeout_ms: 1000,
        incarnation: node.status().incarnation,
        sent_at: T0,
        resent: false,
        floor: Version(0),
    })
}

/// The ballot of the prepare the node sends for `key`, if any.
fn prepared(messages: &[Envelope<u32>]) -> Option<Ballot> {
    messages.iter().find_map(|m| match m {
        Envelope::Peer(_, Message::Prepare { ballot, .. }) => Some(*ballot),
        _ => None,
    })
}

fn forged_accept(round: u64) -> Message {
    let ballot = Ballot::new(round, NodeId(2));
    let state = RegisterState { value: Some(Value::from("x")), version: Version(1), ..Default::default() };
    Message::Accept { key: Key::from("poisoned"), ballot, state, next: ballot }
}

#[test]
fn a_forged_accept_at_the_end_of_the_rounds_changes_nothing_and_other_keys_still_propose() {
    let mut node = node1();
    node.handle_peer(T0, NodeId(2), forged_accept(u64::MAX));
    assert_eq!(drain(&mut node), (vec![], vec![]), "no promise kept, no answer");
    assert_eq!(node.status().guarded.ballots_out_of_range, 1);
    let msg = put(&mut node, "other", 1);
    node.handle_client(T0, CLIENT, msg);
    let ballot = prepared(&drain(&mut node).1).expect("the node still proposes");
    assert_eq!(ballot, Ballot::new(1, NodeId(1)), "its round counter was not touched");
}

/// The furthest round within reach of `node1` at `T0`, a second after it
/// started with its counter at 1.
const REACH_AT_T0: u64 = 1 + limits::ROUND_RATE_MAX + limits::ROUND_LEAP_MAX;

#[test]
fn a_ballot_within_reach_is_accepted_and_one_just_beyond_is_not() {
    let mut node = node1();
    node.handle_peer(T0, NodeId(2), forged_accept(REACH_AT_T0 + 1));
    assert_eq!(drain(&mut node), (vec![], vec![]));
    node.handle_peer(T0, NodeId(2), forged_accept(REACH_AT_T0));
    let (records, messages) = drain(&mut node);
    assert_eq!((records.len(), messages.len()), (1, 1), "kept and answered: {messages:?}");
    assert_eq!(node.status().guarded.ballots_out_of_range, 1);
}

#[test]
fn ballots_each_within_reach_cannot_walk_the_counter_further_than_time_allows() {
    let mut node = node1();
    node.handle_peer(T0, NodeId(2), forged_accept(REACH_AT_T0));
    drain(&mut node);
    // The counter adopted that round; reach did not grow with it.
    node.handle_peer(T0, NodeId(2), forged_accept(REACH_AT_T0 + 2));
    assert_eq!(drain(&mut node), (vec![], vec![]));
    // A second later, reach has grown by what a second can honestly use.
    let later = T0.plus_millis(1000);
    node.handle_peer(later, NodeId(2), forged_accept(REACH_AT_T0 + limits::ROUND_RATE_MAX));
    assert_eq!(drain(&mut node).1.len(), 1);
    node.handle_peer(later, NodeId(2), forged_accept(REACH_AT_T0 + limits::ROUND_RATE_MAX + 1));
    assert_eq!(drain(&mut node), (vec![], vec![]));
    assert_eq!(node.status().guarded.ballots_out_of_range, 2);
}

#[test]
fn a_refusal_naming_an_absurd_promise_does_not_spend_the_round_counter() {
    let mut node = node1();
    let msg = put(&mut node, "k", 1);
    node.handle_client(T0, CLIENT, msg);
    let ballot = prepared(&drain(&mut node).1).expect("prepare");
    let poisoned = Ballot::new(u64::MAX, NodeId(3));
    node.handle_peer(T0, NodeId(2), Message::Reject { key: Key::from("k"), ballot, promised: poisoned });
    node.handle_peer(T0, NodeId(3), Message::Reject { key: Key::from("k"), ballot, promised: poisoned });
    drain(&mut node);
    let msg = put(&mut node, "j", 2);
    node.handle_client(T0, CLIENT, msg);
    let next = prepared(&drain(&mut node).1).expect("another key still proposes");
    assert!(next.round < 1 << 20, "round {} adopted from a forged refusal", next.round);
    assert_eq!(node.status().guarded.ballots_out_of_range, 2);
}

#[test]
fn a_scan_fencing_at_an_absurd_epoch_is_dropped() {
    let mut node = node1();
    node.handle_peer(T0, NodeId(2), Message::Scan { epoch: Epoch(u64::MAX), after: None });
    assert_eq!(drain(&mut node), (vec![], vec![]));
    let msg = put(&mut node, "k", 1);
    node.handle_client(T0, CLIENT, msg);
    assert_eq!(prepared(&drain(&mut node).1).map(|b| b.epoch), Some(Epoch(0)));
}

#[test]
fn a_stale_request_is_refused_unrun_and_counted() {
    let mut node = node1();
    let msg = put(&mut node, "k", 1);
    node.handle_client_stale(T0, CLIENT, msg);
    let (records, messages) = drain(&mut node);
    assert!(records.is_empty(), "nothing proposed: {records:?}");
    let [Envelope::Client(CLIENT, Message::Reply { outcome, .. })] = &messages[..] else {
        panic!("one reply: {messages:?}");
    };
    assert_eq!(*outcome, Outcome::Refused(Refusal::Expired));
    assert_eq!(node.status().guarded.requests_expired, 1);
    assert_eq!(node.requests_in_flight(), 0);
}

#[test]
fn a_stale_status_request_gets_no_answer() {
    let mut node = node1();
    node.handle_client_stale(T0, CLIENT, Message::StatusRequest { session: SessionId(1), probe: 1 });
    assert_eq!(drain(&mut node), (vec![], vec![]));
    assert_eq!(node.status().guarded.requests_expired, 1, "counted, so status tells why");
}

/// A client machine whose write to node 1 was sent `sends` times before
/// node 1 refused it as expired.
fn expired_after(sends: usize) -> Option<Ending> {
    let mut m = ClientMachine::new(vec![NodeId(1)], Some(NodeId(1)), SessionId(5), Routing::Home);
    m.start(Time(0), Key::from("k"), Change::Put(Value::from("v")), 5_000).expect("start");
    let status = wire::NodeStatus { node: NodeId(1), ..Default::default() };
    let probe = match m.poll_transmit() {
        Some((_, Message::StatusRequest { session, probe })) => (session, probe),
        other => panic!("a probe first: {other:?}"),
    };
    let reply = Message::StatusReply { session: probe.0, probe: probe.1, node_time: Time(10), status };
    m.handle_message(Time(10), NodeId(1), reply);
    let mut id = None;
    let mut now = Time(10);
    for i in 0..sends {
        if i > 0 {
            now = m.poll_timeout().expect("a retransmission is due");
            m.handle_timeout(now);
        }
        while let Some((_, msg)) = m.poll_transmit() {
            if let Message::Request(r) = msg {
                id = Some(r.id);
            }
        }
    }
    let id = id.expect("the request was sent");
    let outcome = Outcome::Refused(Refusal::Expired);
    let reply = Message::Reply { id, incarnation: Default::default(), node_time: now, outcome };
    m.handle_message(now, NodeId(1), reply);
    m.poll_ending()
}

#[test]
fn a_client_told_its_only_send_expired_knows_it_did_not_run() {
    assert_eq!(expired_after(1), Some(Ending::NotRun(NotRun::Refused(Refusal::Expired))));
}

#[test]
fn a_client_told_a_resend_expired_cannot_tell_whether_an_earlier_one_ran() {
    assert!(matches!(expired_after(3), Some(Ending::Unknown(_))), "{:?}", expired_after(3));
}

#[test]
fn a_promise_at_the_end_of_the_rounds_in_an_old_log_poisons_its_key_only() {
    let poisoned = Record::Slot {
        key: Key::from("poisoned"),
        promised: Ballot::new(u64::MAX, NodeId(2)),
        accepted: Ballot::ZERO,
        state: RegisterState::default(),
    };
    let mut node: Node<u32> = Node::new(NodeSetup {
        id: NodeId(1),
        founding: Members::named(&[NodeId(1), NodeId(2), NodeId(3)]),
        records: vec![poisoned],
        seed: 7,
        now: Time(0),
        limits: ClientLimits::default(),
    });
    let msg = put(&mut node, "other", 1);
    node.handle_client(T0, CLIENT, msg);
    assert_eq!(prepared(&drain(&mut node).1), Some(Ballot::new(1, NodeId(1))));
}

#[test]
fn a_node_whose_clock_is_off_sends_the_request_on_to_the_next() {
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    let mut m = ClientMachine::new(members, None, SessionId(5), Routing::Home);
    m.start(Time(0), Key::from("k"), Change::Put(Value::from("v")), 5_000).expect("start");
    let (to, session, probe) = match m.poll_transmit() {
        Some((to, Message::StatusRequest { session, probe })) => (to, session, probe),
        other => panic!("a probe first: {other:?}"),
    };
    let status = wire::NodeStatus { node: to, ..Default::default() };
    m.handle_message(Time(10), to, Message::StatusReply { session, probe, node_time: Time(10), status });
    let id = std::iter::from_fn(|| m.poll_transmit())
        .find_map(|(_, msg)| if let Message::Request(r) = msg { Some(r.id) } else { None })
        .expect("the request was sent");
    let outcome = Outcome::Refused(Refusal::Expired);
    m.handle_message(
        Time(11),
        to,
        Message::Reply { id, incarnation: Default::default(), node_time: Time(11), outcome },
    );
    assert_eq!(m.poll_ending(), None, "two nodes are left to ask");
    let next = m.poll_transmit().map(|(node, _)| node);
    assert!(next.is_some_and(|n| n != to), "asked {next:?} next, after {to}");
}

#[test]
fn a_header_naming_an_epoch_beyond_reach_is_dropped() {
    let mut node = node1();
    let far = super::membership::ConfigTag { epoch: Epoch(u64::MAX), digest: node.config_tag().digest };
    node.handle_peer_tagged(T0, NodeId(2), far, Message::ConfigQuery);
    assert_eq!(drain(&mut node), (vec![], vec![]), "no answer, no ConfigQuery of our own");
    assert_eq!(node.status().guarded.ballots_out_of_range, 1);
}
