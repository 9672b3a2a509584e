//! Reading logs of format version 2: the unit layout of today, with records
//! whose register states had no `history` (it came with watches). Only
//! `recover` reads them; `LogFile::open` rewrites such a log in the current
//! format before it appends. Every other field kept its type, so the twins
//! here differ from today's types by that one field.

use crate::members::Membership;
use crate::storage::Record;
use crate::types::{Ballot, Epoch, Evaluation, Key, RegisterState, Value, Version};
use serde::Deserialize;

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct RegisterStateV2 {
    value: Option<Value>,
    version: Version,
    recent: Vec<Evaluation>,
    writers: Vec<Ballot>,
}

/// The variants in their version 2 order: postcard encodes the index.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) enum RecordV2 {
    Slot { key: Key, promised: Ballot, accepted: Ballot, state: RegisterStateV2 },
    RoundsReserved { round_limit: u64 },
    Fence { epoch: Epoch },
    CatchingUp,
    CaughtUp { epoch: Epoch },
    Membership(Membership),
}

impl From<RecordV2> for Record {
    fn from(r: RecordV2) -> Record {
        match r {
            RecordV2::Slot { key, promised, accepted, state } => {
                let RegisterStateV2 { value, version, recent, writers } = state;
                let state = RegisterState { value, version, recent, writers, history: None };
                Record::Slot { key, promised, accepted, state }
            }
            RecordV2::RoundsReserved { round_limit } => Record::RoundsReserved { round_limit },
            RecordV2::Fence { epoch } => Record::Fence { epoch },
            RecordV2::CatchingUp => Record::CatchingUp,
            RecordV2::CaughtUp { epoch } => Record::CaughtUp { epoch },
            RecordV2::Membership(m) => Record::Membership(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FORMAT_VERSION, FORMAT_VERSION_NO_HISTORY, LogFile, MAGIC, encode_unit, recover};
    use super::*;
    use crate::members::Members;
    use crate::storage::Storage;
    use crate::types::{Fingerprint, NodeId};

    /// A version 2 log of `records`, one unit holding them all.
    fn log_v2(records: &[RecordV2]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&FORMAT_VERSION_NO_HISTORY.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let mut frames = Vec::new();
        for record in records {
            let payload = postcard::to_stdvec(record).expect("encode");
            let start = frames.len();
            frames.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            let length_crc = crc32fast::hash(&frames[start..start + 4]);
            frames.extend_from_slice(&length_crc.to_le_bytes());
            frames.extend_from_slice(&payload);
            let crc = crc32fast::hash(&frames[start..]);
            frames.extend_from_slice(&crc.to_le_bytes());
        }
        encode_unit(1, &frames, &mut bytes);
        bytes
    }

    fn sample() -> (Vec<RecordV2>, Vec<Record>) {
        let (ballot, key) = (Ballot::new(3, NodeId(2)), Key::from("k"));
        let recent =
            vec![Evaluation { request: Fingerprint([5; 8]), version: Version(7), took_effect: true }];
        let old_state = || RegisterStateV2 {
            value: Some(Value::from("v")),
            version: Version(7),
            recent: recent.clone(),
            writers: vec![ballot],
        };
        let membership = Membership::founding(Members::named(&[NodeId(1), NodeId(2), NodeId(3)]));
        let old = vec![
            RecordV2::Slot { key: key.clone(), promised: ballot, accepted: ballot, state: old_state() },
            RecordV2::RoundsReserved { round_limit: 2048 },
            RecordV2::Fence { epoch: Epoch(4) },
            RecordV2::CatchingUp,
            RecordV2::CaughtUp { epoch: Epoch(4) },
            RecordV2::Membership(membership.clone()),
        ];
        let state = RegisterState {
            value: Some(Value::from("v")),
            version: Version(7),
            recent,
            writers: vec![ballot],
            history: None,
        };
        let new = vec![
            Record::Slot { key, promised: ballot, accepted: ballot, state },
            Record::RoundsReserved { round_limit: 2048 },
            Record::Fence { epoch: Epoch(4) },
            Record::CatchingUp,
            Record::CaughtUp { epoch: Epoch(4) },
            Record::Membership(membership),
        ];
        (old, new)
    }

    #[test]
    fn a_version_2_log_recovers_as_states_without_history() {
        let (old, new) = sample();
        let bytes = log_v2(&old);
        let got = recover(&bytes).expect("recovers");
        assert_eq!((got.records, got.version, got.last_seq), (new, FORMAT_VERSION_NO_HISTORY, 1));
        assert_eq!((got.valid_len, got.torn_tail), (bytes.len() as u64, None));
        // A torn last unit is cut as in today's format.
        let cut = recover(&bytes[..bytes.len() - 3]).expect("torn tail");
        assert_eq!((cut.records.len(), cut.version), (0, FORMAT_VERSION_NO_HISTORY));
        assert!(cut.torn_tail.is_some());
    }

    #[test]
    fn open_rewrites_a_version_2_log_in_the_current_format() {
        let dir = std::env::temp_dir().join(format!("paxosd-log-v2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (old, new) = sample();
        std::fs::write(dir.join(super::super::LOG_FILE_NAME), log_v2(&old)).expect("write");
        let (mut log, found) = LogFile::open(&dir).expect("open");
        assert_eq!((found.records, found.version), (new.clone(), FORMAT_VERSION_NO_HISTORY));
        log.sync().expect("sync");
        drop(log);
        let (_, reopened) = LogFile::open(&dir).expect("reopen");
        assert_eq!((reopened.records, reopened.version), (new, FORMAT_VERSION));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
