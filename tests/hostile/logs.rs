//! Valid acceptor logs in each format recovery reads (version 1: frames;
//! version 2: units of records without history; version 3: today's), the
//! damage done to them, and the checks of what recovery returns.

use paxosd::core::rng::Rng;
use paxosd::limits;
use paxosd::members::{Configuration, Member, MemberChange, Members, Membership};
use paxosd::storage::Record;
use paxosd::storage::log::{
    self, FORMAT_VERSION, FORMAT_VERSION_FRAMES, FORMAT_VERSION_NO_HISTORY, HEADER_BYTES, MAGIC, Recovered,
    RecoveryError,
};
use paxosd::types::{
    Ballot, Epoch, Evaluation, Fingerprint, History, Key, NodeId, PastState, RegisterState, Value, Version,
};
use serde::Serialize;

pub const FORMATS: [u32; 3] = [FORMAT_VERSION_FRAMES, FORMAT_VERSION_NO_HISTORY, FORMAT_VERSION];

/// A log as written, and where its pieces are.
pub struct Log {
    pub format: u32,
    pub bytes: Vec<u8>,
    pub records: Vec<Record>,
    /// Where each unit starts (each frame, in a version 1 log), then the
    /// end of the log.
    pub units: Vec<usize>,
    /// How many records the units before each one hold.
    pub before: Vec<usize>,
    /// Where each frame starts, and the unit it is in.
    pub frames: Vec<(usize, usize)>,
}

/// Records of every kind the format knows (version 1: slots of epoch 0
/// without history, and round reservations).
pub fn records(rng: &mut Rng, format: u32, count: usize) -> Vec<Record> {
    (0..count).map(|_| record(rng, format)).collect()
}

fn record(rng: &mut Rng, format: u32) -> Record {
    let kinds = if format == FORMAT_VERSION_FRAMES { 2 } else { 6 };
    match rng.below(kinds) {
        0 => slot(rng, format),
        1 => Record::RoundsReserved { round_limit: rng.below(1 << 20) },
        2 => Record::Fence { epoch: Epoch(rng.range(1, 5)) },
        3 => Record::CatchingUp,
        4 => Record::CaughtUp { epoch: Epoch(rng.range(1, 5)) },
        _ => Record::Membership(membership(rng)),
    }
}

fn slot(rng: &mut Rng, format: u32) -> Record {
    let epoch = if format == FORMAT_VERSION_FRAMES { Epoch(0) } else { Epoch(rng.below(3)) };
    let ballot = |rng: &mut Rng| Ballot::at(epoch, rng.below(1000), NodeId(rng.range(1, 5) as u16));
    let version = Version(rng.below(50));
    let value_bytes = if rng.chance(0.05) { limits::VALUE_BYTES_MAX as u64 } else { 40 };
    let value =
        rng.chance(0.8).then(|| Value((0..rng.below(value_bytes)).map(|_| rng.next_u64() as u8).collect()));
    let recent = (0..rng.below(4))
        .map(|i| Evaluation {
            request: Fingerprint(rng.next_u64().to_le_bytes()),
            version: Version(version.0.saturating_sub(i)),
            took_effect: rng.chance(0.7),
        })
        .collect();
    let history = (format == FORMAT_VERSION && rng.chance(0.4)).then(|| History {
        past: (1..=version.0.min(4))
            .map(|i| PastState { version: Version(version.0 - i), value: Some(Value::from("old")) })
            .collect(),
    });
    let state = RegisterState { value, version, recent, writers: vec![ballot(rng)], history };
    let key = Key(format!("key-{}", rng.below(20)).into_bytes());
    Record::Slot { key, promised: ballot(rng), accepted: ballot(rng), state }
}

fn membership(rng: &mut Rng) -> Membership {
    let members = |rng: &mut Rng| {
        let ids = 1..=rng.range(1, 5) as u16;
        let all = ids.map(|id| Member { id: NodeId(id), address: format!("10.0.0.{id}:7000") });
        Members::new(all.collect()).unwrap_or_default()
    };
    let active = Configuration { epoch: Epoch(rng.below(3)), members: members(rng) };
    let frozen =
        rng.chance(0.3).then(|| MemberChange { epoch: Epoch(3), from: active.epoch, to: members(rng) });
    Membership { active, frozen, joining: rng.chance(0.1) }
}

/// `records` written in `format`: in units of one to four records (one
/// per sync), or frames for version 1.
pub fn write(rng: &mut Rng, format: u32, records: Vec<Record>) -> Log {
    let mut bytes = header(format);
    let (mut units, mut before, mut frames) = (Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    while start < records.len() {
        let group = if format == FORMAT_VERSION_FRAMES { 1 } else { rng.range(1, 4) as usize };
        let end = (start + group).min(records.len());
        units.push(bytes.len());
        before.push(start);
        let body_start = if format == FORMAT_VERSION_FRAMES { bytes.len() } else { bytes.len() + 16 };
        let mut body = Vec::new();
        for record in &records[start..end] {
            frames.push((body_start + body.len(), units.len() - 1));
            frame(format, record, &mut body);
        }
        match format {
            FORMAT_VERSION_FRAMES => bytes.extend_from_slice(&body),
            _ => log::encode_unit(units.len() as u64, &body, &mut bytes),
        }
        start = end;
    }
    units.push(bytes.len());
    before.push(records.len());
    Log { format, bytes, records, units, before, frames }
}

fn header(format: u32) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&format.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Appends the frame of `record` as `format` wrote it.
fn frame(format: u32, record: &Record, out: &mut Vec<u8>) {
    let payload = match format {
        FORMAT_VERSION => return log::encode_record(record, out),
        FORMAT_VERSION_NO_HISTORY => postcard::to_stdvec(&v2::record(record)),
        _ => postcard::to_stdvec(&v1::record(record)),
    };
    let payload = payload.expect("an old record encodes");
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let length_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&length_crc.to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Damages a log with one to three edits: bit flips, odd bytes,
/// truncation, inserted and removed bytes, and the length of a unit or a
/// frame rewritten, with its CRC made to match or not, and for a frame
/// inside a unit, the unit's CRC made to match as well. (Never a copy of a
/// range: a version 1 log, which has no sequence numbers, cannot tell a
/// frame repeated whole from one written twice.)
pub fn damage(rng: &mut Rng, log: &Log, bytes: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 3) {
        let at = rng.below(bytes.len() as u64 + 1) as usize;
        match rng.below(6) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 if at < bytes.len() => bytes[at] = [0x00, 0xff][rng.below(2) as usize],
            2 => bytes.truncate(at),
            3 => bytes.insert(at, rng.next_u64() as u8),
            4 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => edit_length(rng, log, bytes),
        }
    }
}

/// Rewrites the length of a unit or a frame of `log` (an earlier edit may
/// have moved it: then whatever sits there).
fn edit_length(rng: &mut Rng, log: &Log, bytes: &mut [u8]) {
    let frame = rng.chance(0.5) && !log.frames.is_empty();
    let (at, unit) = match frame {
        true => log.frames[rng.below(log.frames.len() as u64) as usize],
        false if log.units.len() > 1 => {
            let unit = rng.below(log.units.len() as u64 - 1) as usize;
            (log.units[unit], unit)
        }
        false => return,
    };
    let Some(old) = bytes.get(at..at + 4) else { return };
    let old = u32::from_le_bytes(old.try_into().expect("4 bytes"));
    let new = super::messages::edited_length(rng, old as u64) as u32;
    bytes[at..at + 4].copy_from_slice(&new.to_le_bytes());
    if rng.chance(0.3) || at + 8 > bytes.len() {
        return;
    }
    let length_crc = crc32fast::hash(&new.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&length_crc.to_le_bytes());
    if frame && log.format != FORMAT_VERSION_FRAMES && rng.chance(0.5) {
        reseal_unit(bytes, log.units[unit]);
    }
}

/// Makes the CRC of the unit at `at` match its bytes again, its length
/// taken as it stands.
fn reseal_unit(bytes: &mut [u8], at: usize) {
    let Some(length) = bytes.get(at..at + 4) else { return };
    let length = u32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
    let crc_at = at + 16 + length;
    if crc_at + 4 <= bytes.len() {
        let crc = crc32fast::hash(&bytes[at..crc_at]);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Recovers `bytes` and checks that what recovery accepted holds together:
/// the valid prefix and the torn tail make up the bytes, and the valid
/// prefix alone recovers to the same records, cleanly.
pub fn check_recovery(bytes: &[u8]) -> Result<Recovered, RecoveryError> {
    let got = log::recover(bytes)?;
    let valid = got.valid_len as usize;
    if got.fresh {
        assert!(bytes.is_empty() && got.records.is_empty() && valid == 0, "fresh from {} bytes", bytes.len());
        return Ok(got);
    }
    assert!((HEADER_BYTES..=bytes.len()).contains(&valid), "valid prefix of {valid} bytes");
    match got.torn_tail {
        Some(t) => assert_eq!((t.offset, t.offset + t.bytes), (got.valid_len, bytes.len() as u64)),
        None => assert_eq!(valid, bytes.len(), "no torn tail, yet bytes after the valid prefix"),
    }
    let again = log::recover(&bytes[..valid]).expect("the valid prefix recovers");
    assert_eq!((&again.records, again.last_seq, again.torn_tail), (&got.records, got.last_seq, None));
    Ok(got)
}

/// What recovery returned for a damaged copy of `log` is the log's records
/// up to the end of one of its units, or a refusal: never a record that
/// was not written, nor a record out of place.
pub fn check_prefix(log: &Log, got: &Result<Recovered, RecoveryError>) {
    let Ok(got) = got else { return };
    let n = got.records.len();
    assert!(log.before.contains(&n), "{n} records is not a whole number of units");
    assert!(got.records == log.records[..n], "records that were not written, or out of place");
}

/// Twins of the records of format version 2 (register states without
/// history), for writing such logs.
mod v2 {
    use super::*;

    #[derive(Serialize)]
    pub struct StateV2<'a> {
        value: &'a Option<Value>,
        version: Version,
        recent: &'a [Evaluation],
        writers: &'a [Ballot],
    }

    #[derive(Serialize)]
    pub enum RecordV2<'a> {
        Slot { key: &'a Key, promised: Ballot, accepted: Ballot, state: StateV2<'a> },
        RoundsReserved { round_limit: u64 },
        Fence { epoch: Epoch },
        CatchingUp,
        CaughtUp { epoch: Epoch },
        Membership(&'a Membership),
    }

    pub fn record(r: &Record) -> RecordV2<'_> {
        match r {
            Record::Slot { key, promised, accepted, state } => {
                assert!(state.history.is_none(), "version 2 kept no history");
                let RegisterState { value, version, recent, writers, .. } = state;
                let state = StateV2 { value, version: *version, recent, writers };
                RecordV2::Slot { key, promised: *promised, accepted: *accepted, state }
            }
            Record::RoundsReserved { round_limit } => RecordV2::RoundsReserved { round_limit: *round_limit },
            Record::Fence { epoch } => RecordV2::Fence { epoch: *epoch },
            Record::CatchingUp => RecordV2::CatchingUp,
            Record::CaughtUp { epoch } => RecordV2::CaughtUp { epoch: *epoch },
            Record::Membership(m) => RecordV2::Membership(m),
            Record::AbsentFloor { .. } => panic!("version 2 had no floor of absent promises"),
        }
    }
}

/// Twins of the records of format version 1 (ballots without an epoch),
/// for writing such logs.
mod v1 {
    use super::*;

    #[derive(Serialize)]
    pub struct BallotV1 {
        round: u64,
        node: NodeId,
    }

    #[derive(Serialize)]
    pub struct StateV1<'a> {
        value: &'a Option<Value>,
        version: Version,
        recent: &'a [Evaluation],
        writers: Vec<BallotV1>,
    }

    #[derive(Serialize)]
    pub enum RecordV1<'a> {
        Slot { key: &'a Key, promised: BallotV1, accepted: BallotV1, state: StateV1<'a> },
        RoundsReserved { round_limit: u64 },
    }

    fn ballot(b: &Ballot) -> BallotV1 {
        assert_eq!(b.epoch, Epoch(0), "version 1 had no epochs");
        BallotV1 { round: b.round, node: b.node }
    }

    pub fn record(r: &Record) -> RecordV1<'_> {
        match r {
            Record::Slot { key, promised, accepted, state } => {
                assert!(state.history.is_none(), "version 1 kept no history");
                let writers = state.writers.iter().map(ballot).collect();
                let state =
                    StateV1 { value: &state.value, version: state.version, recent: &state.recent, writers };
                RecordV1::Slot { key, promised: ballot(promised), accepted: ballot(accepted), state }
            }
            Record::RoundsReserved { round_limit } => RecordV1::RoundsReserved { round_limit: *round_limit },
            other => panic!("version 1 had no {other:?}"),
        }
    }
}
