//! Client requests in flight and the replies recently sent, so that a
//! retransmitted request is neither run twice nor left unanswered. Generic
//! over the client's address so the mio driver (socket addresses) and the
//! simulator (simulated clients) share it.

use super::proposer::ReqHandle;
use crate::limits;
use crate::types::RequestId;
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
}

#[derive(Debug)]
pub struct Clients<A> {
    next_handle: u64,
    in_flight: BTreeMap<ClientRef<A>, ReqHandle>,
    handles: BTreeMap<ReqHandle, ClientRef<A>>,
    replies: BTreeMap<ClientRef<A>, Outcome>,
    reply_order: VecDeque<ClientRef<A>>,
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
    pub fn admit(&mut self, client: ClientRef<A>) -> Admission {
        if self.in_flight.contains_key(&client) {
            return Admission::Running;
        }
        if let Some(outcome) = self.replies.get(&client) {
            return Admission::Answered(outcome.clone());
        }
        self.next_handle += 1;
        let handle = ReqHandle(self.next_handle);
        self.in_flight.insert(client, handle);
        self.handles.insert(handle, client);
        Admission::New(handle)
    }

    /// The request behind `handle` ended with `outcome`: remember the reply
    /// (evicting the oldest beyond the limit) and say where it goes.
    pub fn finish(&mut self, handle: ReqHandle, outcome: &Outcome) -> Option<ClientRef<A>> {
        let client = self.handles.remove(&handle)?;
        self.in_flight.remove(&client);
        if self.reply_order.len() >= limits::REPLY_CACHE_ENTRIES_MAX {
            if let Some(old) = self.reply_order.pop_front() {
                self.replies.remove(&old);
            }
        }
        self.replies.insert(client, outcome.clone());
        self.reply_order.push_back(client);
        Some(client)
    }

    /// Ends every request in flight with `outcome`, as the answer their
    /// retransmissions will get; their handles mean nothing from now on.
    pub fn finish_all(&mut self, outcome: &Outcome) {
        let handles: Vec<ReqHandle> = self.handles.keys().copied().collect();
        for handle in handles {
            self.finish(handle, outcome);
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
        let Admission::New(h) = clients.admit(c(1, 7)) else { panic!("first admission must run") };
        assert_eq!(clients.admit(c(1, 7)), Admission::Running);
        let outcome = Outcome::Refused(Refusal::Overloaded);
        assert_eq!(clients.finish(h, &outcome), Some(c(1, 7)));
        assert_eq!(clients.admit(c(1, 7)), Admission::Answered(outcome));
    }

    #[test]
    fn same_id_from_another_client_is_another_request() {
        let mut clients = Clients::default();
        assert!(matches!(clients.admit(c(1, 7)), Admission::New(_)));
        assert!(matches!(clients.admit(c(2, 7)), Admission::New(_)));
    }

    #[test]
    fn finish_all_answers_every_request_in_flight() {
        let mut clients = Clients::default();
        assert!(matches!(clients.admit(c(1, 7)), Admission::New(_)));
        assert!(matches!(clients.admit(c(2, 8)), Admission::New(_)));
        let outcome = Outcome::Unavailable { maybe_applied: true };
        clients.finish_all(&outcome);
        assert_eq!(clients.admit(c(1, 7)), Admission::Answered(outcome.clone()));
        assert_eq!(clients.admit(c(2, 8)), Admission::Answered(outcome));
    }

    #[test]
    fn unknown_handle_finishes_nothing() {
        let mut clients: Clients<u32> = Clients::default();
        assert_eq!(clients.finish(ReqHandle(99), &Outcome::Unavailable { maybe_applied: false }), None);
    }
}
