//! The client library: sends a change to one node of the cluster and waits
//! for its answer. Used by `paxosctl`, the examples and the torture workload.
//!
//! Safety of retries: a request is retransmitted, with the same request id,
//! only to the node it was first sent to, which runs it at most once. It is
//! sent to another node only when the first one answered that it did not run
//! it (overloaded, shutting down), or when it is a read. So a write is never
//! applied twice, and a request whose fate is unknown is reported as such.

use crate::change::Change;
use crate::config::Config;
use crate::limits;
use crate::types::{ClusterId, Key, NodeId, RegisterState, RequestId, Value, Version};
use crate::wire::{self, Header, Message, NodeStatus, Outcome, Refusal};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long to wait for a node to answer a status ping before trying the next.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// How often an unanswered request is retransmitted to its node.
const RETRANSMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Time kept back from the node's budget so its own "no quorum" answer
/// reaches us before we give up on it.
const REPLY_MARGIN: Duration = Duration::from_millis(150);

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The register's state after the change.
    pub state: RegisterState,
    /// False when a CAS found another value or version (nothing changed).
    pub precondition_held: bool,
    /// The node that answered.
    pub node: NodeId,
}

#[derive(Debug)]
pub enum ClientError {
    /// No quorum within the timeout. When `maybe_applied` is true the change
    /// may or may not have taken effect.
    NoQuorum {
        maybe_applied: bool,
        timeout: Duration,
    },
    /// The request was refused without being run.
    Refused(Refusal),
    /// No node answered a status ping.
    Unreachable {
        tried: Vec<NodeId>,
    },
    UnknownNode(NodeId),
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoQuorum { maybe_applied: true, timeout } => write!(
                f,
                "no quorum within {} ms: the outcome is unknown (the change may or may not have \
                 been applied; read the key to find out)",
                timeout.as_millis()
            ),
            ClientError::NoQuorum { maybe_applied: false, timeout } => write!(
                f,
                "no quorum within {} ms: the outcome is unknown to the cluster, but this change \
                 was never sent for acceptance, so it was not applied",
                timeout.as_millis()
            ),
            ClientError::Refused(r) => write!(f, "request refused, nothing changed: {r}"),
            ClientError::Unreachable { tried } => {
                let ids: Vec<String> = tried.iter().map(|n| n.to_string()).collect();
                write!(f, "no node answered (tried node {})", ids.join(", "))
            }
            ClientError::UnknownNode(id) => write!(f, "node {id} is not in the config"),
            ClientError::Io(e) => write!(f, "network error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

pub struct Client {
    cluster: ClusterId,
    nodes: Vec<(NodeId, SocketAddr)>,
    /// Only this node, when the user asked for one.
    pinned: Option<NodeId>,
    /// The node that answered last; tried first next time.
    current: Option<usize>,
    /// Each node's incarnation, as its last status reply told.
    incarnations: Vec<Option<u64>>,
    timeout: Duration,
    socket: UdpSocket,
    next_id: u64,
    buf: Vec<u8>,
}

impl Client {
    /// A client of the cluster in `config`. `node` pins every request to one
    /// node; otherwise the nodes are tried in turn.
    pub fn new(config: &Config, node: Option<NodeId>, timeout: Duration) -> Result<Client, ClientError> {
        if let Some(id) = node {
            config.node(id).ok_or(ClientError::UnknownNode(id))?;
        }
        let nodes: Vec<(NodeId, SocketAddr)> = config.nodes.iter().map(|n| (n.id, n.address)).collect();
        let local: SocketAddr = match nodes.first() {
            Some((_, a)) if a.is_ipv6() => "[::]:0".parse().map_err(io_invalid)?,
            _ => "0.0.0.0:0".parse().map_err(io_invalid)?,
        };
        let socket = UdpSocket::bind(local)?;
        let seed = std::process::id() as u64 ^ wall_clock_nanos();
        Ok(Client {
            cluster: config.cluster_id,
            current: Some((seed as usize) % nodes.len().max(1)).filter(|_| node.is_none()),
            incarnations: vec![None; nodes.len()],
            nodes,
            pinned: node,
            timeout,
            socket,
            next_id: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            buf: vec![0u8; 64 * 1024],
        })
    }

    pub fn read(&mut self, key: &Key) -> Result<Answer, ClientError> {
        self.execute(key, Change::Read)
    }

    pub fn put(&mut self, key: &Key, value: Value) -> Result<Answer, ClientError> {
        self.execute(key, Change::Put(value))
    }

    pub fn cas_value(&mut self, key: &Key, expect: Option<Value>, new: Value) -> Result<Answer, ClientError> {
        self.execute(key, Change::CasValue { expect, new })
    }

    pub fn cas_version(&mut self, key: &Key, expect: Version, new: Value) -> Result<Answer, ClientError> {
        self.execute(key, Change::CasVersion { expect, new })
    }

    pub fn delete(&mut self, key: &Key) -> Result<Answer, ClientError> {
        self.execute(key, Change::Delete)
    }

    /// Runs `change` on `key` at one node, within the client's timeout.
    pub fn execute(&mut self, key: &Key, change: Change) -> Result<Answer, ClientError> {
        // Checked here too, so an oversized request is refused at once
        // instead of being sent in a datagram too large to deliver.
        if key.0.len() > limits::KEY_BYTES_MAX {
            return Err(ClientError::Refused(Refusal::KeyTooLarge));
        }
        if change.value_bytes() > limits::VALUE_BYTES_MAX {
            return Err(ClientError::Refused(Refusal::ValueTooLarge));
        }
        let deadline = Instant::now() + self.timeout;
        let mut tried = Vec::new();
        loop {
            let Some(index) = self.pick_node(deadline, &mut tried)? else {
                return Err(self.no_quorum(false));
            };
            match self.run_at(index, key, &change, deadline)? {
                Attempt::Answered(answer) => return Ok(answer),
                Attempt::Unavailable { maybe_applied } => return Err(self.no_quorum(maybe_applied)),
                Attempt::Refused(r @ (Refusal::Overloaded | Refusal::ShuttingDown)) => {
                    self.forget(index);
                    if self.pinned.is_some() || Instant::now() >= deadline {
                        return Err(ClientError::Refused(r));
                    }
                }
                // The node restarted or fell silent. For a write, a
                // transmission (or a copy the network duplicated) may have
                // run before: the outcome is unknown. A read just asks again.
                Attempt::Restarted | Attempt::Silent if change.is_write() => {
                    self.forget(index);
                    return Err(self.no_quorum(true));
                }
                Attempt::Restarted | Attempt::Silent => self.forget(index),
                Attempt::Refused(r) => return Err(ClientError::Refused(r)),
            }
        }
    }

    fn no_quorum(&self, maybe_applied: bool) -> ClientError {
        ClientError::NoQuorum { maybe_applied, timeout: self.timeout }
    }

    /// Stops preferring node `index` and forgets its incarnation.
    fn forget(&mut self, index: usize) {
        if self.current == Some(index) {
            self.current = None;
        }
        self.forget_incarnation(index);
    }

    fn forget_incarnation(&mut self, index: usize) {
        if let Some(slot) = self.incarnations.get_mut(index) {
            *slot = None;
        }
    }

    /// The node to use: the pinned one, or the last one that answered, or
    /// the first that answers a status ping; a status ping also tells its
    /// incarnation, when not known yet. `None` when time ran out.
    fn pick_node(
        &mut self,
        deadline: Instant,
        tried: &mut Vec<NodeId>,
    ) -> Result<Option<usize>, ClientError> {
        if let Some(id) = self.pinned {
            let index = self.nodes.iter().position(|(n, _)| *n == id).ok_or(ClientError::UnknownNode(id))?;
            let wait = deadline.saturating_duration_since(Instant::now());
            return match self.knows(index) || self.status_at(index, wait).is_ok() {
                true => Ok(Some(index)),
                false if Instant::now() >= deadline => Ok(None),
                false => Err(ClientError::Unreachable { tried: vec![id] }),
            };
        }
        if let Some(i) = self.current {
            if self.knows(i)
                || (!tried.contains(&self.nodes[i].0) && self.status_at(i, PROBE_TIMEOUT).is_ok())
            {
                return Ok(Some(i));
            }
            tried.push(self.nodes[i].0);
            self.current = None;
        }
        // Round after round until the deadline: on a loaded machine or a
        // lossy network one unanswered ping proves little.
        let mut answered_never = Vec::new();
        for i in (0..self.nodes.len()).cycle() {
            if Instant::now() >= deadline {
                break;
            }
            let id = self.nodes[i].0;
            if tried.contains(&id) && tried.len() < self.nodes.len() {
                continue;
            }
            if !tried.contains(&id) {
                tried.push(id);
            }
            let wait = PROBE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            if self.status_at(i, wait).is_ok() {
                self.current = Some(i);
                return Ok(Some(i));
            }
            if !answered_never.contains(&id) {
                answered_never.push(id);
            }
        }
        match answered_never.len() == self.nodes.len() {
            true => Err(ClientError::Unreachable { tried: answered_never }),
            false => Ok(None),
        }
    }

    fn knows(&self, index: usize) -> bool {
        self.incarnations.get(index).is_some_and(Option::is_some)
    }

    fn run_at(
        &mut self,
        index: usize,
        key: &Key,
        change: &Change,
        deadline: Instant,
    ) -> Result<Attempt, ClientError> {
        let (node, addr) = self.nodes[index];
        let incarnation = self.incarnations.get(index).copied().flatten().unwrap_or_default();
        let id = self.fresh_id();
        let budget = deadline.saturating_duration_since(Instant::now()).saturating_sub(REPLY_MARGIN);
        let timeout_ms = budget.as_millis().clamp(1, limits::REQUEST_TIMEOUT_MS_MAX as u128) as u32;
        let request =
            Message::Request { id, key: key.clone(), change: change.clone(), timeout_ms, incarnation };
        let reply = self.exchange(addr, &request, deadline, |m| match m {
            Message::Reply { id: rid, outcome } if rid == id => Some(outcome),
            _ => None,
        })?;
        Ok(match reply {
            Some(Outcome::Done { state, precondition_held }) => {
                Attempt::Answered(Answer { state, precondition_held, node })
            }
            Some(Outcome::Unavailable { maybe_applied }) => Attempt::Unavailable { maybe_applied },
            Some(Outcome::Refused(Refusal::Restarted)) => Attempt::Restarted,
            Some(Outcome::Refused(r)) => Attempt::Refused(r),
            None => Attempt::Silent,
        })
    }

    /// Asks every node (or the pinned one) for its status.
    pub fn status_all(&mut self) -> Vec<(NodeId, SocketAddr, Result<NodeStatus, ClientError>)> {
        let indexes: Vec<usize> = match self.pinned {
            Some(id) => self.nodes.iter().position(|(n, _)| *n == id).into_iter().collect(),
            None => (0..self.nodes.len()).collect(),
        };
        let timeout = self.timeout.min(Duration::from_secs(1));
        indexes.into_iter().map(|i| (self.nodes[i].0, self.nodes[i].1, self.status_at(i, timeout))).collect()
    }

    fn status_at(&mut self, index: usize, timeout: Duration) -> Result<NodeStatus, ClientError> {
        let (node, addr) = self.nodes[index];
        let id = self.fresh_id();
        let deadline = Instant::now() + timeout;
        let reply = self.exchange(addr, &Message::StatusRequest { id }, deadline, |m| match m {
            Message::StatusReply { id: rid, status } if rid == id => Some(status),
            _ => None,
        })?;
        let status = reply.ok_or(ClientError::Unreachable { tried: vec![node] })?;
        if let Some(slot) = self.incarnations.get_mut(index) {
            *slot = Some(status.incarnation);
        }
        Ok(status)
    }

    /// Sends `msg` to `addr`, retransmitting, until `pick` accepts a reply
    /// from that address or `deadline` passes. Stray datagrams are ignored.
    fn exchange<T>(
        &mut self,
        addr: SocketAddr,
        msg: &Message,
        deadline: Instant,
        pick: impl Fn(Message) -> Option<T>,
    ) -> Result<Option<T>, ClientError> {
        let header = Header { cluster: self.cluster, sender: NodeId::CLIENT };
        let datagram = wire::encode_datagram(header, std::slice::from_ref(msg));
        let mut next_send = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            if now >= next_send {
                // A failed send is like a lost datagram: retransmission covers it.
                let _ = self.socket.send_to(&datagram, addr);
                next_send = now + RETRANSMIT_INTERVAL;
            }
            let wait = next_send.min(deadline).saturating_duration_since(now).max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait))?;
            let (len, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(received) => received,
                Err(e) if is_timeout_or_refused(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            if from != addr {
                continue;
            }
            let Ok((_, messages)) = wire::decode_datagram(self.cluster, &self.buf[..len]) else {
                continue;
            };
            if let Some(found) = messages.into_iter().find_map(&pick) {
                return Ok(Some(found));
            }
        }
    }

    fn fresh_id(&mut self) -> RequestId {
        self.next_id = self.next_id.wrapping_add(1);
        RequestId(self.next_id)
    }
}

enum Attempt {
    Answered(Answer),
    Unavailable {
        maybe_applied: bool,
    },
    Refused(Refusal),
    /// The node restarted since we learned its incarnation.
    Restarted,
    /// The node never answered before the deadline.
    Silent,
}

fn is_timeout_or_refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
            | io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionRefused
    )
}

fn io_invalid(e: std::net::AddrParseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn wall_clock_nanos() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| d.as_nanos() as u64)
}
