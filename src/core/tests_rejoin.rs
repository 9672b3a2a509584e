//! Catching up after lost data (`rejoin`), at the node's edges: feed one
//! input, assert exactly what came out.

use super::node::{ClientLimits, Envelope, Node, NodeSetup};
use super::rejoin::EPOCH_KEY;
use crate::members::Members;
use crate::storage::{Record, Synced};
use crate::types::{Ballot, Epoch, Incarnation, Key, NodeId, RegisterState, Time, Value, Version};
use crate::wire::{self, Message, Outcome, Refusal, ScanSlot};

const T0: Time = Time(1_000_000);

fn n(id: u16) -> NodeId {
    NodeId(id)
}

fn node(records: Vec<Record>) -> Node<u32> {
    Node::new(NodeSetup {
        id: n(1),
        founding: Members::named(&[n(1), n(2), n(3)]),
        records,
        seed: 11,
        now: Time(0),
        limits: ClientLimits::default(),
    })
}

fn drain(node: &mut Node<u32>) -> (Vec<Record>, Vec<Envelope<u32>>) {
    let ready = node.take_ready();
    let records = ready.records.clone();
    (records, ready.release(Synced(())))
}

fn st(v: &str, version: u64) -> RegisterState {
    RegisterState { value: Some(Value::from(v)), version: Version(version), ..Default::default() }
}

fn scan_slot(key: &str, promised: Ballot, accepted: Ballot, state: RegisterState) -> ScanSlot {
    ScanSlot { key: Key::from(key), promised, accepted, adopted: false, state }
}

fn slot_record(s: &ScanSlot) -> Record {
    Record::Slot { key: s.key.clone(), promised: s.promised, accepted: s.accepted, state: s.state.clone() }
}

/// Answers the node's epoch write as its peers would, until it scans:
/// the write makes version `epoch` of the epoch register.
fn grant_epoch(node: &mut Node<u32>, epoch: u64) -> Vec<Envelope<u32>> {
    let mut now = T0;
    for _ in 0..20 {
        let (records, messages) = drain(node);
        assert!(records.is_empty(), "nothing to record before the scan: {records:?}");
        if messages.iter().any(|m| matches!(m, Envelope::Peer(_, Message::Scan { .. }))) {
            return messages;
        }
        for envelope in messages {
            let Envelope::Peer(peer, msg) = envelope else { panic!("only peers hear from it: {envelope:?}") };
            let answer = match msg {
                Message::StatusRequest { session, probe } => {
                    let status = wire::NodeStatus { incarnation: Incarnation(9), ..Default::default() };
                    Message::StatusReply { session, probe, node_time: now, status }
                }
                Message::Request(r) => {
                    assert_eq!(r.key, Key(EPOCH_KEY.to_vec()));
                    let outcome =
                        Outcome::Done { version: Version(epoch), precondition_held: true, value: None };
                    Message::Reply { id: r.id, incarnation: Incarnation(9), node_time: now, outcome }
                }
                other => panic!("unexpected message before the scan: {other:?}"),
            };
            node.handle_peer(now, peer, answer);
        }
        now = now.plus_millis(1);
        if node.next_deadline().is_some_and(|d| d <= now) {
            node.handle_timeout(now);
        }
    }
    panic!("the node never started scanning");
}

#[test]
fn a_node_catching_up_votes_on_nothing_and_refuses_clients_for_good() {
    let mut node = node(vec![Record::CatchingUp]);
    assert!(node.status().catching_up);
    drain(&mut node);
    node.handle_peer(T0, n(2), Message::Prepare { key: Key::from("k"), ballot: Ballot::new(5, n(2)) });
    let accept = Message::Accept {
        key: Key::from("k"),
        ballot: Ballot::new(5, n(2)),
        state: st("v", 1),
        next: Ballot::ZERO,
    };
    node.handle_peer(T0, n(2), accept);
    node.handle_peer(T0, n(3), Message::Query { key: Key::from("k"), query: wire::QueryId(1) });
    node.handle_peer(T0, n(3), Message::Scan { epoch: Epoch(4), after: None });
    assert_eq!(drain(&mut node), (vec![], vec![]), "no vote, no scan answer, nothing recorded");
    let request = wire::Request {
        id: crate::types::RequestId { session: crate::types::SessionId(5), seq: 1 },
        key: Key::from("k"),
        change: crate::change::Change::Put(Value::from("v")),
        timeout_ms: 1000,
        incarnation: node.status().incarnation,
        sent_at: T0,
        resent: false,
        floor: Version(0),
    };
    for _ in 0..2 {
        node.handle_client(T0, 77, Message::Request(request.clone()));
        let (_, messages) = drain(&mut node);
        let refused = matches!(
            &messages[..],
            [Envelope::Client(77, Message::Reply { outcome: Outcome::Refused(Refusal::CatchingUp), .. })]
        );
        assert!(refused, "refused, and the refusal remembered for later copies: {messages:?}");
    }
}

#[test]
fn a_scan_fences_the_peer_before_it_answers() {
    let held = scan_slot("a", Ballot::new(3, n(2)), Ballot::new(3, n(2)), st("x", 2));
    let mut node = node(vec![slot_record(&held)]);
    node.handle_peer(T0, n(3), Message::Scan { epoch: Epoch(6), after: None });
    let (records, messages) = drain(&mut node);
    assert_eq!(records, vec![Record::Fence { epoch: Epoch(6) }]);
    let page = Message::ScanPage {
        epoch: Epoch(6),
        after: None,
        slots: vec![scan_slot("a", Ballot::floor_of(Epoch(6)), held.accepted, held.state)],
        done: true,
    };
    assert_eq!(messages, vec![Envelope::Peer(n(3), page)]);
    // Every ballot of an older epoch is refused now, whatever its round.
    node.handle_peer(T0, n(2), Message::Prepare { key: Key::from("b"), ballot: Ballot::new(1 << 40, n(2)) });
    let (_, messages) = drain(&mut node);
    let reject = Message::Reject {
        key: Key::from("b"),
        ballot: Ballot::new(1 << 40, n(2)),
        promised: Ballot::floor_of(Epoch(6)),
    };
    assert_eq!(messages, vec![Envelope::Peer(n(2), reject)]);
    assert_eq!(node.status().epoch, 6, "its own ballots move to the new epoch");
}

#[test]
fn a_node_adopts_the_highest_state_and_votes_once_a_majority_sent_every_page() {
    let mut node = node(vec![Record::CatchingUp]);
    let scans = grant_epoch(&mut node, 7);
    let scan = Message::Scan { epoch: Epoch(7), after: None };
    assert_eq!(scans, vec![Envelope::Peer(n(2), scan.clone()), Envelope::Peer(n(3), scan)]);
    let (old, new) = (Ballot::new(4, n(2)), Ballot::new(9, n(3)));
    let from2 =
        vec![scan_slot("a", old, old, st("old", 1)), scan_slot("b", Ballot::new(12, n(2)), old, st("b", 1))];
    let from3 = vec![scan_slot("a", new, new, st("new", 2))];
    let page = |slots: Vec<ScanSlot>| Message::ScanPage { epoch: Epoch(7), after: None, slots, done: true };
    node.handle_peer(T0, n(2), page(from2.clone()));
    let (records, _) = drain(&mut node);
    assert_eq!(records, from2.iter().map(slot_record).collect::<Vec<_>>());
    assert!(node.status().catching_up, "one peer of two is not a majority of the cluster");
    node.handle_peer(T0, n(3), page(from3.clone()));
    let (records, _) = drain(&mut node);
    assert_eq!(
        records,
        vec![slot_record(&from3[0]), Record::Fence { epoch: Epoch(7) }, Record::CaughtUp { epoch: Epoch(7) }]
    );
    let status = node.status();
    assert!(!status.catching_up);
    assert_eq!(status.epoch, 7);
    // It votes again, above everything of the old epoch only.
    node.handle_peer(T0, n(2), Message::Prepare { key: Key::from("c"), ballot: Ballot::new(99, n(2)) });
    node.handle_peer(
        T0,
        n(2),
        Message::Prepare { key: Key::from("d"), ballot: Ballot::at(Epoch(7), 1, n(2)) },
    );
    let (_, messages) = drain(&mut node);
    let promised = |m: &Envelope<u32>| matches!(m, Envelope::Peer(_, Message::Promise { .. }));
    assert_eq!(messages.iter().map(promised).collect::<Vec<_>>(), vec![false, true]);
}

#[test]
fn a_page_that_is_not_the_one_awaited_is_ignored() {
    let mut node = node(vec![Record::CatchingUp]);
    grant_epoch(&mut node, 3);
    let s = scan_slot("a", Ballot::new(1, n(2)), Ballot::new(1, n(2)), st("a", 1));
    let stale = Message::ScanPage { epoch: Epoch(2), after: None, slots: vec![s.clone()], done: true };
    let skipped =
        Message::ScanPage { epoch: Epoch(3), after: Some(Key::from("z")), slots: vec![s], done: true };
    node.handle_peer(T0, n(2), stale);
    node.handle_peer(T0, n(2), skipped);
    assert_eq!(
        drain(&mut node).0,
        vec![],
        "an old epoch's page, or one after another cursor, adopts nothing"
    );
}

#[test]
fn compaction_while_catching_up_keeps_the_node_catching_up() {
    let held = scan_slot("a", Ballot::new(3, n(2)), Ballot::new(3, n(2)), st("x", 2));
    let node = node(vec![slot_record(&held), Record::CatchingUp]);
    assert!(node.catching_up());
    let compacted: Vec<Record> = node.live_records().collect();
    assert!(self::node(compacted.clone()).catching_up(), "compaction dropped the mark: {compacted:?}");
}

#[test]
fn after_a_compaction_a_caught_up_node_still_knows_what_it_adopted() {
    let mut node = node(vec![Record::CatchingUp]);
    grant_epoch(&mut node, 4);
    let s = scan_slot("a", Ballot::new(2, n(2)), Ballot::new(2, n(2)), st("a", 1));
    for peer in [2, 3] {
        let page = Message::ScanPage { epoch: Epoch(4), after: None, slots: vec![s.clone()], done: true };
        node.handle_peer(T0, n(peer), page);
    }
    assert!(!node.catching_up());
    let restarted = self::node(node.live_records().collect());
    assert!(!restarted.catching_up());
    assert_eq!(restarted.acceptor().adopted_epoch(), Epoch(4));
}

/// Five nodes R (1), X, Y, Z, W. X and Z accepted (b, s); R, Y and W
/// promised p > b, and Y accepted t at p. R loses its data and catches up
/// from X, Z and W, adopting (b, s). Were R to confirm b as its vote (a
/// repeated accept, a one-round read), X, Z and R would make s look chosen,
/// while the next quorum Y, W, R builds on t: s would be lost.
#[test]
fn a_state_adopted_while_catching_up_is_never_confirmed_as_a_vote() {
    use super::acceptor::Acceptor;
    let k = Key::from("k");
    let (r, x, y, z, w) = (n(1), n(2), n(3), n(4), n(5));
    let (mut ax, mut ay, mut az, mut aw) =
        (Acceptor::new(), Acceptor::new(), Acceptor::new(), Acceptor::new());
    let (b, s) = (Ballot::new(1, x), st("s", 1));
    ax.handle_accept(&k, b, &s, Ballot::ZERO);
    az.handle_accept(&k, b, &s, Ballot::ZERO);
    let p = Ballot::new(2, y);
    for a in [&mut ay, &mut aw] {
        a.handle_prepare(&k, p);
    }
    ay.handle_accept(&k, p, &st("t", 1), Ballot::ZERO);
    let mut rn = Node::new(NodeSetup {
        id: r,
        founding: Members::named(&[r, x, y, z, w]),
        records: vec![Record::CatchingUp],
        seed: 11,
        now: Time(0),
        limits: ClientLimits::default(),
    });
    grant_epoch(&mut rn, 7);
    for (peer, acceptor) in [(x, &mut ax), (z, &mut az), (w, &mut aw)] {
        acceptor.raise_floor(Epoch(7));
        let (slots, done) = acceptor.scan(None);
        rn.handle_peer(T0, peer, Message::ScanPage { epoch: Epoch(7), after: None, slots, done });
    }
    drain(&mut rn);
    assert!(!rn.catching_up());
    assert_eq!(rn.acceptor().slot(&k).map(|slot| slot.accepted), Some(b), "it adopted (b, s)");
    rn.handle_peer(
        T0,
        x,
        Message::Accept { key: k.clone(), ballot: b, state: s.clone(), next: Ballot::ZERO },
    );
    rn.handle_peer(T0, y, Message::Query { key: k.clone(), query: wire::QueryId(1) });
    let (_, out) = drain(&mut rn);
    let reject = Message::Reject { key: k.clone(), ballot: b, promised: Ballot::floor_of(Epoch(7)) };
    assert_eq!(out, vec![Envelope::Peer(x, reject)], "a refusal, and no answer to the query");
    let (page, _) = rn.acceptor().scan(None);
    assert!(page.iter().all(|slot| slot.adopted), "an export does not count it either: {page:?}");
    // "Nothing accepted" stays true: a state chosen with its forgotten vote
    // would have been adopted. So a key it holds nothing for is answered.
    let absent = Key::from("absent");
    rn.handle_peer(T0, y, Message::Query { key: absent.clone(), query: wire::QueryId(2) });
    let (_, out) = drain(&mut rn);
    let reply = Message::QueryReply {
        key: absent,
        query: wire::QueryId(2),
        accepted: Ballot::ZERO,
        state: RegisterState::default(),
    };
    assert_eq!(out, vec![Envelope::Peer(y, reply)]);
}

/// A node that must catch up but is the only member of its configuration
/// (a one-node cluster whose last unit was damaged, or a log that says so)
/// has no peer to catch up from: it starts, votes on nothing and asks no
/// one, and the driver can tell its operator (`DriverError::RejoinAlone`).
#[test]
fn a_sole_member_catching_up_starts_and_waits_without_peers() {
    let setup = NodeSetup {
        id: n(1),
        founding: Members::named(&[n(1)]),
        records: vec![Record::CatchingUp],
        seed: 11,
        now: Time(0),
        limits: ClientLimits::default(),
    };
    let mut node: Node<u32> = Node::new(setup);
    assert!(node.catching_up());
    assert_eq!(drain(&mut node), (vec![], vec![]));
    let mut now = T0;
    for _ in 0..3 {
        now = node.next_deadline().map_or(now, |d| d.max(now));
        node.handle_timeout(now);
        assert_eq!(drain(&mut node), (vec![], vec![]), "nobody to ask, nothing to record");
    }
    assert!(node.catching_up());
}
