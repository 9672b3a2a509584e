//! A flood of valid-looking client requests at one node of a real
//! three-node cluster, sent from a raw socket several times faster than
//! the node serves them: thousands of sessions (and now and then a new
//! one), reads and watches of ever-new keys that do not exist, and writes
//! to a bounded set of keys; in its last seconds, reads and watches only.
//! Meanwhile two clients of the library write and read keys of their own
//! through that node (in the last seconds, read them only), one of them
//! pinned to it. The node's memory must level off, reads and watches must
//! leave no keys and no log behind, and both clients must keep being served
//! (README, "Limits").

mod common;

use common::*;
use paxosd::auth::Keyring;
use paxosd::change::Change;
use paxosd::client::{Client, ClientError};
use paxosd::types::{ClusterId, Epoch, Incarnation, Key, NodeId, RequestId, SessionId, Time, Value, Version};
use paxosd::wire::{self, ConfigDigest, Header, Message, Outcome, Refusal, WatchId};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the flood lasts ...
const FLOOD: Duration = Duration::from_secs(30);
/// The node the flood is sent to (the first of the cluster).
const FLOODED: NodeId = NodeId(1);
/// ... and how long at its end nobody writes: the flood and the clients
/// only read.
const READS_ONLY: Duration = Duration::from_secs(6);
/// Requests per second the flood sends: several times what a node of a
/// debug build serves on two shared cores.
const FLOOD_RATE: u64 = 40_000;
/// Requests per flood datagram.
const PER_DATAGRAM: u64 = 32;
/// Keys the flood writes, in turn: data the node keeps, and a bounded
/// amount of it. Every other flood request is for a key of its own.
const FLOOD_WRITE_KEYS: u64 = 1_000;
/// Sessions the flood's requests take turns in ...
const FLOOD_SESSIONS: u64 = 8_192;
/// ... but one request in this many opens a session of its own. (Each new
/// session costs the node an entry until two generations of them came,
/// `SESSIONS_PER_GENERATION` each: a bound this test could not reach, so
/// new sessions are few enough not to hide another table's growth.)
const FLOOD_NEW_SESSION_EVERY: u64 = 32;
/// How often the node's memory and log are measured.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Samples before this are the warm-up, while the node's tables fill.
const WARM_UP: Duration = Duration::from_secs(6);
/// The most the flooded node's memory may grow after the warm-up: the
/// lowest sample of the last third of the measured ones may exceed the
/// highest of the first third by this much (allocator noise, a few new
/// sessions, a buffer that doubled once). Memory that stays raises the
/// low samples; a passing peak (a large turn) does not.
const RSS_GROWTH_MAX_KB: u64 = 6 * 1024;
/// The flooded node's memory never exceeds this (a debug build).
const RSS_MAX_KB: u64 = 100 * 1024;
/// The flooded node's log never exceeds this: the flood's and the
/// clients' writes, compacted from 4 MiB on (`COMPACT_BYTES_MIN`).
const LOG_BYTES_MAX: u64 = 8 << 20;
/// The most the log may grow while everybody only reads: the promises of
/// the few reads whose query went unanswered twice.
const LOG_GROWTH_READS_ONLY_MAX: u64 = 64 << 10;
/// Keys the node may hold after the flood beyond those written: none
/// should come from reads or watches.
const KEYS_SLACK: u64 = 16;
/// The clients' 90th percentile latency may not exceed this (their timeout
/// is 5 s; a debug build, on two cores shared with the flood and three
/// nodes).
const CLIENT_P90_MAX: Duration = Duration::from_secs(2);

/// What the flood's replies said, counted by the thread that reads them.
#[derive(Default)]
struct Tally {
    /// The node's incarnation, as its last reply named it: an unknown
    /// session is run only when its request names the current one.
    incarnation: AtomicU64,
    sent: AtomicU64,
    done: AtomicU64,
    overloaded: AtomicU64,
    stale_incarnation: AtomicU64,
    unavailable: AtomicU64,
    other: AtomicU64,
    watch_answers: AtomicU64,
    stop: AtomicBool,
}

impl Tally {
    fn describe(&self) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "flood: {} requests sent; answers: {} done, {} overloaded, {} stale incarnation, \
             {} unavailable, {} other, {} watch answers",
            load(&self.sent),
            load(&self.done),
            load(&self.overloaded),
            load(&self.stale_incarnation),
            load(&self.unavailable),
            load(&self.other),
            load(&self.watch_answers),
        )
    }
}

/// The header of a client's datagram to the flooded node, sent now.
fn flood_header(cluster: ClusterId) -> Header {
    Header {
        cluster,
        sender: NodeId::CLIENT,
        config: ConfigDigest::NONE,
        epoch: Epoch(0),
        sent_unix_ms: paxosd::driver::unix_ms_now(),
        receiver: FLOODED,
    }
}

/// Flood request `i`: the next request of one of the flood's sessions, or
/// the first of a new one, and mostly on a key of its own; a write to one
/// of `FLOOD_WRITE_KEYS` now and then if `writes`.
fn flood_message(i: u64, sessions: u128, incarnation: Incarnation, writes: bool) -> Message {
    let id = if i.is_multiple_of(FLOOD_NEW_SESSION_EVERY) {
        RequestId { session: SessionId(sessions ^ (u128::from(i) << 32)), seq: 1 }
    } else {
        let session = SessionId(sessions ^ u128::from(i % FLOOD_SESSIONS));
        RequestId { session, seq: i / FLOOD_SESSIONS + 1 }
    };
    let (key, change) = match i % 20 {
        0 if writes => {
            let key = format!("flood/w/{}", (i / 20) % FLOOD_WRITE_KEYS);
            (key, Change::Put(Value(vec![b'v'; 64])))
        }
        1 | 11 => {
            // Watches of keys nobody writes: half wait for the key to come
            // into being (parked for a second), half ask what it holds.
            let after = (i % 20 == 1).then_some(Version(0));
            let key = Key(format!("flood/watch/{i}").into_bytes());
            return Message::WatchRequest { id: WatchId(i), key, after, every_version: true };
        }
        _ => (format!("flood/r/{i}"), Change::Read),
    };
    Message::Request(wire::Request {
        id,
        key: Key(key.into_bytes()),
        change,
        timeout_ms: 1_000,
        incarnation,
        sent_at: Time(0),
        resent: false,
        floor: Version(0),
    })
}

/// Sends the flood at `FLOOD_RATE` for `FLOOD` (and no more requests than
/// that makes), in datagrams of `PER_DATAGRAM` requests, with no writes
/// from `reads_only_at` on.
fn send_flood(
    socket: &UdpSocket,
    target: SocketAddr,
    cluster: ClusterId,
    tally: &Tally,
    reads_only_at: Instant,
) {
    let sessions = (u128::from(std::process::id()) << 64) | 0x5eed;
    let total = FLOOD_RATE * FLOOD.as_secs();
    let started = Instant::now();
    let mut i = 0;
    while i < total && started.elapsed() < FLOOD {
        let due = (u128::from(FLOOD_RATE) * started.elapsed().as_micros() / 1_000_000) as u64;
        while i < due.min(total) && started.elapsed() < FLOOD {
            let incarnation = Incarnation(tally.incarnation.load(Ordering::Relaxed));
            let writes = Instant::now() < reads_only_at;
            let messages: Vec<Message> =
                (i..i + PER_DATAGRAM).map(|n| flood_message(n, sessions, incarnation, writes)).collect();
            // A full buffer drops the datagram, as the network would.
            let datagram = wire::encode_datagram(flood_header(cluster), &messages, &Keyring::none());
            let _ = socket.send_to(&datagram, target);
            i += PER_DATAGRAM;
            tally.sent.fetch_add(PER_DATAGRAM, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Reads the flood's replies until told to stop: counts them, and keeps
/// the incarnation they name.
fn read_replies(socket: &UdpSocket, cluster: ClusterId, tally: &Tally) {
    socket.set_read_timeout(Some(Duration::from_millis(100))).expect("read timeout");
    let mut buf = vec![0u8; 64 * 1024];
    while !tally.stop.load(Ordering::Relaxed) {
        let Ok((len, _)) = socket.recv_from(&mut buf) else { continue };
        let Ok((_, messages)) = wire::decode_datagram(&Keyring::none(), cluster, &buf[..len]) else {
            continue;
        };
        for msg in messages {
            count_reply(msg, tally);
        }
    }
}

fn count_reply(msg: Message, tally: &Tally) {
    let counter = match msg {
        Message::StatusReply { status, .. } => {
            tally.incarnation.store(status.incarnation.0, Ordering::Relaxed);
            return;
        }
        Message::WatchReply { .. } => &tally.watch_answers,
        Message::Reply { incarnation, outcome, .. } => {
            tally.incarnation.store(incarnation.0, Ordering::Relaxed);
            match outcome {
                Outcome::Done { .. } => &tally.done,
                Outcome::Refused(Refusal::Overloaded) => &tally.overloaded,
                Outcome::Refused(Refusal::StaleIncarnation) => &tally.stale_incarnation,
                Outcome::Unavailable { .. } => &tally.unavailable,
                _ => &tally.other,
            }
        }
        _ => &tally.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Asks the node for its status until a reply names its incarnation
/// (bounded): the flood's sessions must name it to be run.
fn learn_incarnation(socket: &UdpSocket, target: SocketAddr, cluster: ClusterId, tally: &Tally) {
    let ask = Message::StatusRequest { session: SessionId(1), probe: 1 };
    let datagram = wire::encode_datagram(flood_header(cluster), &[ask], &Keyring::none());
    let deadline = Instant::now() + Duration::from_secs(10);
    while tally.incarnation.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the node never told its incarnation");
        let _ = socket.send_to(&datagram, target);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a legitimate client fared: each operation's latency, and what went
/// wrong.
#[derive(Default)]
struct Fared {
    latencies: Vec<Duration>,
    overloaded: usize,
    errors: Vec<String>,
}

impl Fared {
    fn note<T>(&mut self, started: Instant, result: Result<T, ClientError>) -> Option<T> {
        self.latencies.push(started.elapsed());
        match result {
            Ok(answer) => Some(answer),
            Err(ClientError::Refused(Refusal::Overloaded)) => {
                self.overloaded += 1;
                None
            }
            Err(e) => {
                self.errors.push(e.to_string());
                None
            }
        }
    }

    fn percentile(&self, p: usize) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = (sorted.len() * p / 100).min(sorted.len().saturating_sub(1));
        sorted.get(at).copied().unwrap_or_default()
    }

    fn describe(&self, who: &str) -> String {
        format!(
            "{who}: {} operations, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}, {} busy answers, {} errors {:?}",
            self.latencies.len(),
            self.percentile(50),
            self.percentile(90),
            self.percentile(99),
            self.latencies.iter().max().copied().unwrap_or_default(),
            self.overloaded,
            self.errors.len(),
            self.errors.iter().take(5).collect::<Vec<_>>(),
        )
    }
}

/// Writes then reads back `key` until `stop` (from `reads_only_at` on,
/// only reads it), checking that every read sees the last write.
fn keep_working(client: &mut Client, key: &Key, stop: &AtomicBool, reads_only_at: Instant) -> Fared {
    let mut fared = Fared::default();
    let mut expected = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if Instant::now() < reads_only_at {
            let value = Value(format!("legit-{n}").into_bytes());
            let started = Instant::now();
            let written = fared.note(started, client.put(key, value.clone())).is_some();
            // A write that failed may or may not have taken effect.
            expected = written.then_some(value);
        }
        let started = Instant::now();
        if let Some(answer) = fared.note(started, client.read(key))
            && let Some(value) = &expected
        {
            assert_eq!(answer.value.as_ref(), Some(value), "a read after a write");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    fared
}

/// The resident memory of process `pid`, in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One measurement of the flooded node.
struct Sample {
    at: Duration,
    rss_kb: u64,
    log_bytes: u64,
}

/// Measures node 1 every `SAMPLE_EVERY` until `stop`; times are from
/// `origin`, when the flood began.
fn sample_node(cluster: &TestCluster, pid: u32, stop: &AtomicBool, origin: Instant) -> Vec<Sample> {
    let mut samples = Vec::new();
    // Bounded by the flood's length, with room for a late stop.
    while !stop.load(Ordering::Relaxed) && origin.elapsed() < FLOOD + Duration::from_secs(10) {
        let rss_kb = rss_kb(pid).expect("node 1 runs");
        samples.push(Sample { at: origin.elapsed(), rss_kb, log_bytes: file_len(&cluster.log_path(1)) });
        std::thread::sleep(SAMPLE_EVERY);
    }
    samples
}

/// The highest memory of the first third of the samples after the
/// warm-up, and the lowest of the last third.
fn rss_thirds(samples: &[Sample]) -> (u64, u64) {
    let measured: Vec<u64> = samples.iter().filter(|s| s.at >= WARM_UP).map(|s| s.rss_kb).collect();
    let third = measured.len() / 3;
    assert!(third >= 4, "too few samples after the warm-up: {}", measured.len());
    let first = measured[..third].iter().copied().max().unwrap_or(0);
    let last = measured[measured.len() - third..].iter().copied().min().unwrap_or(0);
    (first, last)
}

/// How much the log grew while everybody only read: from a second into
/// that time (writes in flight have landed) to the end.
fn log_growth_reads_only(samples: &[Sample]) -> i64 {
    let from = FLOOD - READS_ONLY + Duration::from_secs(1);
    let start = samples.iter().find(|s| s.at >= from).map_or(0, |s| s.log_bytes);
    let end = samples.last().map_or(0, |s| s.log_bytes);
    end as i64 - start as i64
}

#[test]
fn a_flood_of_requests_keeps_memory_bounded_and_clients_served() {
    let cluster = TestCluster::start("flood", 3);
    let config = cluster.config();
    let cluster_id = config.cluster_id;
    let target: SocketAddr = format!("127.0.0.1:{}", cluster.ports[0]).parse().expect("address");
    let pid = cluster.pid(1).expect("node 1 runs");
    // The roaming client's key is homed at node 1: that is where it asks
    // first, and it moves on when node 1 is busy.
    let roaming_key = cluster.key_homed_at(1, "legit/roaming/");
    let pinned_key = Key::from("legit/pinned");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tally = Tally::default();
    let stop_clients = AtomicBool::new(false);
    let stop_sampling = AtomicBool::new(false);
    // The flood begins as soon as the node told its incarnation.
    let origin = Instant::now();
    let reads_only_at = origin + FLOOD - READS_ONLY;

    let (samples, roaming, pinned) = std::thread::scope(|scope| {
        scope.spawn(|| read_replies(&socket, cluster_id, &tally));
        learn_incarnation(&socket, target, cluster_id, &tally);
        let sampler = scope.spawn(|| sample_node(&cluster, pid, &stop_sampling, origin));
        let roaming = scope.spawn(|| {
            let mut client = Client::new(&config, None, Duration::from_secs(5)).expect("client");
            keep_working(&mut client, &roaming_key, &stop_clients, reads_only_at)
        });
        let pinned = scope.spawn(|| {
            let mut client = Client::new(&config, Some(NodeId(1)), Duration::from_secs(5)).expect("client");
            keep_working(&mut client, &pinned_key, &stop_clients, reads_only_at)
        });
        send_flood(&socket, target, cluster_id, &tally, reads_only_at);
        stop_clients.store(true, Ordering::Relaxed);
        stop_sampling.store(true, Ordering::Relaxed);
        let results = (
            sampler.join().expect("sampler"),
            roaming.join().expect("roaming client"),
            pinned.join().expect("pinned client"),
        );
        // Late replies to the flood are counted for a moment more.
        std::thread::sleep(Duration::from_millis(500));
        tally.stop.store(true, Ordering::Relaxed);
        results
    });

    let mut status_client = Client::new(&config, Some(NodeId(1)), Duration::from_secs(5)).expect("client");
    let status = status_client.status_all().into_iter().next().and_then(|(_, _, s)| s.ok());
    let status = status.expect("node 1 answers a status request after the flood");
    eprintln!("{}", tally.describe());
    eprintln!(
        "node 1 after the flood: {} keys, {} sessions, log {} bytes",
        status.keys, status.sessions, status.log_bytes
    );
    for s in &samples {
        eprintln!("t={:>5.1}s rss={:>7} KiB log={:>9} B", s.at.as_secs_f64(), s.rss_kb, s.log_bytes);
    }
    eprintln!("{}", roaming.describe("roaming client"));
    eprintln!("{}", pinned.describe("pinned client"));

    // The flood was one: the node was pushed past its bounds, and said so.
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    assert!(load(&tally.sent) >= FLOOD_RATE * FLOOD.as_secs() / 2, "the flood was sent");
    assert!(load(&tally.overloaded) > 0, "no busy answer: {}", tally.describe());
    // Reads and watches of keys that do not exist leave nothing behind.
    let keys_max = FLOOD_WRITE_KEYS + 2 + KEYS_SLACK;
    assert!(status.keys <= keys_max, "node 1 holds {} keys, at most {keys_max} were written", status.keys);
    let growth = log_growth_reads_only(&samples);
    assert!(growth <= LOG_GROWTH_READS_ONLY_MAX as i64, "node 1's log grew by {growth} bytes from reads");
    let log_max = samples.iter().map(|s| s.log_bytes).max().unwrap_or(0);
    assert!(log_max <= LOG_BYTES_MAX, "node 1's log grew to {log_max} bytes");
    // Its memory levelled off.
    let rss_max = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    assert!(rss_max <= RSS_MAX_KB, "node 1's memory grew to {rss_max} KiB");
    let (first, last) = rss_thirds(&samples);
    assert!(
        last <= first + RSS_GROWTH_MAX_KB,
        "node 1's memory kept growing: {first} KiB at most in the first third, {last} KiB at least in the last"
    );
    // The clients were served throughout, the one pinned to the flooded
    // node too: every operation succeeded, most well within the timeout.
    for (who, fared, pace) in [("roaming client", &roaming, 4), ("pinned client", &pinned, 1)] {
        let described = fared.describe(who);
        assert!(fared.errors.is_empty() && fared.overloaded == 0, "{described}");
        assert!(fared.latencies.len() as u64 >= pace * FLOOD.as_secs(), "too few operations: {described}");
        assert!(fared.percentile(90) <= CLIENT_P90_MAX, "too slow: {described}");
    }
}
