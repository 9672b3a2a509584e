//! Reading logs of format version 1, the first release's: frames right
//! after the header, one per record, without units, and records of the
//! shape they had then. Only `recover` reads them; `LogFile::open` rewrites
//! such a log in the current format before it appends.
//!
//! A version 1 ballot had no epoch: `{ round: u64, node: NodeId }`, in that
//! order, in postcard. Records and register states hold ballots, so they
//! have legacy twins here; the fields that did not change keep today's
//! types. A ballot converts to one of the founding epoch, `Epoch(0)`, which
//! orders exactly as before among ballots of that epoch.

use super::{
    FORMAT_VERSION_FRAMES, FRAME_OVERHEAD_BYTES, HEADER_BYTES, Recovered, RecoveryError, TailKind, TornTail,
    decode_frame, records_reserved,
};
use crate::storage::Record;
use crate::types::{Ballot, Epoch, Evaluation, Key, NodeId, RegisterState, Value, Version};
use serde::Deserialize;

#[derive(Deserialize)]
struct BallotV1 {
    round: u64,
    node: NodeId,
}

impl From<BallotV1> for Ballot {
    fn from(b: BallotV1) -> Ballot {
        Ballot::at(Epoch(0), b.round, b.node)
    }
}

#[derive(Deserialize)]
struct RegisterStateV1 {
    value: Option<Value>,
    version: Version,
    recent: Vec<Evaluation>,
    writers: Vec<BallotV1>,
}

/// The variants in their version 1 order: postcard encodes the index.
#[derive(Deserialize)]
enum RecordV1 {
    Slot { key: Key, promised: BallotV1, accepted: BallotV1, state: RegisterStateV1 },
    RoundsReserved { round_limit: u64 },
}

impl From<RecordV1> for Record {
    fn from(r: RecordV1) -> Record {
        match r {
            RecordV1::Slot { key, promised, accepted, state } => Record::Slot {
                key,
                promised: promised.into(),
                accepted: accepted.into(),
                state: RegisterState {
                    value: state.value,
                    version: state.version,
                    recent: state.recent,
                    writers: state.writers.into_iter().map(Ballot::from).collect(),
                    history: None,
                },
            },
            RecordV1::RoundsReserved { round_limit } => Record::RoundsReserved { round_limit },
        }
    }
}

/// Recovers a version 1 log (its header already checked) by the rules of
/// that version: at the first bad frame, a valid frame anywhere after it
/// means corruption; otherwise the frames from the bad one on are the torn
/// tail.
pub(super) fn recover_frames(bytes: &[u8]) -> Result<Recovered, RecoveryError> {
    let mut records = Vec::with_capacity(records_reserved(bytes.len()));
    let mut offset = HEADER_BYTES;
    let mut torn_tail = None;
    while offset < bytes.len() {
        match decode_frame::<RecordV1>(bytes, offset) {
            Ok((record, next)) => {
                records.push(record.into());
                offset = next;
            }
            Err(fault) => {
                if valid_frame_from(bytes, fault.rescan_from(offset)) {
                    return Err(RecoveryError::Corrupt { offset: offset as u64 });
                }
                let remaining = bytes.len() - offset;
                let kind = TailKind::of(fault, remaining, FRAME_OVERHEAD_BYTES);
                torn_tail = Some(TornTail { offset: offset as u64, bytes: remaining as u64, kind });
                break;
            }
        }
    }
    let valid_len = offset as u64;
    Ok(Recovered { records, valid_len, torn_tail, fresh: false, version: FORMAT_VERSION_FRAMES, last_seq: 0 })
}

/// Whether a complete, valid version 1 frame starts at any offset from
/// `start` on. Linear in the bytes scanned: most offsets fail the 4-byte
/// length CRC.
fn valid_frame_from(bytes: &[u8], start: usize) -> bool {
    let last_start = bytes.len().saturating_sub(FRAME_OVERHEAD_BYTES);
    (start..=last_start).any(|offset| decode_frame::<RecordV1>(bytes, offset).is_ok())
}
