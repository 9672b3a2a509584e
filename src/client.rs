//! The blocking client library: one session (`core::client::ClientMachine`)
//! over a UDP socket. Used by `paxosctl` and the examples; the load
//! generator drives many machines from one event loop instead.
//!
//! Every decision (which node, when to retransmit or move to another node,
//! how an operation ended) is the machine's; this file only moves datagrams
//! and time. A request keeps its identity across retransmissions and nodes,
//! so a write is applied at most once, and an outcome that cannot be known
//! is reported as such.

use crate::auth::{KeyFiles, Keyring};
use crate::change::Change;
use crate::config::Config;
use crate::core::client::{ClientMachine, NotRun, Routing, Unknown};
use crate::core::watch::{WatchEvent, WatchMachine};
use crate::members::{Configuration, Members};
use crate::types::{ClusterId, Epoch, Key, NodeId, PastState, SessionId, Time, Value, Version};
use crate::wire::{self, Header, MembersOutcome, Message, NodeStatus, Refusal, ScanSlot};
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub use crate::core::client::{Answer, Ending};

/// How often `status_all` asks again the nodes that have not answered.
const STATUS_RETRY_INTERVAL: Duration = Duration::from_millis(crate::limits::STATUS_RETRY_MS);

/// How long `scan_page` waits for a page before it asks again.
const SCAN_RESEND_INTERVAL: Duration = Duration::from_millis(crate::limits::EXPORT_SCAN_RESEND_MS);

#[derive(Debug)]
pub enum ClientError {
    /// The change may or may not have taken effect.
    Unknown {
        reason: Unknown,
        timeout: Duration,
    },
    /// No quorum could be reached before the timeout, and the change was not
    /// applied.
    NoQuorum {
        timeout: Duration,
    },
    /// The request was refused without being run; nothing changed.
    Refused(Refusal),
    /// No node answered at all.
    Unreachable {
        tried: Vec<NodeId>,
    },
    UnknownNode(NodeId),
    /// A membership change could not be made; the text says why.
    MembersFailed(String),
    /// `wait_version`'s time was up before the key reached `version` (or
    /// before a node could tell).
    WaitTimedOut {
        version: Version,
        timeout: Duration,
    },
    /// The cluster secret's key files could not be used.
    Secret(crate::auth::SecretError),
    Io(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unknown { reason: Unknown::NoAnswer, timeout } => write!(
                f,
                "no answer within {} ms: the outcome is unknown (the change may or may not have \
                 been applied; read the key to find out)",
                timeout.as_millis()
            ),
            ClientError::Unknown { reason: Unknown::Indeterminate, .. } => write!(
                f,
                "the outcome is unknown: the request may have run at a node that fell silent, and \
                 the key has since taken more writes than it remembers (read the key to find out)"
            ),
            ClientError::NoQuorum { timeout } => write!(
                f,
                "no quorum within {} ms: the change was not applied (no node could reach a \
                 majority)",
                timeout.as_millis()
            ),
            ClientError::Refused(r) => write!(f, "request refused, nothing changed: {r}"),
            ClientError::Unreachable { tried } => {
                let ids: Vec<String> = tried.iter().map(|n| n.to_string()).collect();
                write!(f, "no node answered (tried node {})", ids.join(", "))
            }
            ClientError::UnknownNode(id) => write!(f, "node {id} is not in the config"),
            ClientError::MembersFailed(why) => write!(f, "membership change failed: {why}"),
            ClientError::WaitTimedOut { version, timeout } => write!(
                f,
                "the key did not reach version {version} within {} ms (or no node could tell)",
                timeout.as_millis()
            ),
            ClientError::Secret(e) => write!(f, "{e}"),
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
    keys: Keyring,
    key_files: KeyFiles,
    nodes: Vec<(NodeId, SocketAddr)>,
    pinned: Option<NodeId>,
    timeout: Duration,
    socket: UdpSocket,
    machine: ClientMachine,
    origin: Instant,
    next_probe: u64,
    buf: Vec<u8>,
    /// Why the last node asked for a membership change could not make it.
    members_failure: Option<String>,
}

impl Client {
    /// A client of the cluster in `config`. `node` pins every request to one
    /// node; otherwise the client picks and moves between nodes itself.
    pub fn new(config: &Config, node: Option<NodeId>, timeout: Duration) -> Result<Client, ClientError> {
        if let Some(id) = node {
            config.node(id).ok_or(ClientError::UnknownNode(id))?;
        }
        let nodes: Vec<(NodeId, SocketAddr)> = config.nodes.iter().map(|n| (n.id, n.address)).collect();
        let local: SocketAddr = match nodes.first() {
            Some((_, a)) if a.is_ipv6() => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            _ => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
        };
        let (keys, key_files) = KeyFiles::open(config).map_err(ClientError::Secret)?;
        let socket = UdpSocket::bind(local)?;
        let members = nodes.iter().map(|(id, _)| *id).collect();
        let session = crate::seed::session_id();
        Ok(Client {
            cluster: config.cluster_id,
            keys,
            key_files,
            machine: ClientMachine::new(members, node, session, Routing::Home),
            nodes,
            pinned: node,
            timeout,
            socket,
            origin: Instant::now(),
            next_probe: 0,
            buf: vec![0u8; 64 * 1024],
            members_failure: None,
        })
    }

    pub fn session(&self) -> SessionId {
        self.machine.session()
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

    pub fn append(&mut self, key: &Key, tail: Value) -> Result<Answer, ClientError> {
        self.execute(key, Change::Append(tail))
    }

    /// Runs `change` on `key`, within the client's timeout.
    pub fn execute(&mut self, key: &Key, change: Change) -> Result<Answer, ClientError> {
        let ending = self.run(key, change, self.timeout)?;
        self.judge(ending)
    }

    /// The client's timeout for one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `change` on `key` within `timeout`, and says how it ended as
    /// the session machine judged it (`core::lease` reads endings so).
    pub fn run(&mut self, key: &Key, change: Change, timeout: Duration) -> Result<Ending, ClientError> {
        let timeout_ms = timeout.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
        // A blocking client is idle between calls, so `start` cannot be busy.
        let _ = self.machine.start(self.now(), key.clone(), change, timeout_ms);
        loop {
            self.flush()?;
            if let Some(ending) = self.machine.poll_ending() {
                return Ok(ending);
            }
            let wake = self.machine.poll_timeout().unwrap_or(self.now());
            if let Some((from, messages)) = self.receive_until(wake)? {
                let now = self.now();
                messages.into_iter().for_each(|m| self.machine.handle_message(now, from, m));
            } else {
                self.machine.handle_timeout(self.now());
            }
        }
    }

    /// The error (or answer) an ending is for a caller of `execute`.
    pub fn judge(&self, ending: Ending) -> Result<Answer, ClientError> {
        let timeout = self.timeout;
        match ending {
            Ending::Done(answer) => Ok(answer),
            Ending::Unknown(reason) => Err(ClientError::Unknown { reason, timeout }),
            Ending::NotRun(NotRun::Refused(r)) => Err(ClientError::Refused(r)),
            Ending::NotRun(NotRun::NoQuorum) => Err(ClientError::NoQuorum { timeout }),
            Ending::NotRun(NotRun::Unreachable) => {
                let tried = match self.pinned {
                    Some(id) => vec![id],
                    None => self.nodes.iter().map(|(id, _)| *id).collect(),
                };
                Err(ClientError::Unreachable { tried })
            }
        }
    }

    /// Asks every node (or the pinned one) for its status, all at once.
    pub fn status_all(&mut self) -> Vec<(NodeId, SocketAddr, Result<NodeStatus, ClientError>)> {
        let asked: Vec<(NodeId, SocketAddr)> = match self.pinned {
            Some(id) => self.nodes.iter().filter(|(n, _)| *n == id).copied().collect(),
            None => self.nodes.clone(),
        };
        let mut answers: Vec<Option<NodeStatus>> = vec![None; asked.len()];
        self.next_probe += 1;
        let probe = self.next_probe;
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(1));
        while Instant::now() < deadline && answers.iter().any(Option::is_none) {
            for ((node, addr), _) in asked.iter().zip(&answers).filter(|(_, a)| a.is_none()) {
                let msg = Message::StatusRequest { session: self.session(), probe };
                let _ = self.send(*node, *addr, &msg);
            }
            let until = (Instant::now() + STATUS_RETRY_INTERVAL).min(deadline);
            while let Ok(Some((from, messages))) = self.receive_until(self.time_of(until)) {
                for msg in messages {
                    if let Message::StatusReply { probe: p, status, .. } = msg
                        && p == probe
                        && let Some(i) = asked.iter().position(|(id, _)| *id == from)
                    {
                        answers[i] = Some(status);
                    }
                }
            }
        }
        asked
            .into_iter()
            .zip(answers)
            .map(|((id, addr), s)| (id, addr, s.ok_or(ClientError::Unreachable { tried: vec![id] })))
            .collect()
    }

    /// Changes the cluster's members to `target` and waits until a node
    /// says it is installed, for at most `within`. A node drives the change;
    /// one silent for `MEMBER_DRIVER_SILENCE_MS` is left for the next, which
    /// resumes the change where it stands. A node that first finished
    /// another change in progress is asked again.
    pub fn change_members(
        &mut self,
        target: &Members,
        within: Duration,
    ) -> Result<Configuration, ClientError> {
        let deadline = Instant::now() + within;
        let silence = Duration::from_millis(crate::limits::MEMBER_DRIVER_SILENCE_MS);
        let order: Vec<(NodeId, SocketAddr)> = match self.pinned {
            Some(id) => self.nodes.iter().filter(|(n, _)| *n == id).copied().collect(),
            None => self.nodes.clone(),
        };
        let mut last_failure = None;
        let mut turn = 0usize;
        while Instant::now() < deadline {
            let Some(&(node, addr)) = order.get(turn % order.len().max(1)) else { break };
            turn += 1;
            match self.drive_members(node, addr, target, deadline, silence)? {
                Some(config) if &config.members == target => return Ok(config),
                // It finished another change first: ask again.
                Some(_) => turn -= 1,
                None => {}
            }
            if let Some(why) = self.members_failure.take() {
                last_failure = Some(why);
                std::thread::sleep(STATUS_RETRY_INTERVAL);
            }
        }
        Err(match last_failure {
            Some(why) => ClientError::MembersFailed(why),
            None => ClientError::Unreachable { tried: order.iter().map(|(n, _)| *n).collect() },
        })
    }

    /// Asks `node` to drive the change until it answers done (the
    /// configuration it installed), fails (`None`, the reason kept in
    /// `members_failure`), or falls silent for `silence` (`None`).
    fn drive_members(
        &mut self,
        node: NodeId,
        addr: SocketAddr,
        target: &Members,
        deadline: Instant,
        silence: Duration,
    ) -> Result<Option<Configuration>, ClientError> {
        self.next_probe += 1;
        let id = self.next_probe;
        let request = Message::MembersRequest { id, target: target.clone() };
        let mut heard = Instant::now();
        while Instant::now() < deadline && heard.elapsed() < silence {
            let _ = self.send(node, addr, &request);
            let until = self.time_of((Instant::now() + STATUS_RETRY_INTERVAL * 5).min(deadline));
            while let Some((from, messages)) = self.receive_until(until)? {
                for msg in messages {
                    let Message::MembersReply { id: got, outcome } = msg else { continue };
                    if from != node || got != id {
                        continue;
                    }
                    heard = Instant::now();
                    match outcome {
                        MembersOutcome::InProgress(_) => {}
                        MembersOutcome::Done(config) => return Ok(Some(config)),
                        MembersOutcome::Failed(why) => {
                            self.members_failure = Some(format!("node {node}: {why}"));
                            return Ok(None);
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// One page of node `node`'s acceptor slots: those of the keys after
    /// `after`, in key order, and whether no key follows them (a
    /// `Message::Scan` at epoch 0, which fences nothing and changes
    /// nothing). Asks again every `EXPORT_SCAN_RESEND_MS` until the page
    /// comes, at most `EXPORT_SCAN_ATTEMPTS_MAX` times; `Unreachable` after
    /// that. The page is what the node said: check it before use
    /// (`export::ScanMerge` does).
    pub fn scan_page(
        &mut self,
        node: NodeId,
        after: Option<&Key>,
    ) -> Result<(Vec<ScanSlot>, bool), ClientError> {
        let &(_, addr) =
            self.nodes.iter().find(|(id, _)| *id == node).ok_or(ClientError::UnknownNode(node))?;
        let scan = Message::Scan { epoch: Epoch(0), after: after.cloned() };
        for _ in 0..crate::limits::EXPORT_SCAN_ATTEMPTS_MAX {
            let _ = self.send(node, addr, &scan);
            let until = self.time_of(Instant::now() + SCAN_RESEND_INTERVAL);
            while let Some((from, messages)) = self.receive_until(until)? {
                for msg in messages {
                    match msg {
                        Message::ScanPage { epoch: Epoch(0), after: a, slots, done }
                            if from == node && a.as_ref() == after =>
                        {
                            return Ok((slots, done));
                        }
                        // A late answer to an earlier request tells the
                        // session about its node; a late page is dropped.
                        msg => self.machine.handle_message(self.now(), from, msg),
                    }
                }
            }
        }
        Err(ClientError::Unreachable { tried: vec![node] })
    }

    /// Watches `key`: calls `on_event` with each version after `after`
    /// (`None`: from the current state on), each gap and each change of
    /// the node listened to, in order, until it returns false. Runs until
    /// then, whatever the client's timeout: a watch has no end of its own.
    /// See `core::watch` for what it guarantees.
    pub fn watch(
        &mut self,
        key: &Key,
        after: Option<Version>,
        mut on_event: impl FnMut(WatchEvent) -> bool,
    ) -> Result<(), ClientError> {
        let mut machine = self.watch_machine(key, after, true);
        self.drive_watch(&mut machine, None, &mut on_event).map(|_| ())
    }

    /// Waits until `key` is at version `version` or later, within the
    /// client's timeout, and returns its newest state then. Nodes answer
    /// as soon as a write makes the version, without polling.
    pub fn wait_version(&mut self, key: &Key, version: Version) -> Result<PastState, ClientError> {
        if version == Version(0) {
            let answer = self.read(key)?;
            return Ok(PastState { version: answer.version, value: answer.value });
        }
        let after = Version(version.0.saturating_sub(1));
        let mut machine = self.watch_machine(key, Some(after), false);
        let deadline = self.now().plus_micros(self.timeout.as_micros().min(u128::from(u64::MAX)) as u64);
        let mut newest: Option<PastState> = None;
        let mut keep = |event: WatchEvent| {
            if let WatchEvent::Version(state) = event {
                newest = Some(state);
            }
            newest.as_ref().is_none_or(|s| s.version < version)
        };
        let stopped = self.drive_watch(&mut machine, Some(deadline), &mut keep)?;
        match newest {
            Some(state) if stopped => Ok(state),
            _ => Err(ClientError::WaitTimedOut { version, timeout: self.timeout }),
        }
    }

    fn watch_machine(&self, key: &Key, after: Option<Version>, every_version: bool) -> WatchMachine {
        let members = match self.pinned {
            Some(id) => vec![id],
            None => self.nodes.iter().map(|(id, _)| *id).collect(),
        };
        WatchMachine::new(self.now(), members, key.clone(), after, every_version, crate::seed::os_seed())
    }

    /// Moves a watch's datagrams and time until `on_event` says stop
    /// (true) or `deadline` passes (false).
    fn drive_watch(
        &mut self,
        machine: &mut WatchMachine,
        deadline: Option<Time>,
        on_event: &mut dyn FnMut(WatchEvent) -> bool,
    ) -> Result<bool, ClientError> {
        loop {
            while let Some((node, msg)) = machine.poll_transmit() {
                if let Some(&(_, addr)) = self.nodes.iter().find(|(id, _)| *id == node) {
                    let _ = self.send(node, addr, &msg);
                }
            }
            while let Some(event) = machine.poll_event() {
                if !on_event(event) {
                    return Ok(true);
                }
            }
            let now = self.now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            let wake = machine.poll_timeout().into_iter().chain(deadline).min().unwrap_or(now);
            match self.receive_until(wake)? {
                Some((from, messages)) => {
                    let now = self.now();
                    messages.into_iter().for_each(|m| machine.handle_message(now, from, m));
                }
                None => machine.handle_timeout(self.now()),
            }
        }
    }

    fn now(&self) -> Time {
        Time(self.origin.elapsed().as_micros() as u64)
    }

    fn time_of(&self, instant: Instant) -> Time {
        Time(instant.saturating_duration_since(self.origin).as_micros() as u64)
    }

    /// Sends what the machine wants sent. A failed send is like a lost
    /// datagram: the machine's timers cover it.
    fn flush(&mut self) -> Result<(), ClientError> {
        self.reload_keys();
        while let Some((node, msg)) = self.machine.poll_transmit() {
            if let Some(&(_, addr)) = self.nodes.iter().find(|(id, _)| *id == node) {
                let _ = self.send(node, addr, &msg);
            }
        }
        Ok(())
    }

    fn send(&self, node: NodeId, addr: SocketAddr, msg: &Message) -> io::Result<usize> {
        let header = Header {
            cluster: self.cluster,
            sender: NodeId::CLIENT,
            config: wire::ConfigDigest::NONE,
            epoch: Epoch(0),
            sent_unix_ms: crate::driver::unix_ms_now(),
            receiver: node,
        };
        let datagram = wire::encode_datagram(header, std::slice::from_ref(msg), &self.keys);
        self.socket.send_to(&datagram, addr)
    }

    /// Takes a rotation's new keys (`auth`); keeps the old ones, and says
    /// why, when the changed files are unusable.
    fn reload_keys(&mut self) {
        match self.key_files.poll() {
            Some(Ok(keys)) => self.keys = keys,
            Some(Err(e)) => log::warn!("keeping the cluster keys in use: {e}"),
            None => {}
        }
    }

    /// Waits until `wake` for one datagram from a node; `None` when the time
    /// came first. Stray and undecodable datagrams are skipped.
    fn receive_until(&mut self, wake: Time) -> Result<Option<(NodeId, Vec<Message>)>, ClientError> {
        loop {
            let now = self.now();
            if now >= wake {
                return Ok(None);
            }
            let wait = Duration::from_micros(wake.micros_since(now)).max(Duration::from_micros(100));
            self.socket.set_read_timeout(Some(wait))?;
            let (len, from) = match self.socket.recv_from(&mut self.buf) {
                Ok(received) => received,
                Err(e) if is_timeout_or_refused(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let Some(&(node, _)) = self.nodes.iter().find(|(_, addr)| *addr == from) else {
                continue;
            };
            match wire::decode_datagram(&self.keys, self.cluster, &self.buf[..len]) {
                Ok((header, messages)) if header.sender == node && header.receiver == NodeId::CLIENT => {
                    return Ok(Some((node, messages)));
                }
                _ => continue,
            }
        }
    }
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
