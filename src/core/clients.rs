//! Client requests in flight and the replies recently sent, so that a
//! retransmitted request is neither run twice nor left unanswered. Generic
//! over the client's address so the mio driver (socket addresses) and the
//! simulator (simulated clients) share it.

use super::proposer::ReqHandle;
use crate::limits;
use crate::types::{RequestId, Time};
use crate::wire::Outcome;
use std::collections::{BTreeMap, VecDeque};

/// Where a client request came from, so its reply can find its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientRef<A> {
    pub addr: A,
    pub id: RequestId,
}

/// What to do with an incoming request.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Run it under this handle.
    New(ReqHandle),
    /// It is already running: the reply will come when it ends.
    Running,
    /// It ran already: send this reply again.
    Answered(Outcome),
    /// The table is full of replies too young to forget: refuse the request
    /// unrun (the client may try again, or elsewhere).
    Full,
}

#[derive(Debug)]
pub struct Clients<A> {
    next_handle: u64,
    in_flight: BTreeMap<ClientRef<A>, ReqHandle>,
    handles: BTreeMap<ReqHandle, ClientRef<A>>,
    replies: BTreeMap<ClientRef<A>, Outcome>,
    reply_order: VecDeque<(ClientRef<A>, Time)>,
}

impl<A> Default for Clients<A> {
    fn default() -> Self {
        Clients {
            next_handle: 0,
            in_flight: BTreeMap::new(),
            handles: BTreeMap::new(),
            replies: BTreeMap::new(),
            reply_order: VecDeque::new(),
        }
    }
}

impl<A: Copy + Ord> Clients<A> {
    /// A reply is forgotten only once it is older than any client could
    /// still be retransmitting its request: forgetting it sooner would let
    /// a late retransmission run the request a second time.
    pub fn admit(&mut self, client: ClientRef<A>, now: Time) -> Admission {
        if self.in_flight.contains_key(&client) {
            return Admission::Running;
        }
        if let Some(outcome) = self.replies.get(&client) {
            return Admission::Answered(outcome.clone());
        }
        if self.in_flight.len() + self.replies.len() >= limits::REPLY_CACHE_ENTRIES_MAX
            && !self.forget_oldest(now)
        {
            return Admission::Full;
        }
        self.next_handle += 1;
        let handle = ReqHandle(self.next_handle);
        self.in_flight.insert(client, handle);
        self.handles.insert(handle, client);
        Admission::New(handle)
    }

    /// The request behind `handle` ended with `outcome`: remember the reply
    /// (evicting the oldest beyond the limit) and say where it goes.
    pub fn finish(&mut self, handle: ReqHandle, outcome: &Outcome, now: Time) -> Option<ClientRef<A>> {
        let client = self.handles.remove(&handle)?;
        self.in_flight.remove(&client);
        self.replies.insert(client, outcome.clone());
        self.reply_order.push_back((client, now));
        Some(client)
    }

    /// Forgets the oldest reply if it is old enough; whether it did.
    fn forget_oldest(&mut self, now: Time) -> bool {
        match self.reply_order.front() {
            Some(&(client, at)) if now.micros_since(at) >= limits::REPLY_RETENTION_MS * 1000 => {
                self.reply_order.pop_front();
                self.replies.remove(&client);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Refusal;

    fn c(addr: u32, id: u64) -> ClientRef<u32> {
        ClientRef { addr, id: RequestId(id) }
    }

    #[test]
    fn retransmission_is_not_run_twice_and_gets_the_same_reply() {
        let mut clients = Clients::default();
        let Admission::New(h) = clients.admit(c(1, 7), Time(0)) else { panic!("first admission must run") };
        assert_eq!(clients.admit(c(1, 7), Time(0)), Admission::Running);
        let outcome = Outcome::Refused(Refusal::Overloaded);
        assert_eq!(clients.finish(h, &outcome, Time(0)), Some(c(1, 7)));
        assert_eq!(clients.admit(c(1, 7), Time(0)), Admission::Answered(outcome));
    }

    #[test]
    fn same_id_from_another_client_is_another_request() {
        let mut clients = Clients::default();
        assert!(matches!(clients.admit(c(1, 7), Time(0)), Admission::New(_)));
        assert!(matches!(clients.admit(c(2, 7), Time(0)), Admission::New(_)));
    }

    #[test]
    fn replies_are_forgotten_only_when_old_and_the_table_is_full() {
        let mut clients = Clients::default();
        for id in 0..limits::REPLY_CACHE_ENTRIES_MAX as u64 {
            let Admission::New(h) = clients.admit(c(1, id), Time(0)) else { panic!("room for {id}") };
            clients.finish(h, &Outcome::Refused(Refusal::Overloaded), Time(0));
        }
        let young = Time::from_millis(limits::REPLY_RETENTION_MS - 1);
        assert_eq!(clients.admit(c(2, 1), young), Admission::Full, "no reply is old enough to forget");
        let old = Time::from_millis(limits::REPLY_RETENTION_MS);
        assert!(matches!(clients.admit(c(2, 1), old), Admission::New(_)));
        assert!(matches!(clients.admit(c(1, 0), old), Admission::New(_)), "the oldest was forgotten");
        assert_eq!(clients.admit(c(1, 2), old), Admission::Answered(Outcome::Refused(Refusal::Overloaded)));
    }

    #[test]
    fn unknown_handle_finishes_nothing() {
        let mut clients: Clients<u32> = Clients::default();
        assert_eq!(
            clients.finish(ReqHandle(99), &Outcome::Unavailable { maybe_applied: false }, Time(0)),
            None
        );
    }
}
