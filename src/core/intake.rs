//! The datagrams a node has read from its socket and not handled yet, one
//! queue per sender address, served in turn.
//!
//! The kernel keeps one queue for a socket, first come first served: a
//! flood several times faster than the node fills it, and every other
//! sender's datagram (a client's request, a peer's promise) then waits
//! behind seconds of the flood, or is dropped. So the driver reads the
//! socket dry every turn (cheap: no decoding) into this intake, and hands
//! the node one datagram per sender in turn (round robin), at most a
//! turn's worth (`TURN_MESSAGES_MAX`). A sender's datagram waits behind at
//! most one datagram of each other sender.
//!
//! Memory is bounded: a client address may have at most `source_max` bytes
//! waiting (beyond that its oldest datagrams are dropped, so a flood is
//! served fresh rather than late), and all senders together `total_max`
//! (a client's datagram that finds it full is dropped). Peers are held to
//! the total only, and a peer's datagram that finds it full makes room by
//! dropping clients' datagrams: peers' carry the votes every request waits
//! for, and a flood from many client addresses must not crowd them out. Each
//! datagram counts `INTAKE_DATAGRAM_OVERHEAD_BYTES` besides its bytes.
//!
//! Order: `push` what the socket had, then `pop` until the turn is full or
//! nothing is left; what is left waits for the next turn.

use crate::limits;
use std::collections::{BTreeMap, VecDeque};

/// One sender's datagrams, oldest first.
#[derive(Debug, Default)]
struct Queue {
    datagrams: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// Bytes a datagram of `len` bytes counts for.
fn cost(len: usize) -> usize {
    len + limits::INTAKE_DATAGRAM_OVERHEAD_BYTES
}

#[derive(Debug)]
pub struct Intake<A> {
    queues: BTreeMap<A, Queue>,
    /// The peers with datagrams waiting, in the order they are served ...
    peer_turns: VecDeque<A>,
    /// ... and the clients.
    client_turns: VecDeque<A>,
    bytes: usize,
    dropped: u64,
    source_max: usize,
    total_max: usize,
}

impl<A: Copy + Ord> Default for Intake<A> {
    fn default() -> Self {
        Intake::new(limits::INTAKE_SOURCE_BYTES_MAX, limits::INTAKE_BYTES_MAX)
    }
}

impl<A: Copy + Ord> Intake<A> {
    pub fn new(source_max: usize, total_max: usize) -> Intake<A> {
        Intake {
            queues: BTreeMap::new(),
            peer_turns: VecDeque::new(),
            client_turns: VecDeque::new(),
            bytes: 0,
            dropped: 0,
            source_max,
            total_max,
        }
    }

    /// A datagram from `from` (a peer's when `peer`), read from the socket.
    pub fn push(&mut self, from: A, datagram: Vec<u8>, peer: bool) {
        let size = cost(datagram.len());
        let share = if peer { self.total_max } else { self.source_max };
        if size > share {
            self.dropped += 1;
            return;
        }
        if peer {
            self.make_room_for_peer(size);
        } else {
            self.make_room(from, size);
        }
        if self.bytes + size > self.total_max {
            self.dropped += 1;
            return;
        }
        // A sender has a turn exactly while it has a queue (a `pop_*`
        // removes an empty one when its turn comes).
        if !self.queues.contains_key(&from) {
            let turns = if peer { &mut self.peer_turns } else { &mut self.client_turns };
            turns.push_back(from);
        }
        let queue = self.queues.entry(from).or_default();
        queue.datagrams.push_back(datagram);
        queue.bytes += size;
        self.bytes += size;
    }

    /// Drops `from`'s oldest datagrams until `size` more bytes fit its share.
    fn make_room(&mut self, from: A, size: usize) {
        let Some(queue) = self.queues.get_mut(&from) else { return };
        while queue.bytes + size > self.source_max {
            let Some(oldest) = queue.datagrams.pop_front() else { break };
            queue.bytes -= cost(oldest.len());
            self.bytes -= cost(oldest.len());
            self.dropped += 1;
        }
    }

    /// Drops clients' datagrams until `size` more bytes fit the total: the
    /// oldest of each client in turn, starting with the one served next,
    /// so no one client pays for all (each step is O(1)).
    fn make_room_for_peer(&mut self, size: usize) {
        let mut idle = 0;
        while self.bytes + size > self.total_max && idle < self.client_turns.len() {
            let Some(&client) = self.client_turns.front() else { return };
            self.client_turns.rotate_left(1);
            let oldest = self.queues.get_mut(&client).and_then(|q| {
                let oldest = q.datagrams.pop_front()?;
                q.bytes -= cost(oldest.len());
                Some(oldest)
            });
            match oldest {
                Some(oldest) => {
                    self.bytes -= cost(oldest.len());
                    self.dropped += 1;
                    idle = 0;
                }
                None => idle += 1,
            }
        }
    }

    /// The next peer datagram to handle: the oldest of the peer whose turn
    /// it is.
    pub fn pop_peer(&mut self) -> Option<(A, Vec<u8>)> {
        Self::pop_from(&mut self.queues, &mut self.peer_turns, &mut self.bytes)
    }

    /// The next client datagram to handle: the oldest of the client whose
    /// turn it is.
    pub fn pop_client(&mut self) -> Option<(A, Vec<u8>)> {
        Self::pop_from(&mut self.queues, &mut self.client_turns, &mut self.bytes)
    }

    fn pop_from(
        queues: &mut BTreeMap<A, Queue>,
        turns: &mut VecDeque<A>,
        bytes: &mut usize,
    ) -> Option<(A, Vec<u8>)> {
        while let Some(from) = turns.pop_front() {
            let Some(queue) = queues.get_mut(&from) else { continue };
            let Some(datagram) = queue.datagrams.pop_front() else {
                queues.remove(&from);
                continue;
            };
            queue.bytes -= cost(datagram.len());
            *bytes -= cost(datagram.len());
            if queue.datagrams.is_empty() {
                queues.remove(&from);
            } else {
                turns.push_back(from);
            }
            return Some((from, datagram));
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Whether datagrams from peers wait.
    pub fn has_peer_datagrams(&self) -> bool {
        !self.peer_turns.is_empty()
    }

    /// Bytes waiting, as the bounds count them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Datagrams dropped so far for want of room.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: usize = limits::INTAKE_DATAGRAM_OVERHEAD_BYTES;

    fn d(tag: u8, len: usize) -> Vec<u8> {
        vec![tag; len]
    }

    /// Everything waiting, as a driver takes it: peers' first.
    fn drain(intake: &mut Intake<u8>) -> Vec<(u8, u8)> {
        let next = || intake.pop_peer().or_else(|| intake.pop_client());
        std::iter::from_fn(next).map(|(from, bytes)| (from, bytes[0])).collect()
    }

    #[test]
    fn clients_are_served_in_turn_each_in_its_own_order() {
        let mut intake = Intake::new(1 << 20, 1 << 20);
        for n in 0..4 {
            intake.push(1, d(10 + n, 8), false);
        }
        intake.push(2, d(20, 8), false);
        intake.push(3, d(30, 8), false);
        intake.push(2, d(21, 8), false);
        assert_eq!(drain(&mut intake), [(1, 10), (2, 20), (3, 30), (1, 11), (2, 21), (1, 12), (1, 13)]);
        assert!(intake.is_empty());
        assert_eq!((intake.bytes(), intake.dropped()), (0, 0));
    }

    #[test]
    fn peers_and_clients_are_taken_apart() {
        let mut intake = Intake::new(1 << 20, 1 << 20);
        intake.push(1, d(10, 8), false);
        intake.push(8, d(80, 8), true);
        intake.push(9, d(90, 8), true);
        intake.push(8, d(81, 8), true);
        assert!(intake.has_peer_datagrams());
        assert_eq!(intake.pop_client().map(|(from, _)| from), Some(1));
        assert_eq!(intake.pop_client(), None, "only peers' are left");
        assert_eq!(drain(&mut intake), [(8, 80), (9, 90), (8, 81)]);
        assert!(!intake.has_peer_datagrams());
    }

    #[test]
    fn a_client_beyond_its_share_loses_its_oldest_datagrams() {
        let mut intake = Intake::new(3 * (100 + O), 1 << 20);
        for n in 0..5 {
            intake.push(1, d(n, 100), false);
        }
        intake.push(2, d(50, 100), false);
        assert_eq!(intake.dropped(), 2);
        assert_eq!(intake.bytes(), 4 * (100 + O));
        assert_eq!(drain(&mut intake), [(1, 2), (2, 50), (1, 3), (1, 4)]);
    }

    #[test]
    fn a_peer_is_held_to_the_total_only() {
        let mut intake = Intake::new(100 + O, 10 * (100 + O));
        for n in 0..12 {
            intake.push(9, d(n, 100), true);
        }
        assert_eq!(intake.dropped(), 2, "the newest two find the intake full");
        intake.push(1, d(40, 100), false);
        assert_eq!(intake.dropped(), 3, "a full intake drops what comes");
        assert_eq!(drain(&mut intake).len(), 10);
    }

    #[test]
    fn a_datagram_larger_than_a_share_is_dropped_and_the_queue_stays_served() {
        let mut intake = Intake::new(100 + O, 1 << 20);
        intake.push(1, d(1, 100), false);
        intake.push(1, d(2, 101), false);
        assert_eq!(intake.dropped(), 1, "too large for any share");
        intake.push(1, d(3, 10), false);
        assert_eq!(intake.dropped(), 2, "the oldest made room");
        assert_eq!(drain(&mut intake), [(1, 3)]);
        assert!(intake.is_empty());
    }

    /// A hundred clients flooding within their own shares fill the total;
    /// a peer's datagram (a vote) that finds it full makes room, and every
    /// one is kept.
    #[test]
    fn peers_votes_are_kept_while_a_flood_from_many_clients_fills_the_intake() {
        let mut intake: Intake<u16> = Intake::default();
        let (clients, peer) = (100u16, 1000u16);
        let (mut sent, mut kept) = (0u64, 0u64);
        for turn in 0..50 {
            // A turn: every peer datagram waiting, then the clients' share.
            while intake.pop_peer().is_some() {
                kept += u64::from(turn > 30);
            }
            for _ in 0..limits::TURN_CLIENT_MESSAGES_MAX {
                intake.pop_client();
            }
            // The next read: 4096 datagrams, one in a hundred a peer's vote.
            for i in 0..limits::INTAKE_READS_PER_TURN_MAX {
                if i % 100 == 50 {
                    sent += u64::from(turn >= 30);
                    intake.push(peer, d(1, 200), true);
                } else {
                    intake.push((i % clients as usize) as u16, d(2, 200), false);
                }
            }
        }
        assert!(intake.bytes() + 50 * 264 > limits::INTAKE_BYTES_MAX, "the clients filled the intake");
        while intake.pop_peer().is_some() {
            kept += 1;
        }
        assert_eq!(kept, sent, "peers' votes kept");
    }
}
