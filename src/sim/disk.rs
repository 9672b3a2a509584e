//! The simulated disk of one node: the acceptor log as bytes, in the real
//! format (`storage::log`, one unit per sync, written by the same code),
//! split into what is synced and the records appended since. A crash keeps
//! the synced bytes and, of the unit the next sync would have written,
//! nothing, a prefix (a torn write) or some of its blocks (a disk that
//! persisted them out of order); a restart runs the real recovery on what
//! is left.

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
    /// The highest fence synced: promised for every key.
    floor: Ballot,
    /// The highest floor of dropped promises synced: promised for every
    /// key without a slot.
    absent_floor: Ballot,
    /// Whether the last catch-up mark synced says the node catches up.
    catching_up: bool,
}

impl DurableView {
    fn apply(&mut self, record: &Record) {
        match record {
            Record::Slot { key, promised, accepted, .. } => {
                self.slots.insert(key.clone(), DurableSlot { promised: *promised, accepted: *accepted });
            }
            Record::Fence { epoch } => self.floor = self.floor.max(Ballot::floor_of(*epoch)),
            Record::AbsentFloor { promised } => self.absent_floor = self.absent_floor.max(*promised),
            Record::CatchingUp => self.catching_up = true,
            Record::CaughtUp { .. } => self.catching_up = false,
            Record::RoundsReserved { .. } | Record::Membership(_) => {}
        }
    }

    /// True when a restart would find the node catching up.
    pub fn catching_up(&self) -> bool {
        self.catching_up
    }

    pub fn slot(&self, key: &Key) -> DurableSlot {
        let absent = DurableSlot { promised: self.absent_floor, accepted: Ballot::ZERO };
        let slot = self.slots.get(key).copied().unwrap_or(absent);
        DurableSlot { promised: slot.promised.max(self.floor), ..slot }
    }
}

/// The unit of what a disk persists atomically: a write torn by a power
/// loss holds some of its blocks and not others, in any order.
const BLOCK_BYTES: usize = 512;

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

    /// The node stopped dead while the next sync was writing its unit.
    /// Half the time none of it reached the platter; otherwise a random
    /// prefix did (possibly ending mid-frame), or a random subset of its
    /// blocks (`land_blocks`). Returns true when a partial write was left
    /// behind.
    pub fn crash(&mut self, rng: &mut Rng, blocks_out_of_order: bool) -> bool {
        let mut unit = Vec::new();
        if !self.pending.is_empty() {
            log::encode_unit(self.last_seq + 1, &self.pending, &mut unit);
        }
        let landed = if unit.is_empty() || rng.chance(0.5) {
            Vec::new()
        } else if !blocks_out_of_order || rng.chance(0.5) {
            let keep = rng.range(1, unit.len() as u64) as usize;
            unit[..keep.min(unit.len())].to_vec()
        } else {
            land_blocks(self.synced.len(), &unit, rng)
        };
        // All of it may land, as if the sync completed just before the
        // crash: that unit is whole, and recovery keeps it.
        let torn = !landed.is_empty() && landed != unit;
        self.synced.extend_from_slice(&landed);
        self.pending.clear();
        self.pending_records.clear();
        torn
    }

    /// What a restarting node reads: the records recovery finds, with a
    /// torn tail cut off the way `LogFile::open` cuts it, and, when the
    /// last unit may have held acknowledged state, the record that makes
    /// the node catch up, as the daemon appends it.
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
        let lost = recovered.may_have_lost_acknowledged_state();
        let mut records = recovered.records;
        if lost {
            records.push(self.catching_up());
        }
        Ok(records)
    }

    /// The data dir is gone, or its damaged log moved aside, and the node
    /// starts with `--rejoin`: a new log that says it is catching up.
    pub fn start_over(&mut self) -> Vec<Record> {
        *self = SimDisk::default();
        vec![self.catching_up()]
    }

    fn catching_up(&mut self) -> Record {
        let Ok(()) = self.append(&Record::CatchingUp);
        let Ok(_) = self.sync();
        Record::CatchingUp
    }

    /// Damages one byte of what is synced, past the header: a bad block.
    /// Returns false when the log holds no unit to damage.
    pub fn flip_byte(&mut self, rng: &mut Rng) -> bool {
        let header = log::encode_header().len();
        if self.synced.len() <= header {
            return false;
        }
        let at = rng.range(header as u64, self.synced.len() as u64 - 1) as usize;
        self.synced[at] ^= 1 << rng.below(8);
        true
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

/// What reaches the platter of `unit`, written at file offset `at`, when
/// the disk persists its blocks (`BLOCK_BYTES`, aligned in the file) in any
/// order and the power fails: each block lands or not. A block that did not
/// land reads as zeros when a later one did; after the last one that
/// landed, the file ends, or (when the new size reached the disk anyway)
/// zeros run to the end of the unit.
fn land_blocks(at: usize, unit: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut landed = vec![0u8; unit.len()];
    let mut end = 0;
    let mut start = 0;
    while start < unit.len() {
        let block_end = ((at + start) / BLOCK_BYTES + 1) * BLOCK_BYTES - at;
        let block_end = block_end.min(unit.len());
        if rng.chance(0.5) {
            landed[start..block_end].copy_from_slice(&unit[start..block_end]);
            end = block_end;
        }
        start = block_end;
    }
    if rng.chance(0.5) {
        landed.truncate(end);
    }
    landed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeId, RegisterState, Value};

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

    /// A record with a value of `size` bytes, so that units span blocks.
    fn big_slot(key: &str, round: u64, size: usize) -> Record {
        let mut record = slot(key, round);
        if let Record::Slot { state, .. } = &mut record {
            state.value = Some(Value(vec![b'v'; size]));
        }
        record
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
            let torn = disk.crash(&mut rng, true);
            torn_seen |= torn;
            let mut records = disk.restart().expect("a torn tail is never corruption");
            // A damaged (not merely cut) last unit makes the node catch up.
            let caught = records.last() == Some(&Record::CatchingUp);
            if caught {
                records.pop();
            }
            // The unit of b and c is all or nothing.
            let whole = vec![slot("a", round), slot("b", round), slot("c", round)];
            assert!(
                records == whole[..1] || (!torn && !caught && records == whole),
                "round {round}: {records:?}"
            );
            assert_eq!(&recovered_view(&disk), disk.durable());
            assert!(log::recover(disk.synced_bytes()).is_ok_and(|r| r.torn_tail.is_none()));
        }
        assert!(torn_seen);
    }

    /// Whatever subset of the last unit's blocks lands, recovery cuts that
    /// unit and keeps every earlier one: never corruption, never a record
    /// of the unit unless all of it landed.
    #[test]
    fn blocks_landing_out_of_order_only_damage_the_last_unit() {
        let mut rng = Rng::new(5);
        let (mut torn, mut first_block_lost) = (0, 0);
        for round in 1..300 {
            let mut disk = SimDisk::default();
            for i in 0..rng.range(1, 3) {
                disk.append(&big_slot(&format!("synced-{i}"), round, rng.range(0, 700) as usize)).ok();
                let _ = disk.sync();
            }
            let synced = log::recover(disk.synced_bytes()).expect("valid").records;
            let at = disk.synced_bytes().len();
            let pending: Vec<Record> = (0..rng.range(1, 4))
                .map(|i| big_slot(&format!("pending-{i}"), round, rng.range(0, 1500) as usize))
                .collect();
            let mut frames = Vec::new();
            pending.iter().for_each(|r| log::encode_record(r, &mut frames));
            let mut unit = Vec::new();
            log::encode_unit(disk.last_seq + 1, &frames, &mut unit);
            let landed = land_blocks(at, &unit, &mut rng);
            disk.synced.extend_from_slice(&landed);
            let mut records = disk.restart().unwrap_or_else(|e| panic!("round {round}: {e}"));
            if landed == unit {
                assert_eq!(records, [synced, pending].concat(), "round {round}");
                continue;
            }
            if records.last() == Some(&Record::CatchingUp) {
                records.pop();
            }
            assert_eq!(records, synced, "round {round}");
            torn += u32::from(!landed.is_empty());
            let first_block = (BLOCK_BYTES - at % BLOCK_BYTES).min(unit.len());
            first_block_lost +=
                u32::from(landed.len() > first_block && landed[..first_block] != unit[..first_block]);
        }
        assert!(torn > 100 && first_block_lost > 30, "torn {torn}, first block lost {first_block_lost}");
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
