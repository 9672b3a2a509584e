//! The load generator: many client sessions (`core::client::ClientMachine`)
//! driven by one event loop over one non-blocking UDP socket, so that
//! hundreds or thousands of concurrent clients cost one thread and one
//! socket instead of one of each per client. `paxosctl bench` and
//! `paxosctl torture` run on it.
//!
//! A `Workload` decides what each session does: the loop asks it for the
//! next operation of every idle session and tells it how each one ended.
//! Each loop turn: start what the workload wants started; send every
//! message the machines queued, packed into one datagram per node where
//! they fit; sleep until a datagram arrives or the earliest machine timer
//! is due; feed each datagram's messages to the session each one names, and
//! run the due timers. Every reply names its session, which is how one
//! socket serves them all.

use crate::auth::{KeyFiles, Keyring};
use crate::change::Change;
use crate::config::Config;
use crate::core::client::{ClientMachine, Ending, Routing};
use crate::limits;
use crate::types::{ClusterId, Epoch, Key, NodeId, SessionId, Time};
use crate::wire::{self, Header, Message};
use log::{debug, warn};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);

const POLL_TIMEOUT_MAX: Duration = Duration::from_millis(limits::LOADGEN_POLL_MS_MAX);

/// What the sessions do. Sessions are numbered `0..sessions`.
pub trait Workload {
    /// Session `session` is idle: its next operation, or `None` to leave it
    /// idle for the rest of this run.
    fn next(&mut self, session: usize, now: Instant) -> Option<(Key, Change)>;

    /// Session `session`'s operation ended, `latency` after it started.
    /// The answer says whether the session goes on or is replaced by a
    /// fresh one (a new session id: nothing of the old one carries over).
    fn ended(&mut self, session: usize, ending: &Ending, latency: Duration, now: Instant) -> Then;

    /// Called on every loop turn, at least every `POLL_TIMEOUT_MAX`, so
    /// periodic reports appear even while no operation ends.
    fn tick(&mut self, _now: Instant) {}
}

/// What becomes of a session after its operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    Keep,
    /// Retire the session; a fresh one takes its place.
    Replace,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub sessions: usize,
    /// Pins every session to this node (`paxosctl --node`).
    pub node: Option<NodeId>,
    /// Each operation's timeout.
    pub timeout: Duration,
}

/// What one run of the loop did, for reports on the generator itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Returns from `poll`: a busy loop shows as many more turns than
    /// datagrams.
    pub turns: u64,
    pub datagrams_sent: u64,
    pub datagrams_received: u64,
    /// Datagrams from unknown addresses, or that did not decode.
    pub datagrams_dropped: u64,
    pub send_errors: u64,
    pub recv_errors: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "turns={} datagrams_sent={} datagrams_received={} datagrams_dropped={} send_errors={} recv_errors={}",
            self.turns,
            self.datagrams_sent,
            self.datagrams_received,
            self.datagrams_dropped,
            self.send_errors,
            self.recv_errors
        )
    }
}

#[derive(Debug)]
pub enum LoadError {
    UnknownNode(NodeId),
    Io { what: &'static str, error: io::Error },
    Secret(crate::auth::SecretError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::UnknownNode(id) => write!(f, "node {id} is not in the config"),
            LoadError::Io { what, error } => write!(f, "{what}: {error}"),
            LoadError::Secret(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for LoadError {}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> LoadError {
    move |error| LoadError::Io { what, error }
}

/// The session a message from a node is for; `None` for messages a client
/// never receives.
fn session_of(msg: &Message) -> Option<SessionId> {
    match msg {
        Message::Reply { id, .. } => Some(id.session),
        Message::StatusReply { session, .. } => Some(*session),
        _ => None,
    }
}

/// The sessions' next deadlines: a min-heap with lazy deletion. `armed`
/// holds each session's current deadline; a heap entry that no longer
/// matches it is stale and skipped when it comes up.
#[derive(Debug)]
struct Timers {
    heap: BinaryHeap<Reverse<(Time, usize)>>,
    armed: Vec<Option<Time>>,
}

impl Timers {
    fn new(sessions: usize) -> Timers {
        Timers { heap: BinaryHeap::with_capacity(sessions * 2), armed: vec![None; sessions] }
    }

    /// Sets session `slot`'s deadline (`None`: it has none).
    fn arm(&mut self, slot: usize, at: Option<Time>) {
        if self.armed[slot] == at {
            return;
        }
        self.armed[slot] = at;
        let Some(at) = at else { return };
        self.heap.push(Reverse((at, slot)));
        if self.heap.len() > self.armed.len() * limits::LOADGEN_TIMERS_PER_SESSION_MAX + 64 {
            self.sweep();
        }
    }

    /// Rebuilds the heap from the live deadlines only.
    fn sweep(&mut self) {
        let live = self.armed.iter().enumerate().filter_map(|(slot, at)| at.map(|at| Reverse((at, slot))));
        self.heap = live.collect();
    }

    /// The earliest live deadline.
    fn next(&mut self) -> Option<Time> {
        while let Some(&Reverse((at, slot))) = self.heap.peek() {
            if self.armed[slot] == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Moves the sessions whose deadline is at or before `now` to `due`,
    /// earliest first, and disarms them.
    fn pop_due(&mut self, now: Time, due: &mut Vec<usize>) {
        while self.next().is_some_and(|at| at <= now) {
            if let Some(Reverse((_, slot))) = self.heap.pop() {
                self.armed[slot] = None;
                due.push(slot);
            }
        }
    }
}

/// One session and when its operation in flight started.
#[derive(Debug)]
struct Slot {
    machine: ClientMachine,
    started: Option<Instant>,
}

/// The event loop and its sessions. Sessions and their machines outlive a
/// `run`, so one generator can run a warm-up and then the measured part.
pub struct LoadGen {
    cluster: ClusterId,
    keys: Keyring,
    key_files: KeyFiles,
    nodes: Vec<(NodeId, SocketAddr)>,
    pinned: Option<NodeId>,
    timeout_ms: u64,
    socket: UdpSocket,
    poll: Poll,
    origin: Instant,
    slots: Vec<Slot>,
    routes: HashMap<SessionId, usize>,
    timers: Timers,
    /// Sessions whose workload is to be asked for their next operation.
    idle: VecDeque<usize>,
    running: usize,
    /// Encoded messages waiting to be sent, per node (index in `nodes`).
    outbox: Vec<Vec<Vec<u8>>>,
    /// A read round stopped early: read again on the next turn.
    read_pending: bool,
    buf: Vec<u8>,
    stats: Stats,
}

impl LoadGen {
    /// Binds the socket and creates `options.sessions` sessions of the
    /// cluster in `config`.
    pub fn new(config: &Config, options: &Options) -> Result<LoadGen, LoadError> {
        if let Some(id) = options.node {
            config.node(id).ok_or(LoadError::UnknownNode(id))?;
        }
        let nodes: Vec<(NodeId, SocketAddr)> = config.nodes.iter().map(|n| (n.id, n.address)).collect();
        let (keys, key_files) = KeyFiles::open(config).map_err(LoadError::Secret)?;
        let mut socket = bind(nodes.first().is_some_and(|(_, a)| a.is_ipv6()))?;
        let poll = Poll::new().map_err(io_err("cannot create poll"))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(io_err("cannot register socket"))?;
        let sessions = options.sessions.max(1);
        let timeout_ms =
            options.timeout.as_millis().clamp(1, u128::from(limits::REQUEST_TIMEOUT_MS_MAX)) as u64;
        let mut load = LoadGen {
            cluster: config.cluster_id,
            keys,
            key_files,
            outbox: vec![Vec::new(); nodes.len()],
            nodes,
            pinned: options.node,
            timeout_ms,
            socket,
            poll,
            origin: Instant::now(),
            slots: Vec::with_capacity(sessions),
            routes: HashMap::with_capacity(sessions * 2),
            timers: Timers::new(sessions),
            idle: VecDeque::with_capacity(sessions),
            running: 0,
            read_pending: false,
            buf: vec![0u8; 64 * 1024],
            stats: Stats::default(),
        };
        for slot in 0..sessions {
            let machine = load.new_machine();
            load.routes.insert(machine.session(), slot);
            load.slots.push(Slot { machine, started: None });
        }
        Ok(load)
    }

    pub fn sessions(&self) -> usize {
        self.slots.len()
    }

    /// Runs `workload` until every session is idle and the workload has
    /// nothing more for any of them. Operations always end (each has a
    /// timeout), so a run ends once the workload stops starting new ones.
    pub fn run<W: Workload + ?Sized>(&mut self, workload: &mut W) -> Result<Stats, LoadError> {
        self.stats = Stats::default();
        self.idle = (0..self.slots.len()).filter(|slot| self.slots[*slot].started.is_none()).collect();
        let mut events = Events::with_capacity(64);
        let mut due = Vec::new();
        loop {
            self.start_idle(workload);
            self.flush();
            if self.running == 0 && self.idle.is_empty() {
                return Ok(self.stats);
            }
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LoadError::Io { what: "poll", error: e });
            }
            self.stats.turns += 1;
            if !events.is_empty() || std::mem::take(&mut self.read_pending) {
                self.read_datagrams(workload);
            }
            self.fire_timers(workload, &mut due);
            workload.tick(Instant::now());
        }
    }

    fn new_machine(&self) -> ClientMachine {
        let members = self.nodes.iter().map(|(id, _)| *id).collect();
        ClientMachine::new(members, self.pinned, crate::seed::session_id(), Routing::Home)
    }

    fn time_of(&self, instant: Instant) -> Time {
        Time(instant.saturating_duration_since(self.origin).as_micros() as u64)
    }

    /// Until the earliest timer, at most `POLL_TIMEOUT_MAX`; zero when work
    /// is waiting already.
    fn poll_timeout(&mut self) -> Duration {
        if !self.idle.is_empty() || self.read_pending {
            return Duration::ZERO;
        }
        let Some(at) = self.timers.next() else { return POLL_TIMEOUT_MAX };
        let now = self.time_of(Instant::now());
        Duration::from_micros(at.micros_since(now)).min(POLL_TIMEOUT_MAX)
    }

    /// Asks the workload for the next operation of each session idle at the
    /// start of the turn. A session whose operation ends at once (refused
    /// before sending) is asked again on the next turn, not in this one, so
    /// a workload of such operations cannot keep the loop from polling.
    fn start_idle<W: Workload + ?Sized>(&mut self, workload: &mut W) {
        let now = Instant::now();
        let time = self.time_of(now);
        for _ in 0..self.idle.len() {
            let Some(slot) = self.idle.pop_front() else { break };
            let Some((key, change)) = workload.next(slot, now) else { continue };
            // Only idle sessions are in `idle`, so `start` cannot be busy.
            if self.slots[slot].machine.start(time, key, change, self.timeout_ms).is_err() {
                continue;
            }
            self.slots[slot].started = Some(now);
            self.running += 1;
            self.service(slot, workload, now);
        }
    }

    /// After any input to session `slot`: queues what it wants sent, hands
    /// its ending (if any) to the workload, and re-arms its timer.
    fn service<W: Workload + ?Sized>(&mut self, slot: usize, workload: &mut W, now: Instant) {
        let machine = &mut self.slots[slot].machine;
        while let Some((node, msg)) = machine.poll_transmit() {
            match self.nodes.iter().position(|(id, _)| *id == node) {
                Some(index) => self.outbox[index].push(wire::encode_message(&msg)),
                None => debug!("session {} wants to send to unknown node {node}", machine.session()),
            }
        }
        if let Some(ending) = machine.poll_ending() {
            let latency =
                self.slots[slot].started.take().map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            self.running -= 1;
            if workload.ended(slot, &ending, latency, now) == Then::Replace {
                self.replace(slot);
            }
            self.idle.push_back(slot);
        }
        self.timers.arm(slot, self.slots[slot].machine.poll_timeout());
    }

    /// Gives slot `slot` a fresh session; late replies to the old one find
    /// no route and are dropped.
    fn replace(&mut self, slot: usize) {
        let machine = self.new_machine();
        self.routes.remove(&self.slots[slot].machine.session());
        self.routes.insert(machine.session(), slot);
        self.slots[slot].machine = machine;
    }

    fn fire_timers<W: Workload + ?Sized>(&mut self, workload: &mut W, due: &mut Vec<usize>) {
        let now = Instant::now();
        let time = self.time_of(now);
        due.clear();
        self.timers.pop_due(time, due);
        for &slot in due.iter() {
            self.slots[slot].machine.handle_timeout(time);
            self.service(slot, workload, now);
        }
    }

    /// Reads every ready datagram, until WouldBlock. A bad datagram is
    /// dropped and never ends the loop.
    fn read_datagrams<W: Workload + ?Sized>(&mut self, workload: &mut W) {
        let mut errors = 0;
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    // Lend the buffer out rather than copy each datagram.
                    let buf = std::mem::take(&mut self.buf);
                    self.handle_datagram(&buf[..len], from, workload);
                    self.buf = buf;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends (a node that is down)
                // surface here; the machines' timers already cover them.
                Err(e) => {
                    self.stats.recv_errors += 1;
                    debug!("recv_from: {e}");
                    errors += 1;
                    if errors >= limits::LOADGEN_RECV_ERRORS_PER_ROUND_MAX {
                        self.read_pending = true;
                        return;
                    }
                }
            }
        }
    }

    fn handle_datagram<W: Workload + ?Sized>(&mut self, bytes: &[u8], from: SocketAddr, workload: &mut W) {
        self.stats.datagrams_received += 1;
        let Some(&(node, _)) = self.nodes.iter().find(|(_, addr)| *addr == from) else {
            self.stats.datagrams_dropped += 1;
            return debug!("dropped datagram from {from}: not a node of the cluster");
        };
        let messages = match wire::decode_datagram(&self.keys, self.cluster, bytes) {
            Ok((header, messages)) if header.sender == node && header.receiver == NodeId::CLIENT => messages,
            Ok((header, _)) => {
                self.stats.datagrams_dropped += 1;
                return debug!("dropped datagram from {from}: claims to be node {}", header.sender);
            }
            Err(e) => {
                self.stats.datagrams_dropped += 1;
                return debug!("dropped datagram from {from}: {e}");
            }
        };
        let now = Instant::now();
        let time = self.time_of(now);
        for msg in messages {
            // Replies to a retired session, or to none of ours, are dropped.
            let Some(slot) = session_of(&msg).and_then(|s| self.routes.get(&s).copied()) else { continue };
            self.slots[slot].machine.handle_message(time, node, msg);
            self.service(slot, workload, now);
        }
    }

    /// Sends the queued messages, as few datagrams per node as they fit in.
    /// A failed send is like a lost datagram: the machines resend.
    fn flush(&mut self) {
        match self.key_files.poll() {
            Some(Ok(keys)) => self.keys = keys,
            Some(Err(e)) => log::warn!("keeping the cluster keys in use: {e}"),
            None => {}
        }
        let header = Header {
            cluster: self.cluster,
            sender: NodeId::CLIENT,
            config: wire::ConfigDigest::NONE,
            epoch: Epoch(0),
            sent_unix_ms: crate::driver::unix_ms_now(),
            receiver: NodeId::CLIENT,
        };
        for (index, encoded) in self.outbox.iter_mut().enumerate() {
            if encoded.is_empty() {
                continue;
            }
            let (node, addr) = self.nodes[index];
            let header = Header { receiver: node, ..header };
            for datagram in wire::pack_datagrams(header, encoded, &self.keys) {
                match send_to(&self.socket, &datagram, addr) {
                    Ok(_) => self.stats.datagrams_sent += 1,
                    Err(e) => {
                        self.stats.send_errors += 1;
                        debug!("send_to {addr}: {e}");
                    }
                }
            }
            encoded.clear();
        }
    }
}

fn send_to(socket: &UdpSocket, datagram: &[u8], addr: SocketAddr) -> io::Result<usize> {
    let mut result = socket.send_to(datagram, addr);
    for _ in 1..limits::LOADGEN_SEND_ATTEMPTS_MAX {
        match &result {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => result = socket.send_to(datagram, addr),
            _ => break,
        }
    }
    result
}

/// A non-blocking UDP socket on an ephemeral port of the nodes' address
/// family, with the same large buffers as a node's.
fn bind(ipv6: bool) -> Result<UdpSocket, LoadError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr: SocketAddr = match ipv6 {
        true => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        false => SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)),
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err("cannot create UDP socket"))?;
    // Many sessions answered in one burst must not overflow the receive
    // buffer; the kernel may grant less, which only costs retransmissions.
    if let Err(e) = socket.set_recv_buffer_size(limits::SOCKET_BUFFER_BYTES) {
        warn!("cannot set receive buffer size: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(limits::SOCKET_BUFFER_BYTES) {
        warn!("cannot set send buffer size: {e}");
    }
    socket.set_nonblocking(true).map_err(io_err("cannot make the UDP socket non-blocking"))?;
    socket.bind(&addr.into()).map_err(io_err("cannot bind UDP socket"))?;
    Ok(UdpSocket::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::types::{Incarnation, RequestId, Version};
    use crate::wire::{NodeStatus, Outcome};

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn due(timers: &mut Timers, now: Time) -> Vec<usize> {
        let mut out = Vec::new();
        timers.pop_due(now, &mut out);
        out
    }

    #[test]
    fn timers_come_due_earliest_first_and_only_once() {
        let mut timers = Timers::new(4);
        timers.arm(0, Some(t(30)));
        timers.arm(1, Some(t(10)));
        timers.arm(2, Some(t(20)));
        timers.arm(3, None);
        assert_eq!(timers.next(), Some(t(10)));
        assert_eq!(due(&mut timers, t(20)), vec![1, 2]);
        assert_eq!(due(&mut timers, t(20)), Vec::<usize>::new());
        assert_eq!(due(&mut timers, t(99)), vec![0]);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_moved_or_cleared_deadline_leaves_no_timer_behind() {
        let mut timers = Timers::new(3);
        timers.arm(0, Some(t(10)));
        timers.arm(0, Some(t(50)));
        timers.arm(1, Some(t(5)));
        timers.arm(1, None);
        timers.arm(2, Some(t(40)));
        assert_eq!(timers.next(), Some(t(40)));
        assert_eq!(due(&mut timers, t(45)), vec![2]);
        assert_eq!(due(&mut timers, t(100)), vec![0]);
    }

    #[test]
    fn stale_timers_are_swept_so_the_heap_stays_proportional_to_the_sessions() {
        let mut timers = Timers::new(2);
        for ms in 0..10_000 {
            timers.arm(0, Some(t(ms)));
        }
        timers.arm(1, Some(t(7)));
        assert!(timers.heap.len() <= 2 * limits::LOADGEN_TIMERS_PER_SESSION_MAX + 64 + 1);
        assert_eq!(due(&mut timers, t(20_000)), vec![1, 0]);
    }

    #[test]
    fn replies_and_status_replies_are_routed_by_the_session_they_name() {
        let session = SessionId(7);
        let id = RequestId { session, seq: 3 };
        let reply = Message::Reply {
            id,
            incarnation: Incarnation(1),
            node_time: Time(0),
            outcome: Outcome::Indeterminate,
        };
        assert_eq!(session_of(&reply), Some(session));
        let status = status_reply(session, 9);
        assert_eq!(session_of(&status), Some(session));
        assert_eq!(session_of(&Message::StatusRequest { session, probe: 1 }), None);
    }

    fn status_reply(session: SessionId, probe: u64) -> Message {
        let status = NodeStatus { node: NodeId(1), incarnation: Incarnation(5), ..NodeStatus::default() };
        Message::StatusReply { session, probe, node_time: Time(1_000), status }
    }

    /// A node that answers every probe and request at once (each request
    /// with version = its sequence number), and counts datagrams.
    fn fake_node(
        socket: std::net::UdpSocket,
        cluster: ClusterId,
        stop: std::sync::mpsc::Receiver<()>,
    ) -> u64 {
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let mut buf = vec![0u8; 64 * 1024];
        let mut datagrams = 0;
        while stop.try_recv().is_err() {
            let Ok((len, from)) = socket.recv_from(&mut buf) else { continue };
            datagrams += 1;
            let Ok((_, messages)) = wire::decode_datagram(&Keyring::none(), cluster, &buf[..len]) else {
                continue;
            };
            let answers: Vec<Message> = messages
                .into_iter()
                .filter_map(|msg| match msg {
                    Message::StatusRequest { session, probe } => Some(status_reply(session, probe)),
                    Message::Request(r) => Some(Message::Reply {
                        id: r.id,
                        incarnation: Incarnation(5),
                        node_time: Time(2_000),
                        outcome: Outcome::Done {
                            version: Version(r.id.seq),
                            precondition_held: true,
                            value: None,
                        },
                    }),
                    _ => None,
                })
                .collect();
            let header = Header {
                cluster,
                sender: NodeId(1),
                config: wire::ConfigDigest(7),
                epoch: Epoch(0),
                sent_unix_ms: 0,
                receiver: NodeId::CLIENT,
            };
            let _ = socket.send_to(&wire::encode_datagram(header, &answers, &Keyring::none()), from);
        }
        datagrams
    }

    /// Runs `ops` operations on each of its sessions and records endings.
    struct Counted {
        ops: usize,
        started: Vec<usize>,
        endings: Vec<(usize, Ending)>,
        ticks: u64,
    }

    impl Workload for Counted {
        fn next(&mut self, session: usize, _now: Instant) -> Option<(Key, Change)> {
            (self.started[session] < self.ops).then(|| {
                self.started[session] += 1;
                (Key::from(format!("s{session}").as_str()), Change::Read)
            })
        }

        fn ended(&mut self, session: usize, ending: &Ending, _latency: Duration, _now: Instant) -> Then {
            self.endings.push((session, ending.clone()));
            if session == 0 { Then::Replace } else { Then::Keep }
        }

        fn tick(&mut self, _now: Instant) {
            self.ticks += 1;
        }
    }

    #[test]
    fn many_sessions_over_one_socket_each_get_their_own_answers() {
        let node = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = node.local_addr().expect("address");
        let cluster = ClusterId(77);
        let config = Config {
            path: "test.toml".into(),
            cluster_id: cluster,
            secret_file: None,
            previous_secret_file: None,
            client_timeout_ms: 1000,
            nodes: vec![NodeConfig { id: NodeId(1), address, data_dir: "unused".into(), joins: false }],
        };
        let (stop, stopped) = std::sync::mpsc::channel();
        let fake = std::thread::spawn(move || fake_node(node, cluster, stopped));
        let options = Options { sessions: 50, node: None, timeout: Duration::from_secs(2) };
        let mut load = LoadGen::new(&config, &options).expect("bind");
        let mut workload = Counted { ops: 3, started: vec![0; 50], endings: Vec::new(), ticks: 0 };
        let first_session = load.slots[0].machine.session();
        let stats = load.run(&mut workload).expect("run");
        let _ = stop.send(());
        let node_datagrams = fake.join().expect("fake node");
        assert_eq!(workload.endings.len(), 150);
        for session in 0..50 {
            let versions: Vec<u64> = workload
                .endings
                .iter()
                .filter(|(s, _)| *s == session)
                .map(|(_, e)| match e {
                    Ending::Done(answer) => answer.version.0,
                    other => panic!("session {session} ended {other:?}"),
                })
                .collect();
            // A replaced session starts counting its requests anew.
            let expected = if session == 0 { vec![1, 1, 1] } else { vec![1, 2, 3] };
            assert_eq!(versions, expected, "session {session}");
        }
        assert_ne!(load.slots[0].machine.session(), first_session);
        assert_eq!(load.routes.len(), 50, "the retired sessions' routes are gone");
        // Probes and requests of one turn share datagrams.
        assert!(stats.datagrams_sent < 150 + 50, "{stats}");
        assert!(node_datagrams >= stats.datagrams_sent);
        assert!(workload.ticks >= 1 && workload.ticks == stats.turns);
    }
}
