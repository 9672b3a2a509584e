//! The closed loop: connections, one task per client, and what each task
//! counts. A client runs one operation at a time and starts the next as soon
//! as the last one ended, until the duration is up. As in `paxosctl bench`,
//! an operation counts where it ended: in the warm-up, nowhere; in flight
//! when the duration was up, in the last second. Each task keeps its own
//! histogram and counters, merged once at the end, so the clients never
//! contend on shared state.

use crate::limits::{
    CLIENTS_PER_CONNECTION_MAX, CONNECT_TIMEOUT_MS, ERROR_PAUSE_MS, LATENCY_SIGNIFICANT_DIGITS,
    LATENCY_US_MAX, LATENCY_US_MIN, REQUEST_TIMEOUT_MS,
};
use crate::workload::{Kind, Sequence, Workload};
use etcd_client::{Client, Compare, CompareOp, KvClient, Txn, TxnOp, TxnOpResponse};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The endpoint (index into the endpoint list) of each connection to open.
/// At most `CLIENTS_PER_CONNECTION_MAX` clients share a connection, and
/// once there are as many clients as endpoints, every endpoint gets the same
/// number of connections: writes to a follower are forwarded to the leader,
/// and an even spread makes that cost the same in every run.
pub fn connection_plan(clients: usize, endpoints: usize) -> Vec<usize> {
    let endpoints = endpoints.max(1);
    let wanted = clients.max(1).div_ceil(CLIENTS_PER_CONNECTION_MAX);
    let connections = if clients >= endpoints { wanted.next_multiple_of(endpoints) } else { clients.max(1) };
    (0..connections).map(|c| c % endpoints).collect()
}

/// The connection client `client` uses: the clients are dealt round-robin,
/// so neighbouring clients land on different endpoints.
pub fn connection_of(client: usize, connections: usize) -> usize {
    client % connections.max(1)
}

/// Opens one gRPC connection per entry of `plan`, now rather than lazily, so
/// that neither the warm-up nor the timed part pays for connecting.
pub async fn connect(endpoints: &[String], plan: &[usize]) -> Result<Vec<KvClient>, String> {
    let mut connections = Vec::with_capacity(plan.len());
    for &e in plan {
        let endpoint = &endpoints[e];
        let url = if endpoint.contains("://") { endpoint.clone() } else { format!("http://{endpoint}") };
        let channel = tonic::transport::Endpoint::from_shared(url)
            .map_err(|err| format!("endpoint {endpoint}: {err}"))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|err| format!("cannot connect to {endpoint}: {err}"))?;
        let client = Client::from_channel(etcd_client::Channel::Tonic(channel), None)
            .await
            .map_err(|err| format!("cannot set up a client of {endpoint}: {err}"))?;
        connections.push(client.kv_client());
    }
    Ok(connections)
}

/// When the timed part runs: operations that end at or after `timed_from`
/// count, and no client starts one at or after `until`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub timed_from: Instant,
    pub until: Instant,
}

/// What one client (or, merged, the whole run) counted in the timed part.
#[derive(Debug)]
pub struct Tally {
    /// Operations that ended with an answer, failed compares included.
    pub ops: u64,
    /// CAS whose compare did not hold: answered, not an error.
    pub precondition_failed: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Latency of every operation in `ops`.
    pub latency_us: Histogram<u64>,
    /// Operations in `ops` that ended in each second of the timed part, the
    /// last second taking those that ended after it.
    pub per_second: Vec<u64>,
    /// Likewise for the errors.
    pub per_second_errors: Vec<u64>,
    /// From the start of the timed part to the end of the last operation
    /// counted.
    pub last_end: Duration,
}

impl Tally {
    pub fn new(seconds: u64) -> Tally {
        let latency_us =
            Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, LATENCY_SIGNIFICANT_DIGITS)
                .expect("constant, valid histogram bounds");
        Tally {
            ops: 0,
            precondition_failed: 0,
            errors_by_kind: BTreeMap::new(),
            latency_us,
            per_second: vec![0; seconds as usize],
            per_second_errors: vec![0; seconds as usize],
            last_end: Duration::ZERO,
        }
    }

    pub fn errors(&self) -> u64 {
        self.errors_by_kind.values().sum()
    }

    pub fn merge(&mut self, other: &Tally) {
        self.ops += other.ops;
        self.precondition_failed += other.precondition_failed;
        for (kind, n) in &other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        for (mine, theirs) in self.per_second.iter_mut().zip(&other.per_second) {
            *mine += theirs;
        }
        for (mine, theirs) in self.per_second_errors.iter_mut().zip(&other.per_second_errors) {
            *mine += theirs;
        }
        self.last_end = self.last_end.max(other.last_end);
    }

    /// Counts an operation that ended `at` after the start of the timed part.
    fn count(&mut self, ended: &Ended, latency: Duration, at: Duration) {
        self.last_end = self.last_end.max(at);
        let second = (at.as_secs() as usize).min(self.per_second.len().saturating_sub(1));
        match ended {
            Ended::Failed(kind) => {
                *self.errors_by_kind.entry(kind).or_default() += 1;
                if let Some(n) = self.per_second_errors.get_mut(second) {
                    *n += 1;
                }
            }
            Ended::Done | Ended::PreconditionFailed => {
                self.ops += 1;
                if *ended == Ended::PreconditionFailed {
                    self.precondition_failed += 1;
                }
                let us = (latency.as_micros() as u64).clamp(LATENCY_US_MIN, LATENCY_US_MAX);
                let _ = self.latency_us.record(us);
                if let Some(n) = self.per_second.get_mut(second) {
                    *n += 1;
                }
            }
        }
    }
}

/// How one operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Done,
    PreconditionFailed,
    /// No answer: the kind of error, a name for `errors_by_kind`.
    Failed(&'static str),
}

/// One client's loop, until `clock.until`.
pub async fn run_client(
    mut kv: KvClient,
    workload: Workload,
    keys: Vec<String>,
    value: Vec<u8>,
    clock: Clock,
    seconds: u64,
) -> Tally {
    let mut tally = Tally::new(seconds);
    let mut sequence = Sequence::new(workload, keys.len());
    // The CAS workload's expected mod_revision per key: 0 (absent) at first,
    // then the revision of the last answer for the key.
    let mut revisions = vec![0i64; keys.len()];
    loop {
        let started = Instant::now();
        if started >= clock.until {
            return tally;
        }
        let (k, kind) = sequence.next_op();
        let ended = match kind {
            Kind::Put => put(&mut kv, &keys[k], &value).await,
            Kind::Read => read(&mut kv, &keys[k]).await,
            Kind::Cas => cas(&mut kv, &keys[k], &value, &mut revisions[k]).await,
        };
        let now = Instant::now();
        if now >= clock.timed_from {
            tally.count(&ended, now.duration_since(started), now.duration_since(clock.timed_from));
        }
        if matches!(ended, Ended::Failed(_)) {
            tokio::time::sleep(Duration::from_millis(ERROR_PAUSE_MS)).await;
        }
    }
}

/// Writes every key once (the read workload's set-up): the first failure
/// ends the set-up, naming the key.
pub async fn write_keys(mut kv: KvClient, keys: Vec<String>, value: Vec<u8>) -> Result<(), String> {
    for key in &keys {
        if let Err(err) = kv.put(key.as_str(), value.clone(), None).await {
            return Err(format!("writing the keys to read failed at {key}: {err}"));
        }
    }
    Ok(())
}

async fn put(kv: &mut KvClient, key: &str, value: &[u8]) -> Ended {
    match kv.put(key, value, None).await {
        Ok(_) => Ended::Done,
        Err(err) => Ended::Failed(error_kind(&err)),
    }
}

/// A linearizable read: etcd-client's default (serializable = false).
async fn read(kv: &mut KvClient, key: &str) -> Ended {
    match kv.get(key, None).await {
        Ok(_) => Ended::Done,
        Err(err) => Ended::Failed(error_kind(&err)),
    }
}

/// etcd's compare-and-set. On success the key's new mod_revision is the
/// revision of the transaction; on a failed compare, the one the Else-get
/// found (0 if the key is absent), which the next CAS of this key expects.
async fn cas(kv: &mut KvClient, key: &str, value: &[u8], revision: &mut i64) -> Ended {
    let txn = Txn::new()
        .when([Compare::mod_revision(key, CompareOp::Equal, *revision)])
        .and_then([TxnOp::put(key, value, None)])
        .or_else([TxnOp::get(key, None)]);
    let response = match kv.txn(txn).await {
        Ok(response) => response,
        Err(err) => return Ended::Failed(error_kind(&err)),
    };
    if response.succeeded() {
        return match response.header() {
            Some(header) => {
                *revision = header.revision();
                Ended::Done
            }
            None => Ended::Failed("malformed_response"),
        };
    }
    let found = response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get.kvs().first().map_or(0, |kv| kv.mod_revision())),
        _ => None,
    });
    match found {
        Some(found) => {
            *revision = found;
            Ended::PreconditionFailed
        }
        None => Ended::Failed("malformed_response"),
    }
}

/// A short, stable name for `errors_by_kind`: the gRPC status code in
/// snake case (`unavailable`, `deadline_exceeded`, ...) or the kind of
/// client-side failure.
fn error_kind(err: &etcd_client::Error) -> &'static str {
    use etcd_client::Error as E;
    match err {
        E::GRpcStatus(status) => grpc_code_name(status.code()),
        E::TransportError(_) => "transport",
        E::IoError(_) => "io",
        _ => "other",
    }
}

fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_hold_at_most_sixteen_clients_and_spread_evenly_over_the_endpoints() {
        assert_eq!(connection_plan(1, 3), [0]);
        assert_eq!(connection_plan(2, 3), [0, 1]);
        assert_eq!(connection_plan(16, 3), [0, 1, 2]);
        assert_eq!(connection_plan(64, 3), [0, 1, 2, 0, 1, 2]);
        assert_eq!(connection_plan(256, 3).len(), 18);
        assert_eq!(connection_plan(256, 1).len(), 16);
    }

    #[test]
    fn clients_are_dealt_round_robin_over_the_connections() {
        let plan = connection_plan(64, 3);
        let load = |c: usize| (0..64).filter(|&client| connection_of(client, plan.len()) == c).count();
        assert_eq!((0..plan.len()).map(load).collect::<Vec<_>>(), [11, 11, 11, 11, 10, 10]);
        assert!((0..plan.len()).all(|c| load(c) <= CLIENTS_PER_CONNECTION_MAX));
    }

    #[test]
    fn a_tally_counts_answers_and_failed_compares_as_ops_and_errors_apart() {
        let ms = Duration::from_millis;
        let mut tally = Tally::new(2);
        tally.count(&Ended::Done, Duration::from_micros(1500), ms(300));
        tally.count(&Ended::PreconditionFailed, Duration::from_micros(2500), ms(1200));
        tally.count(&Ended::Failed("unavailable"), Duration::from_secs(5), ms(1900));
        // In flight when the 2 s were up: counted in the last second.
        tally.count(&Ended::Done, Duration::from_micros(1000), ms(2040));
        let mut total = Tally::new(2);
        total.merge(&tally);
        total.merge(&tally);
        assert_eq!((total.ops, total.precondition_failed, total.errors()), (6, 2, 2));
        assert_eq!((total.per_second, total.per_second_errors), (vec![2, 4], vec![0, 2]));
        assert_eq!(total.errors_by_kind.get("unavailable"), Some(&2));
        assert_eq!((total.latency_us.len(), total.latency_us.max()), (6, 2501));
        assert_eq!(total.last_end, ms(2040));
    }
}
