//! The simulated disk of one node: the acceptor log as bytes, in the real
//! format (`storage::log`, one unit per sync, written by the same code),
//! split into what is synced and the records appended since. A crash keeps
//! the synced bytes and a random prefix of the unit the next sync would
//! have written (a torn write); a restart runs the real recovery on what is
//! left.

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
    /// Frames appended since the last sync: the body of the next unit.
    pending: Vec<u8>,
    pending_records: Vec<Record>,
    /// Sequence number of the last unit in `synced` (0: none).
    last_seq: u64,
    durable: DurableView,
}

impl Default for SimDisk {
    /// A log as `LogFile::open` creates it: a synced header, no records.
    fn default() -> Self {
        SimDisk {
            synced: log::encode_header(),
            pending: Vec::new(),
            pending_records: Vec::new(),
            last_seq: 0,
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
        if !self.pending.is_empty() {
            self.last_seq += 1;
            log::encode_unit(self.last_seq, &self.pending, &mut self.synced);
            self.pending.clear();
        }
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

    /// Size of the log once the unsynced appends are synced, as
    /// `LogFile::len_bytes` counts it.
    pub fn len_bytes(&self) -> u64 {
        let pending = if self.pending.is_empty() { 0 } else { self.pending.len() + log::UNIT_OVERHEAD_BYTES };
        (self.synced.len() + pending) as u64
    }

    #[cfg(test)]
    pub fn synced_bytes(&self) -> &[u8] {
        &self.synced
    }

    /// The node stopped dead while the next sync was writing its unit: it
    /// is lost, except a random prefix of it that reached the platter
    /// (possibly ending mid-frame). Returns true when a partial write was
    /// left behind.
    pub fn crash(&mut self, rng: &mut Rng) -> bool {
        let mut unit = Vec::new();
        if !self.pending.is_empty() {
            log::encode_unit(self.last_seq + 1, &self.pending, &mut unit);
        }
        let keep =
            if unit.is_empty() || rng.chance(0.5) { 0 } else { rng.range(1, unit.len() as u64) as usize };
        let keep = keep.min(unit.len());
        // All of it may land, as if the sync completed just before the
        // crash: that unit is whole, and recovery keeps it.
        let torn = keep > 0 && keep < unit.len();
        self.synced.extend_from_slice(&unit[..keep]);
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
        self.last_seq = recovered.last_seq;
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
        let mut frames = Vec::new();
        for record in live {
            log::encode_record(&record, &mut frames);
        }
        let mut bytes = log::encode_header();
        self.last_seq = 0;
        if !frames.is_empty() {
            self.last_seq = 1;
            log::encode_unit(self.last_seq, &frames, &mut bytes);
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
            let torn = disk.crash(&mut rng);
            torn_seen |= torn;
            let records = disk.restart().expect("a torn tail is never corruption");
            // The unit of b and c is all or nothing.
            let whole = vec![slot("a", round), slot("b", round), slot("c", round)];
            assert!(records == whole[..1] || (!torn && records == whole), "round {round}: {records:?}");
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
