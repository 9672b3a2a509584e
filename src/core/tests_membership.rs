//! Membership changes (`reconfig`, `membership`) across whole nodes: a small
//! in-memory cluster whose messages arrive at once, in order, with every
//! record synced before what depends on it leaves (as the drivers do).

use super::client::{ClientMachine, Ending, Routing};
use super::node::{ClientLimits, Envelope, Node, NodeSetup};
use crate::change::Change;
use crate::members::{ConfigTag, Member, Members};
use crate::storage::{Record, Synced};
use crate::types::{Epoch, Key, NodeId, SessionId, Time, Value};
use crate::wire::{MembersOutcome, Message};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const CLIENT: u32 = 100;
const ADMIN: u32 = 200;

fn n(id: u16) -> NodeId {
    NodeId(id)
}

fn members(ids: &[u16]) -> Members {
    Members::new(ids.iter().map(|i| Member { id: n(*i), address: format!("node-{}", n(*i)) }).collect())
        .expect("unique ids")
}

struct Cluster {
    nodes: BTreeMap<NodeId, Node<u32>>,
    /// Every record each node synced, in order: what a restart replays.
    disks: BTreeMap<NodeId, Vec<Record>>,
    founding: Members,
    down: BTreeSet<NodeId>,
    now: Time,
    /// Peer messages in flight, with the sender's header.
    wire: VecDeque<(NodeId, ConfigTag, NodeId, Message)>,
    /// Messages to the clients: (client address, from node, message).
    to_clients: Vec<(u32, NodeId, Message)>,
    seed: u64,
}

impl Cluster {
    /// Nodes `founding` form the cluster; `joining` are started as new
    /// nodes that no configuration names yet.
    fn new(founding: &[u16], joining: &[u16]) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            founding: members(founding),
            down: BTreeSet::new(),
            now: Time(1_000_000),
            wire: VecDeque::new(),
            to_clients: Vec::new(),
            seed: 1,
        };
        for id in founding.iter().chain(joining) {
            cluster.start(n(*id));
        }
        cluster
    }

    fn start(&mut self, id: NodeId) {
        self.seed += 1;
        let records = self.disks.get(&id).cloned().unwrap_or_default();
        let setup = NodeSetup {
            id,
            founding: self.founding.clone(),
            records,
            seed: self.seed,
            now: self.now,
            limits: ClientLimits::default(),
        };
        self.nodes.insert(id, Node::new(setup));
        self.down.remove(&id);
    }

    fn crash(&mut self, id: NodeId) {
        self.nodes.remove(&id);
        self.down.insert(id);
    }

    /// Syncs each node's records and sends what they released.
    fn flush(&mut self) {
        for (id, node) in self.nodes.iter_mut() {
            let ready = node.take_ready();
            self.disks.entry(*id).or_default().extend(ready.records.iter().cloned());
            let tag = node.config_tag();
            for envelope in ready.release(Synced(())) {
                match envelope {
                    Envelope::Peer(to, msg) => self.wire.push_back((*id, tag, to, msg)),
                    Envelope::Client(addr, msg) => self.to_clients.push((addr, *id, msg)),
                }
            }
        }
    }

    /// Delivers everything in flight (and what it causes), then lets 1 ms
    /// pass and fires the timers due.
    fn step(&mut self) {
        self.step_until(|_| false);
    }

    /// As `step`, but stops delivering as soon as `stop` holds (the rest
    /// stays in flight); true if it did.
    fn step_until(&mut self, stop: impl Fn(&Cluster) -> bool) -> bool {
        self.flush();
        for _ in 0..100_000 {
            let Some((from, tag, to, msg)) = self.wire.pop_front() else { break };
            if let Some(node) = self.nodes.get_mut(&to) {
                node.handle_peer_tagged(self.now, from, tag, msg);
            }
            self.flush();
            if stop(self) {
                return true;
            }
        }
        self.now = self.now.plus_millis(1);
        for node in self.nodes.values_mut() {
            if node.next_deadline().is_some_and(|d| d <= self.now) {
                node.handle_timeout(self.now);
            }
        }
        self.flush();
        false
    }

    fn send_client(&mut self, addr: u32, to: NodeId, msg: Message) {
        if let Some(node) = self.nodes.get_mut(&to) {
            node.handle_client(self.now, addr, msg);
        }
    }

    /// Runs one operation through a client of every node in `all`.
    fn op(&mut self, all: &[u16], key: &str, change: Change) -> Ending {
        self.seed += 1;
        let ids = all.iter().map(|i| n(*i)).collect();
        let mut client = ClientMachine::new(ids, None, SessionId(u128::from(self.seed)), Routing::Home);
        client.start(self.now, Key::from(key), change, 5_000).expect("idle client");
        for _ in 0..10_000 {
            while let Some((to, msg)) = client.poll_transmit() {
                self.send_client(CLIENT, to, msg);
            }
            self.step();
            for (addr, from, msg) in std::mem::take(&mut self.to_clients) {
                if addr == CLIENT {
                    client.handle_message(self.now, from, msg);
                }
            }
            if client.poll_timeout().is_some_and(|t| t <= self.now) {
                client.handle_timeout(self.now);
            }
            if let Some(ending) = client.poll_ending() {
                return ending;
            }
        }
        panic!("operation on {key} never ended");
    }

    fn put(&mut self, all: &[u16], key: &str, value: &str) {
        let ending = self.op(all, key, Change::Put(Value::from(value)));
        assert!(matches!(ending, Ending::Done(_)), "put {key}={value}: {ending:?}");
    }

    fn read(&mut self, all: &[u16], key: &str) -> Option<Value> {
        match self.op(all, key, Change::Read) {
            Ending::Done(answer) => answer.value,
            other => panic!("read {key}: {other:?}"),
        }
    }

    /// Asks `via` to change the members to `target`, resending every 500 ms,
    /// until it answers done or failed, or `steps` pass.
    fn change_members(&mut self, via: u16, target: &[u16], steps: usize) -> Option<MembersOutcome> {
        let msg = Message::MembersRequest { id: 7, target: members(target) };
        for i in 0..steps {
            if i % 500 == 0 {
                self.send_client(ADMIN, n(via), msg.clone());
            }
            self.step();
            for (addr, _, reply) in std::mem::take(&mut self.to_clients) {
                match reply {
                    Message::MembersReply { outcome: MembersOutcome::InProgress(_), .. } => {}
                    Message::MembersReply { outcome, .. } if addr == ADMIN => return Some(outcome),
                    _ => {}
                }
            }
        }
        None
    }

    /// Steps until every node of `ids` reports the configuration of
    /// `members` (gossip carries it to those the driver did not wait for).
    fn settle(&mut self, ids: &[u16]) -> Epoch {
        for _ in 0..2_000 {
            let configs: BTreeSet<(Epoch, Vec<NodeId>)> = ids
                .iter()
                .filter_map(|i| self.nodes.get(&n(*i)))
                .map(|node| (node.status().config.epoch, node.status().config.members.ids()))
                .collect();
            if configs.len() == 1 {
                return configs.into_iter().next().map(|c| c.0).unwrap_or_default();
            }
            self.step();
        }
        panic!("nodes {ids:?} never agreed on a configuration");
    }
}

fn assert_done(outcome: Option<MembersOutcome>, target: &[u16]) -> Epoch {
    match outcome {
        Some(MembersOutcome::Done(config)) => {
            assert_eq!(config.members, members(target));
            config.epoch
        }
        other => panic!("the change to {target:?} ended {other:?}"),
    }
}

#[test]
fn the_cluster_grows_from_three_to_five_and_shrinks_back_keeping_every_key() {
    let mut c = Cluster::new(&[1, 2, 3], &[4, 5]);
    let everyone = [1, 2, 3, 4, 5];
    for k in 0..10 {
        c.put(&[1, 2, 3], &format!("k{k}"), &format!("v{k}"));
    }
    let steps: [(u16, &[u16]); 4] =
        [(1, &[1, 2, 3, 4]), (2, &[1, 2, 3, 4, 5]), (3, &[1, 2, 3, 4]), (4, &[1, 2, 3])];
    let mut last = Epoch(0);
    for (round, (via, target)) in steps.into_iter().enumerate() {
        let epoch = assert_done(c.change_members(via, target, 20_000), target);
        assert!(epoch > last, "each configuration has a later epoch");
        last = epoch;
        assert_eq!(c.settle(target), epoch);
        // Every key written so far reads back through the new members, and
        // a new one can be written.
        c.put(target, &format!("after{round}"), "x");
        for k in 0..10 {
            assert_eq!(c.read(target, &format!("k{k}")), Some(Value::from(format!("v{k}").as_str())), "k{k}");
        }
        for r in 0..=round {
            assert_eq!(c.read(target, &format!("after{r}")), Some(Value::from("x")), "after{r}");
        }
    }
    // Nodes 4 and 5 are out: they vote for nobody and turn clients away.
    for id in [4, 5] {
        let node = &c.nodes[&n(id)];
        assert!(!node.status().config.members.contains(n(id)), "node {id} knows it is out");
    }
    c.put(&everyone, "end", "y");
    assert_eq!(c.read(&[1, 2, 3], "end"), Some(Value::from("y")));
}

#[test]
fn a_change_whose_driver_dies_after_the_freeze_is_finished_by_another_node() {
    let mut c = Cluster::new(&[1, 2, 3], &[4]);
    for k in 0..5 {
        c.put(&[1, 2, 3], &format!("k{k}"), &format!("v{k}"));
    }
    // Node 1 drives until some node is frozen, then dies.
    c.send_client(ADMIN, n(1), Message::MembersRequest { id: 1, target: members(&[1, 2, 3, 4]) });
    let frozen = |c: &Cluster| [2, 3].iter().any(|i| c.nodes[&n(*i)].status().frozen.is_some());
    assert!((0..5_000).any(|_| c.step_until(frozen)), "the change never froze a node");
    c.crash(n(1));
    // Writes cannot complete while a majority is frozen; node 2, asked for
    // the same change, finishes it.
    let epoch = assert_done(c.change_members(2, &[1, 2, 3, 4], 20_000), &[1, 2, 3, 4]);
    c.start(n(1));
    assert_eq!(c.settle(&[1, 2, 3, 4]), epoch);
    for k in 0..5 {
        assert_eq!(c.read(&[1, 2, 3, 4], &format!("k{k}")), Some(Value::from(format!("v{k}").as_str())));
    }
    c.put(&[1, 2, 3, 4], "new", "z");
    assert_eq!(c.read(&[2, 3, 4], "new"), Some(Value::from("z")));
}

#[test]
fn a_second_change_asked_of_another_node_finishes_the_first_before_its_own() {
    let mut c = Cluster::new(&[1, 2, 3], &[4, 5]);
    c.put(&[1, 2, 3], "k", "v");
    c.send_client(ADMIN, n(1), Message::MembersRequest { id: 1, target: members(&[1, 2, 3, 4]) });
    let frozen = |c: &Cluster| [2, 3].iter().any(|i| c.nodes[&n(*i)].status().frozen.is_some());
    assert!((0..5_000).any(|_| c.step_until(frozen)), "the change never froze a node");
    c.crash(n(1));
    // Asked for another target, node 2 finishes the change in progress and
    // says so; asked again, it makes its own.
    let first = c.change_members(2, &[1, 2, 3, 5], 20_000);
    assert_done(first, &[1, 2, 3, 4]);
    c.start(n(1));
    assert_done(c.change_members(2, &[1, 2, 3, 5], 20_000), &[1, 2, 3, 5]);
    assert_eq!(c.read(&[1, 2, 3, 5], "k"), Some(Value::from("v")));
}

#[test]
fn a_member_that_loses_its_data_after_a_change_catches_up_from_the_new_members() {
    let mut c = Cluster::new(&[1, 2, 3], &[4, 5]);
    let epoch = assert_done(c.change_members(1, &[1, 2, 3, 4, 5], 20_000), &[1, 2, 3, 4, 5]);
    assert_eq!(c.settle(&[1, 2, 3, 4, 5]), epoch);
    c.crash(n(1));
    c.crash(n(2));
    // Chosen by {3, 4, 5}, a majority of the five.
    c.put(&[3, 4, 5], "k", "v");
    c.start(n(1));
    c.start(n(2));
    // Node 3 loses its data, and with it the configuration: it must catch
    // up from a majority of the five, not of the founding three.
    c.crash(n(3));
    c.disks.insert(n(3), vec![Record::CatchingUp]);
    c.start(n(3));
    for _ in 0..5_000 {
        if !c.nodes[&n(3)].catching_up() {
            break;
        }
        c.step();
    }
    assert!(!c.nodes[&n(3)].catching_up(), "node 3 never caught up");
    c.settle(&[1, 2, 3]);
    c.crash(n(4));
    c.crash(n(5));
    assert_eq!(c.read(&[1, 2, 3], "k"), Some(Value::from("v")), "an acknowledged write is lost");
}

#[test]
fn a_change_to_no_members_or_to_unreachable_ones_is_refused_before_anything_freezes() {
    let mut c = Cluster::new(&[1, 2, 3], &[]);
    c.put(&[1, 2, 3], "k", "v");
    // Six members of which three answer: no majority of the new ones.
    for target in [&[][..], &[1, 2, 3, 7, 8, 9][..]] {
        let outcome = c.change_members(1, target, 60_000);
        assert!(matches!(outcome, Some(MembersOutcome::Failed(_))), "{target:?}: {outcome:?}");
        let frozen: Vec<bool> = [1, 2, 3].iter().map(|i| c.nodes[&n(*i)].status().frozen.is_some()).collect();
        assert_eq!(frozen, [false, false, false], "{target:?}");
    }
    c.put(&[1, 2, 3], "k", "w");
    assert_eq!(c.read(&[1, 2, 3], "k"), Some(Value::from("w")));
}

#[test]
fn a_change_left_frozen_by_a_dead_driver_is_finished_by_a_frozen_node_on_its_own() {
    let mut c = Cluster::new(&[1, 2, 3], &[4]);
    c.put(&[1, 2, 3], "k", "v");
    c.send_client(ADMIN, n(1), Message::MembersRequest { id: 1, target: members(&[1, 2, 3, 4]) });
    let frozen = |c: &Cluster| [2, 3].iter().all(|i| c.nodes[&n(*i)].status().frozen.is_some());
    assert!((0..5_000).any(|_| c.step_until(frozen)), "the change never froze nodes 2 and 3");
    c.crash(n(1));
    // Nobody asks again; within the resume delay and a little, a frozen
    // node drives the change to its end.
    for _ in 0..(crate::limits::FROZEN_RESUME_MS + 2_000) {
        c.step();
    }
    let configs: Vec<Vec<NodeId>> =
        [2, 3, 4].iter().map(|i| c.nodes[&n(*i)].status().config.members.ids()).collect();
    assert!(configs.iter().all(|m| *m == members(&[1, 2, 3, 4]).ids()), "{configs:?}");
    c.start(n(1));
    assert_eq!(c.read(&[1, 2, 3, 4], "k"), Some(Value::from("v")));
}

#[test]
fn a_member_that_lost_its_data_takes_part_in_no_change_until_it_caught_up() {
    let mut c = Cluster::new(&[1, 2, 3], &[4]);
    assert_done(c.change_members(1, &[1, 2, 3, 4], 20_000), &[1, 2, 3, 4]);
    c.settle(&[1, 2, 3, 4]);
    // Node 4, a joiner once, loses its data: it knows no configuration now.
    c.crash(n(4));
    c.disks.insert(n(4), vec![Record::CatchingUp]);
    c.start(n(4));
    let tag = c.nodes[&n(1)].config_tag();
    let change =
        crate::members::MemberChange { epoch: Epoch(99), from: tag.epoch, to: members(&[1, 2, 3, 4, 5]) };
    let node = c.nodes.get_mut(&n(4)).expect("node 4");
    assert!(node.catching_up());
    node.handle_peer_tagged(c.now, n(1), tag, Message::Freeze { change });
    node.handle_peer_tagged(c.now, n(1), tag, Message::Scan { epoch: Epoch(99), after: None });
    let out = node.take_ready().release(Synced(()));
    let refused = Message::Frozen { epoch: Epoch(99), answer: crate::members::FreezeAnswer::Refused };
    assert!(out.contains(&Envelope::Peer(n(1), refused)), "{out:?}");
    assert!(!out.iter().any(|e| matches!(e, Envelope::Peer(_, Message::ScanPage { .. }))), "{out:?}");
    assert!(node.status().frozen.is_none());
}
