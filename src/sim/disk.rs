//! The simulated disk of one node: the acceptor log as bytes, in the real
//! format (`storage::log`), split into what is synced and what was appended
//! since. A crash keeps the synced bytes and a random prefix of the rest (a
//! torn write); a restart runs the real recovery on what is left.

use crate::core::rng::Rng;
use crate::limits;
use crate::storage::log::{self, RecoveryError};
use crate::storage::{Record, Storage, Synced};
use crate::types::{Ballot, Key};
use std::collections::BTreeMap;
use std::convert::Infallible;

/// One key's ballots as recovery would restore them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurableSlot {
    pub promised: Ballot,
    pub accepted: Ballot,
}

/// What a restart would restore, per key: the view the durability
/// invariant checks released messages against. Kept up to date at each
/// sync from the records synced, so it never needs a full decode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableView {
    slots: BTreeMap<Key, DurableSlot>,
}

impl DurableView {
    fn apply(&mut self, record: &Record) {
        if let Record::Slot { key, promised, accepted, .. } = record {
            self.slots.insert(key.clone(), DurableSlot { promised: *promised, accepted: *accepted });
        }
    }

    pub fn slot(&self, key: &Key) -> DurableSlot {
        self.slots.get(key).copied().unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct SimDisk {
    synced: Vec<u8>,
    pending: Vec<u8>,
    pending_records: Vec<Record>,
    durable: DurableView,
}

impl Default for SimDisk {
    /// A log as `LogFile::open` creates it: a synced header, no records.
    fn default() -> Self {
        SimDisk {
            synced: log::encode_header(),
            pending: Vec::new(),
            pending_records: Vec::new(),
            durable: DurableView::default(),
        }
    }
}

impl Storage for SimDisk {
    type Error = Infallible;

    fn append(&mut self, record: &Record) -> Result<(), Infallible> {
        log::encode_record(record, &mut self.pending);
        self.pending_records.push(record.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<Synced, Infallible> {
        self.synced.append(&mut self.pending);
        for record in self.pending_records.drain(..) {
            self.durable.apply(&record);
        }
        Ok(Synced(()))
    }
}

impl SimDisk {
    pub fn durable(&self) -> &DurableView {
        &self.durable
    }

    /// Size of the log, unsynced appends included.
    pub fn len_bytes(&self) -> u64 {
        (self.synced.len() + self.pending.len()) as u64
    }

    #[cfg(test)]
    pub fn synced_bytes(&self) -> &[u8] {
        &self.synced
    }

    /// The node stopped dead: unsynced bytes are lost, except a random
    /// prefix of them that reached the platter (possibly ending mid-frame).
    /// Returns true when a partial write was left behind.
    pub fn crash(&mut self, rng: &mut Rng) -> bool {
        let keep = if rng.chance(0.5) { rng.range(1, self.pending.len() as u64) as usize } else { 0 };
        let keep = keep.min(self.pending.len());
        let torn = keep > 0 && keep < self.pending.len();
        self.synced.extend_from_slice(&self.pending[..keep]);
        self.pending.clear();
        self.pending_records.clear();
        torn
    }

    /// What a restarting node reads: the records recovery finds, with a
    /// torn tail cut off the way `LogFile::open` cuts it.
    pub fn restart(&mut self) -> Result<Vec<Record>, RecoveryError> {
        let recovered = log::recover(&self.synced)?;
        if recovered.torn_tail.is_some() {
            self.synced.truncate(recovered.valid_len as usize);
        }
        self.durable = DurableView::default();
        for record in &recovered.records {
            self.durable.apply(record);
        }
        Ok(recovered.records)
    }

    /// The rule of `LogFile::should_compact`, with the size threshold of
    /// the simulation (small, so compaction happens in short runs).
    pub fn should_compact(&self, live_bytes: u64, bytes_min: u64) -> bool {
        let len = self.len_bytes();
        len > bytes_min && len > live_bytes.saturating_mul(limits::COMPACT_RATIO)
    }

    /// Replaces the log with `live`, atomically as the rename in
    /// `LogFile::compact` does. Only called with nothing pending.
    pub fn compact(&mut self, live: impl Iterator<Item = Record>) {
        if !self.pending.is_empty() {
            return;
        }
        let mut bytes = log::encode_header();
        for record in live {
            log::encode_record(&record, &mut bytes);
        }
        self.synced = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, RegisterState};

    fn slot(key: &str, round: u64) -> Record {
        let ballot = Ballot::new(round, NodeId(1));
        Record::Slot {
            key: Key::from(key),
            promised: ballot,
            accepted: ballot,
            state: RegisterState::default(),
        }
    }

    fn recovered_view(disk: &SimDisk) -> DurableView {
        let mut view = DurableView::default();
        let records = log::recover(disk.synced_bytes()).map(|r| r.records).unwrap_or_default();
        records.iter().for_each(|r| view.apply(r));
        view
    }

    #[test]
    fn durable_view_follows_syncs_only() {
        let mut disk = SimDisk::default();
        disk.append(&slot("a", 1)).ok();
        assert_eq!(disk.durable().slot(&Key::from("a")), DurableSlot::default());
        let _ = disk.sync();
        assert_eq!(disk.durable().slot(&Key::from("a")).promised, Ballot::new(1, NodeId(1)));
        assert_eq!(&recovered_view(&disk), disk.durable());
    }

    #[test]
    fn crash_keeps_synced_records_and_recovery_cuts_torn_tails() {
        let mut rng = Rng::new(3);
        let mut torn_seen = false;
        for round in 1..200 {
            let mut disk = SimDisk::default();
            disk.append(&slot("a", round)).ok();
            let _ = disk.sync();
            disk.append(&slot("b", round)).ok();
            disk.append(&slot("c", round)).ok();
            torn_seen |= disk.crash(&mut rng);
            let records = disk.restart().expect("a torn tail is never corruption");
            assert!(!records.is_empty() && records[0] == slot("a", round));
            assert_eq!(&recovered_view(&disk), disk.durable());
            assert!(log::recover(disk.synced_bytes()).is_ok_and(|r| r.torn_tail.is_none()));
        }
        assert!(torn_seen);
    }

    #[test]
    fn compaction_keeps_the_live_records() {
        let mut disk = SimDisk::default();
        for round in 1..50 {
            disk.append(&slot("a", round)).ok();
        }
        let _ = disk.sync();
        assert!(disk.should_compact(10, 100));
        disk.compact(std::iter::once(slot("a", 49)));
        assert_eq!(disk.restart().ok(), Some(vec![slot("a", 49)]));
    }
}
