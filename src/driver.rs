//! The mio driver: the only code that touches the socket, the clock and the
//! acceptor log. One thread, one `Poll`, one UDP socket.
//!
//! Each loop turn: wait for datagrams or the core's next deadline (not at
//! all while datagrams wait); read the socket dry into the intake
//! (`core::intake`, at most `INTAKE_READS_PER_TURN_MAX`); decode and
//! validate the intake's datagrams, one sender's in turn, and feed them to
//! the core, up to `TURN_MESSAGES_MAX` messages; run due timers; then
//! commit the turn: append every record the turn produced, sync once
//! (group commit), and only then send what the core released. However fast
//! datagrams come, every turn ends, and a sender's datagram waits behind at
//! most one of each other sender's.

use crate::auth::{KeyFiles, Keyring};
use crate::config::{Config, NodeConfig};
use crate::core::intake::Intake;
use crate::core::{ClientLimits, Envelope, Node, NodeSetup};
use crate::limits;
use crate::members::ConfigTag;
use crate::storage::identity::{self, Identity, IdentityError};
use crate::storage::log::Recovered;
use crate::storage::log::{LogError, LogFile};
use crate::storage::{Record, Storage};
use crate::types::{NodeId, Time};
use crate::wire::{self, Header};
use log::{debug, info, warn};
use mio::net::{UdpSocket, UnixStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);

/// The longest the loop sleeps, so a stuck deadline can never hang it.
const POLL_TIMEOUT_MAX: Duration = Duration::from_millis(500);

/// Why the daemon could not start or had to stop.
#[derive(Debug)]
pub enum DriverError {
    UnknownNode(NodeId),
    NoParentDir(PathBuf),
    /// The data dir has a marker but no log: the node's state is lost.
    LostLog {
        id: NodeId,
        path: PathBuf,
    },
    /// The log is damaged, or not a log: the node's state cannot be trusted.
    Damaged {
        id: NodeId,
        error: LogError,
    },
    /// No marker, and neither `--bootstrap` nor `--rejoin`.
    Unmarked {
        id: NodeId,
        error: IdentityError,
    },
    /// Another process holds the data dir's lock.
    Locked {
        id: NodeId,
        path: PathBuf,
    },
    /// `--rejoin` in a cluster with no other node to catch up from.
    RejoinAlone,
    /// `--join` for a founding member, or `--bootstrap` for a node that
    /// joins (`joins = true` in the config).
    JoinMismatch {
        id: NodeId,
        joins: bool,
    },
    Identity(IdentityError),
    Log(LogError),
    Secret(crate::auth::SecretError),
    Io {
        what: String,
        error: io::Error,
    },
}

/// How to bring back node `id` whose data was lost or damaged.
fn rejoin_hint(id: NodeId) -> String {
    format!(
        "To bring it back, start it with `paxosd --id {id} --rejoin`: the damaged files are kept aside, \
         and the node catches up from a majority of the other nodes before it votes (README, \
         \"Replacing a node's data\")"
    )
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::UnknownNode(id) => write!(f, "node {id} is not in the config"),
            DriverError::Secret(e) => write!(f, "{e}"),
            DriverError::NoParentDir(dir) => write!(
                f,
                "the parent of data dir {} does not exist; create it or fix data_dir",
                dir.display()
            ),
            DriverError::LostLog { id, path } => write!(
                f,
                "{} was missing or empty although the data dir has an identity marker: this \
                 node's acceptor state is lost, and it refuses to vote on a blank memory. {}",
                path.display(),
                rejoin_hint(*id)
            ),
            DriverError::Damaged { id, error } => write!(f, "{error}. {}", rejoin_hint(*id)),
            DriverError::Unmarked { id, error } => write!(f, "{error}: `paxosd --id {id} --rejoin`"),
            DriverError::Locked { id, path } => write!(
                f,
                "another paxosd is running as node {id}: it holds the lock on {}; this process \
                 changed nothing",
                path.display()
            ),
            DriverError::JoinMismatch { id, joins: true } => write!(
                f,
                "node {id} says joins = true in the config: start it with --join (it votes once \
                 `paxosctl member add {id} ADDR` adds it), not --bootstrap"
            ),
            DriverError::JoinMismatch { id, joins: false } => write!(
                f,
                "node {id} is a founding member (no joins = true in the config): --join is for \
                 nodes added to a running cluster"
            ),
            DriverError::RejoinAlone => {
                write!(f, "--rejoin needs other nodes to catch up from, and the config names only this one")
            }
            DriverError::Identity(e) => write!(f, "{e}"),
            DriverError::Log(e) => write!(f, "{e}"),
            DriverError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for DriverError {}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DriverError {
    let what = what.into();
    move |error| DriverError::Io { what, error }
}

/// Options of one daemon run.
pub struct Options {
    pub id: NodeId,
    /// Initialise an empty data dir as a founding member of a new cluster.
    pub bootstrap: bool,
    /// Start on a wiped or damaged data dir (damaged files are kept aside),
    /// and catch up from the peers before voting (`core::rejoin`).
    pub rejoin: bool,
    /// Initialise an empty data dir for a node that joins a running cluster
    /// (`joins = true`): it votes once a membership change adds it.
    pub join: bool,
}

pub struct Driver {
    config: Config,
    me: NodeConfig,
    node: Node<SocketAddr>,
    log: LogFile,
    socket: UdpSocket,
    signals: UnixStream,
    poll: Poll,
    started: Instant,
    buf: Vec<u8>,
    /// Datagrams read and not handled yet.
    intake: Intake<SocketAddr>,
    /// The socket may hold more datagrams: the last read stopped at its
    /// budget, not at `WouldBlock` (the poll is edge-triggered, so no new
    /// event would say so).
    socket_backlog: bool,
    /// The intake's drops the log has told of, and when it last did.
    drops_reported: (u64, Instant),
    stopping: bool,
    /// The cluster secret's keys, and their files, looked at again now and
    /// then for a rotation.
    keys: Keyring,
    key_files: KeyFiles,
    /// Datagrams dropped for a missing or wrong MAC ...
    dropped_unauthenticated: u64,
    /// ... and for anything else.
    dropped: u64,
    /// Datagrams sent outside the replay window (`wire::is_fresh`).
    stale: u64,
    /// Peers already warned about for sending another member list.
    mismatched: HashSet<NodeId>,
    /// Held for the life of the process: no second daemon for this node.
    _lock: File,
    /// See `crash_if_told`.
    crash_while_driving: Option<String>,
    /// Added to the wall clock (`PAXOSD_WALL_CLOCK_OFFSET_MS`): the tests
    /// use it to play a node that receives a recorded datagram long after
    /// it was sent, which waiting for would take the whole window.
    wall_offset_ms: i64,
}

impl Driver {
    /// Checks the data dir, recovers the log and binds the socket.
    pub fn open(config: Config, options: &Options) -> Result<Driver, DriverError> {
        let me = config.node(options.id).cloned().ok_or(DriverError::UnknownNode(options.id))?;
        if options.rejoin && config.nodes.len() < 3 {
            return Err(DriverError::RejoinAlone);
        }
        if (options.join && !me.joins) || (options.bootstrap && me.joins) {
            return Err(DriverError::JoinMismatch { id: me.id, joins: me.joins });
        }
        let (keys, key_files) = KeyFiles::open(&config).map_err(DriverError::Secret)?;
        warn_if_open(&me, &keys);
        let lock = lock_data_dir(&me, options)?;
        let (log, recovered) = open_data_dir(&config, &me, options)?;
        info!(
            "node {}: recovered {} records ({} bytes) from {}",
            me.id,
            recovered.records.len(),
            log.len_bytes(),
            log.path().display()
        );
        let setup = NodeSetup {
            id: me.id,
            founding: config.founding_members(),
            records: recovered.records,
            seed: crate::seed::os_seed(),
            now: Time(0),
            limits: ClientLimits::default(),
        };
        let mut node = Node::new(setup);
        // The epoch a node catches up in is written by a majority of the
        // others: with fewer than three nodes it would wait forever.
        if node.catching_up() && config.nodes.len() < 3 {
            return Err(DriverError::RejoinAlone);
        }
        node.set_log_bytes(log.len_bytes());
        let mut socket = bind(me.address)?;
        let (signals, poll) = setup_poll(&mut socket)?;
        Ok(Driver {
            config,
            me,
            node,
            log,
            socket,
            signals,
            poll,
            started: Instant::now(),
            buf: vec![0u8; 64 * 1024],
            intake: Intake::default(),
            socket_backlog: false,
            drops_reported: (0, Instant::now()),
            stopping: false,
            keys,
            key_files,
            dropped_unauthenticated: 0,
            dropped: 0,
            stale: 0,
            mismatched: HashSet::new(),
            _lock: lock,
            crash_while_driving: std::env::var("PAXOSD_CRASH_WHILE_DRIVING").ok().filter(|s| !s.is_empty()),
            wall_offset_ms: wall_offset_ms()?,
        })
    }

    /// Switches on deliberate protocol bugs, for tests that prove the chaos
    /// run catches a broken build.
    #[cfg(feature = "planted-bugs")]
    pub fn plant_bugs(&mut self, bugs: crate::core::PlantedBugs) {
        warn!("node {}: running with planted bugs {bugs:?}", self.me.id);
        self.node.set_bugs(bugs);
    }

    /// Dies at once, as a crash would, when the membership change this node
    /// drives has reached the step named by `PAXOSD_CRASH_WHILE_DRIVING`
    /// (a prefix of what `paxosctl status` shows as `driving`, e.g.
    /// "seeding"): the tests use it to kill a driver mid-step exactly where
    /// they mean to, which a signal sent from outside cannot.
    fn crash_if_told(&self) {
        let Some(step) = &self.crash_while_driving else { return };
        if self.node.driving().is_some_and(|d| d.starts_with(step.as_str())) {
            warn!("node {}: crashing while {step} (PAXOSD_CRASH_WHILE_DRIVING)", self.me.id);
            std::process::abort();
        }
    }

    /// Runs until SIGTERM or SIGINT, or until storage fails.
    pub fn run(mut self) -> Result<(), DriverError> {
        info!("node {} serving on {} (cluster {})", self.me.id, self.me.address, self.config.cluster_id);
        let mut events = Events::with_capacity(64);
        while !self.stopping {
            let waiting = self.socket_backlog || !self.intake.is_empty();
            let timeout = if waiting { Duration::ZERO } else { self.poll_timeout() };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(DriverError::Io { what: "poll".into(), error: e });
            }
            for event in events.iter() {
                match event.token() {
                    SOCKET => self.socket_backlog = true,
                    SIGNALS => self.read_signals(),
                    _ => {}
                }
            }
            if self.socket_backlog {
                self.socket_backlog = self.read_datagrams();
            }
            self.handle_intake();
            let now = self.now();
            if self.node.next_deadline().is_some_and(|d| d <= now) {
                self.node.handle_timeout(now);
            }
            self.commit_turn()?;
            self.report_drops();
            self.crash_if_told();
        }
        info!(
            "node {}: stopping, answering {} requests in flight",
            self.me.id,
            self.node.requests_in_flight()
        );
        self.node.shutdown();
        self.commit_turn()?;
        info!("node {} stopped", self.me.id);
        Ok(())
    }

    /// The wall clock, as the datagrams' sending times count it.
    fn wall_now(&self) -> u64 {
        unix_ms_now().saturating_add_signed(self.wall_offset_ms)
    }

    fn now(&self) -> Time {
        Time(self.started.elapsed().as_micros() as u64)
    }

    fn poll_timeout(&self) -> Duration {
        let now = self.now();
        match self.node.next_deadline() {
            Some(d) => Duration::from_micros(d.micros_since(now)).min(POLL_TIMEOUT_MAX),
            None => POLL_TIMEOUT_MAX,
        }
    }

    fn read_signals(&mut self) {
        let mut scratch = [0u8; 64];
        loop {
            match self.signals.read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => self.stopping = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Reads ready datagrams into the intake until `WouldBlock`, or until
    /// `INTAKE_READS_PER_TURN_MAX` were read: then returns true (more may
    /// be waiting). Nothing is decoded here, so reading keeps up with far
    /// more than the node can handle, and the kernel's queue stays short.
    fn read_datagrams(&mut self) -> bool {
        let mut reads = 0;
        while reads < limits::INTAKE_READS_PER_TURN_MAX {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    reads += 1;
                    let peer = self.config.node_at(from).is_some();
                    self.intake.push(from, self.buf[..len].to_vec(), peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends surface here; they say
                // nothing about this node's health.
                Err(e) => {
                    reads += 1;
                    debug!("recv_from: {e}");
                }
            }
        }
        true
    }

    /// Handles the intake's datagrams, at most `TURN_MESSAGES_MAX`
    /// messages; the rest wait for the next turn. Peers' first: they carry
    /// the votes that requests taken already (here or at the peer) wait
    /// for, so work begun is finished before more is taken on. Then
    /// clients', one client's datagram in turn, up to
    /// `TURN_CLIENT_MESSAGES_MAX`, then peers' again if room is left.
    fn handle_intake(&mut self) {
        let peers_first = limits::TURN_MESSAGES_MAX - limits::TURN_CLIENT_MESSAGES_MAX;
        let mut messages = 0;
        while messages < peers_first {
            let Some((from, datagram)) = self.intake.pop_peer() else { break };
            messages += self.handle_datagram(&datagram, from);
        }
        self.node.set_behind(self.intake.has_peer_datagrams());
        let mut from_clients = 0;
        while from_clients < limits::TURN_CLIENT_MESSAGES_MAX {
            let Some((from, datagram)) = self.intake.pop_client() else { break };
            from_clients += self.handle_datagram(&datagram, from);
        }
        messages += from_clients;
        while messages < limits::TURN_MESSAGES_MAX {
            let Some((from, datagram)) = self.intake.pop_peer() else { break };
            messages += self.handle_datagram(&datagram, from);
        }
    }

    /// Decodes and handles one datagram; returns how many messages it held
    /// (one for a datagram dropped: decoding it was work too). One bad
    /// datagram is dropped and never ends the loop.
    fn handle_datagram(&mut self, bytes: &[u8], from: SocketAddr) -> usize {
        let (header, messages) = match wire::decode_datagram(&self.keys, self.config.cluster_id, bytes) {
            Ok(decoded) => decoded,
            Err(e) if e.is_unauthenticated() => {
                self.drop_unauthenticated(from, &e);
                return 1;
            }
            Err(e) => {
                self.drop_datagram(from, &e.to_string());
                return 1;
            }
        };
        // A datagram names the node it is for: one recorded on its way to
        // another node and replayed here is not this node's to act on.
        if header.receiver != self.me.id {
            self.drop_datagram(from, &format!("meant for node {}", header.receiver));
            return 1;
        }
        let now = self.now();
        let fresh = wire::is_fresh(header.sent_unix_ms, self.wall_now());
        if !fresh {
            self.warn_stale(from, header.sent_unix_ms);
        }
        let count = messages.len().max(1);
        if header.sender == NodeId::CLIENT {
            for msg in messages {
                match fresh {
                    true => self.node.handle_client(now, from, msg),
                    false => self.node.handle_client_stale(now, from, msg),
                }
            }
            return count;
        }
        // A peer must send from its configured address; anything else is
        // a stray or spoofed datagram.
        if self.config.node_at(from) != Some(header.sender) || header.sender == self.me.id {
            self.drop_datagram(from, &format!("claims to be node {}", header.sender));
            return count;
        }
        let mine = self.node.config_tag();
        let named = header.config != wire::ConfigDigest::NONE && mine.digest != wire::ConfigDigest::NONE;
        if named && header.epoch == mine.epoch && header.config != mine.digest {
            self.warn_other_config(from, header);
        }
        let tag = ConfigTag { epoch: header.epoch, digest: header.config };
        for msg in messages {
            match fresh {
                true => self.node.handle_peer_tagged(now, header.sender, tag, msg),
                false => self.node.handle_peer_stale(now, header.sender, tag, msg),
            }
        }
        count
    }

    /// A peer that names another member list for the same epoch could count
    /// quorums that do not intersect with ours: the node neither votes for
    /// it nor counts its votes (`core::membership`), and the operator is
    /// told once per peer.
    fn warn_other_config(&mut self, from: SocketAddr, header: Header) {
        if self.mismatched.insert(header.sender) {
            warn!(
                "node {} at {from} runs with another member list (config digest {}, ours {}); \
                 ignoring its votes until every node reads the same config",
                header.sender,
                header.config,
                self.node.config_tag().digest
            );
        }
    }

    /// Tells the operator, at most every `DROPS_REPORT_MS`, how many
    /// datagrams the intake dropped since it last did.
    fn report_drops(&mut self) {
        let (reported, at) = self.drops_reported;
        let dropped = self.intake.dropped();
        if dropped == reported || at.elapsed() < Duration::from_millis(limits::DROPS_REPORT_MS) {
            return;
        }
        warn!(
            "node {}: dropped {} datagrams in {} s: clients send faster than the node handles them \
             (each is served in turn; the oldest of the busiest are dropped)",
            self.me.id,
            dropped - reported,
            at.elapsed().as_secs()
        );
        self.drops_reported = (dropped, Instant::now());
    }

    fn drop_datagram(&mut self, from: SocketAddr, why: &str) {
        self.dropped += 1;
        debug!("dropped datagram from {from}: {why} ({} dropped so far)", self.dropped);
    }

    /// Dropped unread and unanswered; a count in status, and a warning
    /// now and then (not per datagram, which a flood would turn into a
    /// flood of log lines).
    fn drop_unauthenticated(&mut self, from: SocketAddr, why: &wire::DecodeError) {
        self.dropped_unauthenticated += 1;
        if self.dropped_unauthenticated.is_power_of_two() {
            warn!(
                "dropped datagram from {from}: {why} ({} dropped so far for their MAC; \
                 a peer or client with another cluster secret, or a forger)",
                self.dropped_unauthenticated
            );
        }
    }

    /// A datagram sent outside the replay window: a replay, or a sender
    /// whose clock is off. Said now and then, with how far off, since the
    /// sender itself may only see its requests go unanswered.
    fn warn_stale(&mut self, from: SocketAddr, sent_unix_ms: u64) {
        self.stale += 1;
        if self.stale.is_power_of_two() {
            let off_s = (i128::from(sent_unix_ms) - i128::from(self.wall_now())) / 1000;
            warn!(
                "node {}: datagram from {from} stamped {off_s} s from this node's clock, outside the \
                 replay window; its requests are refused ({} such datagrams so far): a replay, or \
                 clocks that disagree (check NTP)",
                self.me.id, self.stale
            );
        }
    }

    /// Takes a rotation's new keys; an unusable change keeps the old ones.
    fn reload_keys(&mut self) {
        match self.key_files.poll() {
            Some(Ok(keys)) => {
                info!("node {}: cluster secret files changed; keys reloaded", self.me.id);
                warn_if_open(&self.me, &keys);
                self.keys = keys;
            }
            Some(Err(e)) => warn!("node {}: keeping the cluster keys in use: {e}", self.me.id),
            None => {}
        }
    }

    /// Sends the proposer's messages that need no sync (see `Ready`), then
    /// appends the turn's records, syncs once, and sends what the core
    /// released. A storage failure is fatal: after a failed fsync the state
    /// of the file is unknown, and an acceptor must not vote on a guess.
    fn commit_turn(&mut self) -> Result<(), DriverError> {
        let mut ready = self.node.take_ready();
        let early = ready.take_early();
        self.send_envelopes(early);
        let envelopes = match ready.release_if_nothing_to_sync() {
            Ok(envelopes) => envelopes,
            Err(ready) => {
                for record in &ready.records {
                    self.log.append(record).map_err(DriverError::Log)?;
                }
                let synced = self.log.sync().map_err(DriverError::Log)?;
                ready.release(synced)
            }
        };
        self.send_envelopes(envelopes);
        self.maybe_compact()?;
        self.node.set_log_bytes(self.log.len_bytes());
        self.node.set_dropped(self.keys.is_enabled(), self.dropped_unauthenticated, self.dropped);
        self.reload_keys();
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), DriverError> {
        let live = self.node.acceptor().live_bytes();
        if !self.log.should_compact(live) {
            return Ok(());
        }
        let before = self.log.len_bytes();
        self.log.compact(self.node.live_records()).map_err(DriverError::Log)?;
        info!("compacted {}: {before} -> {} bytes", self.log.path().display(), self.log.len_bytes());
        Ok(())
    }

    fn send_envelopes(&mut self, envelopes: Vec<Envelope<SocketAddr>>) {
        let mut by_dest: HashMap<(SocketAddr, NodeId), Vec<Vec<u8>>> = HashMap::new();
        for envelope in envelopes {
            let (addr, to, msg) = match envelope {
                Envelope::Peer(to, msg) => match self.config.node(to) {
                    Some(peer) => (peer.address, to, msg),
                    None => continue,
                },
                Envelope::Client(addr, msg) => (addr, NodeId::CLIENT, msg),
            };
            by_dest.entry((addr, to)).or_default().push(wire::encode_message(&msg));
        }
        for ((addr, to), encoded) in by_dest {
            self.send_to(addr, to, encoded);
        }
    }

    fn send_to(&mut self, addr: SocketAddr, receiver: NodeId, encoded: Vec<Vec<u8>>) {
        let tag = self.node.config_tag();
        let header = Header {
            cluster: self.config.cluster_id,
            sender: self.me.id,
            config: tag.digest,
            epoch: tag.epoch,
            sent_unix_ms: self.wall_now(),
            receiver,
        };
        for datagram in wire::pack_datagrams(header, &encoded, &self.keys) {
            match self.socket.send_to(&datagram, addr) {
                Ok(_) => {}
                // A full buffer or an unreachable peer loses this datagram;
                // proposers resend and clients retry.
                Err(e) => debug!("send_to {addr}: {e}"),
            }
        }
    }
}

/// The wall clock, in milliseconds since the Unix epoch, for the sending
/// time in datagram headers (`wire::is_fresh`); 0 for a clock set before 1970.
pub fn unix_ms_now() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

fn wall_offset_ms() -> Result<i64, DriverError> {
    let Ok(text) = std::env::var("PAXOSD_WALL_CLOCK_OFFSET_MS") else { return Ok(0) };
    text.trim().parse().map_err(|_| DriverError::Io {
        what: format!("PAXOSD_WALL_CLOCK_OFFSET_MS={text:?} is not a whole number of milliseconds"),
        error: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

/// Without a cluster secret anyone who can reach the port can write any
/// key and vote as any peer: say so loudly, at start and on every reload.
fn warn_if_open(me: &NodeConfig, keys: &Keyring) {
    if !keys.is_enabled() {
        warn!(
            "node {}: NO CLUSTER SECRET: anyone who can send a datagram to {} can read and write every key \
             and forge votes; set secret_file in the config (see the README, \"Securing a cluster\")",
            me.id, me.address
        );
    }
}

/// Creates the data dir if a bootstrap or a rejoin may, then takes an
/// exclusive lock on `dir/lock` before any file in it is read or changed:
/// a second daemon for the same node must not run recovery (which may
/// truncate a torn tail or delete a leftover compaction file) under the
/// feet of the first.
fn lock_data_dir(me: &NodeConfig, options: &Options) -> Result<File, DriverError> {
    let dir = &me.data_dir;
    if !dir.is_dir() && (options.bootstrap || options.rejoin || options.join) {
        identity::create_dir(dir).map_err(DriverError::Identity)?;
    }
    if !dir.is_dir() {
        let parent_ok = dir.parent().is_none_or(|p| p.as_os_str().is_empty() || p.is_dir());
        if !parent_ok {
            return Err(DriverError::NoParentDir(dir.clone()));
        }
        let path = dir.join(identity::IDENTITY_FILE_NAME);
        let error = IdentityError::Missing { path, log_present: false };
        return Err(DriverError::Unmarked { id: me.id, error });
    }
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("cannot open lock file {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(DriverError::Locked { id: me.id, path }),
        Err(TryLockError::Error(error)) => {
            Err(DriverError::Io { what: format!("cannot lock {}", path.display()), error })
        }
    }
}

/// Name of the lock file in the data dir.
pub const LOCK_FILE_NAME: &str = "lock";

/// Checks the data dir's identity and recovers its log. A bootstrapping
/// node creates its log before its marker: a crash in between leaves a dir
/// without a marker, which the next bootstrap completes, never a marker
/// without a log, which would look like a lost log forever. A rejoining
/// node likewise records that it is catching up before it writes a marker.
fn open_data_dir(
    config: &Config,
    me: &NodeConfig,
    options: &Options,
) -> Result<(LogFile, Recovered), DriverError> {
    let expected = Identity { cluster_id: config.cluster_id, node_id: me.id };
    let dir = &me.data_dir;
    let had_marker = dir.join(identity::IDENTITY_FILE_NAME).exists();
    if !had_marker && (options.bootstrap || options.rejoin || options.join) {
        if options.bootstrap && dir.join(crate::storage::log::LOG_FILE_NAME).exists() {
            warn!(
                "data dir {} holds an acceptor log but no identity marker; bootstrapping keeps the \
                 log and marks the dir as {expected}",
                dir.display()
            );
        }
        let opened = if options.rejoin { start_over(me)? } else { open_log(me)? };
        identity::check_or_create(dir, expected, true).map_err(DriverError::Identity)?;
        return Ok(opened);
    }
    identity::check_or_create(dir, expected, false).map_err(|error| match error {
        IdentityError::Missing { .. } => DriverError::Unmarked { id: me.id, error },
        other => DriverError::Identity(other),
    })?;
    // A marker without a log means the log was deleted: this node may have
    // voted before and forgotten it, so it must not vote now.
    let log_path = dir.join(crate::storage::log::LOG_FILE_NAME);
    let log_missing = std::fs::metadata(&log_path).map_or(0, |m| m.len()) == 0;
    if options.rejoin && (log_missing || log_is_unreadable(&log_path)) {
        return start_over(me);
    }
    if log_missing {
        return Err(DriverError::LostLog { id: me.id, path: log_path });
    }
    let (log, recovered) = open_log(me)?;
    if options.rejoin || recovered.may_have_lost_acknowledged_state() {
        return catch_up(log, recovered, me.id);
    }
    Ok((log, recovered))
}

fn open_log(me: &NodeConfig) -> Result<(LogFile, Recovered), DriverError> {
    LogFile::open(&me.data_dir).map_err(|error| match error {
        LogError::Io { .. } | LogError::Poisoned { .. } | LogError::RecordTooLarge { .. } => {
            DriverError::Log(error)
        }
        damaged => DriverError::Damaged { id: me.id, error: damaged },
    })
}

/// Moves a damaged or partial log aside (kept for inspection) and starts an
/// empty one that catches up.
fn start_over(me: &NodeConfig) -> Result<(LogFile, Recovered), DriverError> {
    let dir = &me.data_dir;
    let log_path = dir.join(crate::storage::log::LOG_FILE_NAME);
    if log_path.exists() {
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let aside = dir.join(format!("{}.damaged-{stamp}", crate::storage::log::LOG_FILE_NAME));
        std::fs::rename(&log_path, &aside)
            .map_err(io_err(format!("cannot move {} aside", log_path.display())))?;
        identity::sync_dir(dir).map_err(DriverError::Identity)?;
        warn!("node {}: moved {} aside to {}", me.id, log_path.display(), aside.display());
    }
    LogFile::start_over(dir).map_err(DriverError::Log)
}

/// Whether recovery refuses the log (read only: nothing is changed). A log
/// that cannot be read at all is left in place: opening it reports why.
fn log_is_unreadable(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| crate::storage::log::recover(&bytes).is_err())
}

/// Records, durably, that the node catches up before it votes: a torn or
/// damaged last commit may have held promises it acknowledged, and a rejoin
/// starts from nothing.
fn catch_up(
    mut log: LogFile,
    mut recovered: Recovered,
    id: NodeId,
) -> Result<(LogFile, Recovered), DriverError> {
    if recovered.may_have_lost_acknowledged_state() {
        warn!(
            "node {id}: the last unit of the log was damaged and is dropped; it may have held \
             promises this node acknowledged, so the node catches up from its peers before it votes"
        );
    }
    // `LogFile::open` recorded it already for a damaged last unit.
    if recovered.records.last() != Some(&Record::CatchingUp) {
        log.append(&Record::CatchingUp).map_err(DriverError::Log)?;
        log.sync().map_err(DriverError::Log)?;
        recovered.records.push(Record::CatchingUp);
    }
    Ok((log, recovered))
}

fn bind(addr: SocketAddr) -> Result<UdpSocket, DriverError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let what = format!("cannot bind UDP {addr}");
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err(what.clone()))?;
    // Bigger buffers absorb the bursts of a loop turn; the kernel may grant
    // less, which only costs retransmissions.
    if let Err(e) = socket.set_recv_buffer_size(limits::SOCKET_BUFFER_BYTES) {
        warn!("cannot set receive buffer size: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(limits::SOCKET_BUFFER_BYTES) {
        warn!("cannot set send buffer size: {e}");
    }
    socket.set_nonblocking(true).map_err(io_err(what.clone()))?;
    socket.bind(&addr.into()).map_err(io_err(what))?;
    Ok(UdpSocket::from_std(socket.into()))
}

fn setup_poll(socket: &mut UdpSocket) -> Result<(UnixStream, Poll), DriverError> {
    let poll = Poll::new().map_err(io_err("cannot create poll"))?;
    let (mut read_end, write_end) = UnixStream::pair().map_err(io_err("cannot create signal pipe"))?;
    let std_write = unix_stream_to_std(write_end)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let write = std_write.try_clone().map_err(io_err("cannot clone signal pipe"))?;
        signal_hook::low_level::pipe::register(signal, write)
            .map_err(io_err("cannot register signal handler"))?;
    }
    poll.registry().register(socket, SOCKET, Interest::READABLE).map_err(io_err("cannot register socket"))?;
    poll.registry()
        .register(&mut read_end, SIGNALS, Interest::READABLE)
        .map_err(io_err("cannot register signal pipe"))?;
    Ok((read_end, poll))
}

fn unix_stream_to_std(stream: UnixStream) -> Result<std::os::unix::net::UnixStream, DriverError> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = stream.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`, so we own it.
    Ok(unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) })
}
