//! Acceptor storage: the record log (layout, recovery from torn writes,
//! out-of-order block writes and corruption, group commit, the version 1
//! format, compaction, the largest record) and the data dir identity marker. Many tests damage
//! files on purpose and check exactly what recovery says.

use paxosd::storage::identity::{self, Identity, IdentityError};
use paxosd::storage::log::{
    self, COMPACT_FILE_NAME, FORMAT_VERSION, FORMAT_VERSION_FRAMES, HEADER_BYTES, LOG_FILE_NAME, LogError,
    LogFile, MAGIC, Recovered, RecoveryError, TailKind, TornTail, UNIT_OVERHEAD_BYTES,
};
use paxosd::storage::{Record, Storage};
use paxosd::types::{
    Ballot, ClusterId, Epoch, Evaluation, Fingerprint, History, Key, NodeId, PastState, RegisterState, Value,
    Version,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

// ---------------------------------------------------------------------------
// Helpers

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("paxosd-storage-test-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn log_path(&self) -> PathBuf {
        self.0.join(LOG_FILE_NAME)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn slot(key: &str, round: u64, value: Option<&str>, version: u64) -> Record {
    Record::Slot {
        key: Key::from(key),
        promised: Ballot::new(round + 1, NodeId(2)),
        accepted: Ballot::new(round, NodeId(1)),
        state: RegisterState {
            value: value.map(Value::from),
            version: Version(version),
            ..Default::default()
        },
    }
}

/// A mix of every kind of record: values (some with remembered writes and
/// writers), tombstones, promise-only slots and round reservations.
fn sample_records(count: u64) -> Vec<Record> {
    (0..count)
        .map(|i| match i % 4 {
            0 => slot(&format!("key-{i}"), i, Some(&format!("value-{i}")), i),
            1 => Record::Slot {
                key: Key::from(format!("key-{i}").as_str()),
                promised: Ballot::new(i + 1, NodeId(2)),
                accepted: Ballot::new(i, NodeId(1)),
                state: RegisterState {
                    value: None,
                    version: Version(i),
                    recent: vec![Evaluation {
                        request: Fingerprint([i as u8; 8]),
                        version: Version(i),
                        took_effect: true,
                    }],
                    writers: vec![Ballot::new(i, NodeId(1)), Ballot::new(i.saturating_sub(1), NodeId(3))],
                    // Version 1 logs, built from these, had no history.
                    history: None,
                },
            },
            2 => Record::Slot {
                key: Key::from(format!("promised-{i}").as_str()),
                promised: Ballot::new(i, NodeId(3)),
                accepted: Ballot::ZERO,
                state: RegisterState::default(),
            },
            _ => Record::RoundsReserved { round_limit: i * 1024 },
        })
        .collect()
}

/// The frames of `records`: the body of a unit holding them.
fn frames(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    records.iter().for_each(|rec| log::encode_record(rec, &mut out));
    out
}

/// A log with one unit per group, numbered from 1.
fn encode_units(groups: &[&[Record]]) -> Vec<u8> {
    let mut bytes = log::encode_header();
    for (i, group) in groups.iter().enumerate() {
        log::encode_unit(i as u64 + 1, &frames(group), &mut bytes);
    }
    bytes
}

/// A log with one unit per record, as one sync after each append writes.
fn encode_log(records: &[Record]) -> Vec<u8> {
    let groups: Vec<&[Record]> = records.chunks(1).collect();
    encode_units(&groups)
}

/// Byte offset of each unit in a log of `groups`, and the end of the last.
fn unit_offsets(groups: &[&[Record]]) -> Vec<u64> {
    let mut offsets = vec![HEADER_BYTES as u64];
    for group in groups {
        let body: u64 = group.iter().map(log::record_len).sum();
        offsets.push(offsets[offsets.len() - 1] + body + UNIT_OVERHEAD_BYTES as u64);
    }
    offsets
}

/// `records` split into groups of 1, 2, 3, 4, 1, 2, ... records.
fn grouped(records: &[Record]) -> Vec<&[Record]> {
    let mut groups = Vec::new();
    let (mut start, mut size) = (0, 1);
    while start < records.len() {
        let end = (start + size).min(records.len());
        groups.push(&records[start..end]);
        start = end;
        size = size % 4 + 1;
    }
    groups
}

/// Opens the log in `dir`, and appends and syncs each group (one unit each).
fn write_synced_units(dir: &TempDir, groups: &[&[Record]]) {
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    for group in groups {
        for rec in *group {
            log.append(rec).expect("append");
        }
        log.sync().expect("sync");
    }
}

/// Opens the log in `dir`, appends `records` and syncs once: one unit.
fn write_synced_log(dir: &TempDir, records: &[Record]) {
    write_synced_units(dir, &[records]);
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

fn cut_file(path: &Path, len: u64) {
    let file = fs::OpenOptions::new().write(true).open(path).expect("open");
    file.set_len(len).expect("cut");
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).expect("write");
}

/// What recovery returns for an undamaged log of today's format.
fn clean(records: Vec<Record>, valid_len: u64, last_seq: u64) -> Recovered {
    Recovered { records, valid_len, torn_tail: None, fresh: false, version: FORMAT_VERSION, last_seq }
}

/// What recovery returns for a log of today's format whose last unit, from
/// `offset` to the end (`len`), is damaged.
fn torn(records: Vec<Record>, offset: u64, len: u64, last_seq: u64, kind: TailKind) -> Recovered {
    let torn_tail = Some(TornTail { offset, bytes: len - offset, kind });
    Recovered { records, valid_len: offset, torn_tail, fresh: false, version: FORMAT_VERSION, last_seq }
}

fn fresh() -> Recovered {
    Recovered {
        records: vec![],
        valid_len: 0,
        torn_tail: None,
        fresh: true,
        version: FORMAT_VERSION,
        last_seq: 0,
    }
}

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------
// Version 1 logs, built here from their layout: frames right after a
// version 1 header, and ballots without an epoch.

#[derive(Serialize)]
struct BallotV1 {
    round: u64,
    node: NodeId,
}

#[derive(Serialize)]
struct RegisterStateV1 {
    value: Option<Value>,
    version: Version,
    recent: Vec<Evaluation>,
    writers: Vec<BallotV1>,
}

#[derive(Serialize)]
enum RecordV1 {
    Slot { key: Key, promised: BallotV1, accepted: BallotV1, state: RegisterStateV1 },
    RoundsReserved { round_limit: u64 },
}

fn ballot_v1(b: &Ballot) -> BallotV1 {
    assert_eq!(b.epoch, Epoch(0), "version 1 had no epochs");
    BallotV1 { round: b.round, node: b.node }
}

fn record_v1(rec: &Record) -> RecordV1 {
    match rec {
        Record::Slot { key, promised, accepted, state } => RecordV1::Slot {
            key: key.clone(),
            promised: ballot_v1(promised),
            accepted: ballot_v1(accepted),
            state: RegisterStateV1 {
                value: state.value.clone(),
                version: state.version,
                recent: state.recent.clone(),
                writers: state.writers.iter().map(ballot_v1).collect(),
            },
        },
        Record::RoundsReserved { round_limit } => RecordV1::RoundsReserved { round_limit: *round_limit },
        other => panic!("version 1 had no {other:?}"),
    }
}

fn header_v1() -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&FORMAT_VERSION_FRAMES.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

/// Appends a version 1 frame: length, its crc, payload, crc of all.
fn frame_v1(payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let length_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&length_crc.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn encode_log_v1(records: &[Record]) -> Vec<u8> {
    let mut bytes = header_v1();
    for rec in records {
        frame_v1(&postcard::to_stdvec(&record_v1(rec)).expect("encode"), &mut bytes);
    }
    bytes
}

/// Byte offset of each frame in a version 1 log of `records`, and the end.
fn frame_offsets_v1(records: &[Record]) -> Vec<u64> {
    let mut offsets = vec![HEADER_BYTES as u64];
    for rec in records {
        let payload = postcard::to_stdvec(&record_v1(rec)).expect("encode").len();
        offsets.push(offsets[offsets.len() - 1] + payload as u64 + 12);
    }
    offsets
}

// ---------------------------------------------------------------------------
// Self-consistency of what recovery accepts

/// Whatever `recover` accepted: the records re-encode, in the units (or
/// frames) the valid prefix is made of, to exactly the valid prefix, and
/// the torn tail is the rest of the bytes.
fn check_consistent(bytes: &[u8], got: &Recovered) {
    let valid = got.valid_len as usize;
    assert!(valid <= bytes.len());
    if got.fresh {
        assert!(bytes.is_empty());
        assert_eq!(*got, fresh());
        return;
    }
    let reencoded = match got.version {
        FORMAT_VERSION_FRAMES => encode_log_v1(&got.records),
        _ => reencode_units(&bytes[..valid], got),
    };
    assert_eq!(reencoded, bytes[..valid]);
    match got.torn_tail {
        Some(torn) => {
            assert_eq!((torn.offset, torn.offset + torn.bytes), (got.valid_len, bytes.len() as u64))
        }
        None => assert_eq!(valid, bytes.len()),
    }
}

/// Re-encodes `got.records` into units numbered 1, 2, ... holding as many
/// records as the units of `valid` hold frames (read from their lengths).
fn reencode_units(valid: &[u8], got: &Recovered) -> Vec<u8> {
    let read_len = |at: usize| u32::from_le_bytes(valid[at..at + 4].try_into().expect("4 bytes")) as usize;
    let mut out = log::encode_header();
    let mut records = got.records.iter();
    let (mut offset, mut seq) = (HEADER_BYTES, 0);
    while offset < valid.len() {
        let body = read_len(offset);
        let (mut at, mut frames) = (offset + 16, Vec::new());
        while at < offset + 16 + body {
            log::encode_record(records.next().expect("a record per frame"), &mut frames);
            at += 12 + read_len(at);
        }
        seq += 1;
        log::encode_unit(seq, &frames, &mut out);
        offset += UNIT_OVERHEAD_BYTES + body;
    }
    assert!(records.next().is_none(), "a frame per record");
    assert_eq!(got.last_seq, seq);
    out
}

// ---------------------------------------------------------------------------
// Byte layout and `recover` over byte slices

#[test]
fn header_layout_is_magic_version_crc() {
    let header = log::encode_header();
    assert_eq!(header.len(), HEADER_BYTES);
    assert_eq!(&header[..8], b"PXDLOG\0\x01");
    assert_eq!(&header[..8], &MAGIC);
    assert_eq!(FORMAT_VERSION, 4);
    assert_eq!(header[8..12], 4u32.to_le_bytes());
    assert_eq!(header[12..16], crc32fast::hash(&header[..12]).to_le_bytes());
}

#[test]
fn frame_layout_is_length_crc_payload_crc() {
    let rec = slot("k", 5, Some("v"), 1);
    let mut frame = Vec::new();
    log::encode_record(&rec, &mut frame);
    let payload = postcard::to_stdvec(&rec).expect("encode");
    let n = payload.len();
    assert_eq!(frame.len(), 12 + n);
    assert_eq!(log::record_len(&rec), frame.len() as u64);
    assert_eq!(frame[0..4], (n as u32).to_le_bytes());
    assert_eq!(frame[4..8], crc32fast::hash(&frame[0..4]).to_le_bytes());
    assert_eq!(frame[8..8 + n], payload[..]);
    assert_eq!(frame[8 + n..], crc32fast::hash(&frame[..8 + n]).to_le_bytes());
}

#[test]
fn unit_layout_is_length_crc_sequence_frames_crc() {
    let records = [slot("k", 5, Some("v"), 1), Record::RoundsReserved { round_limit: 2048 }];
    let body = frames(&records);
    let n = body.len();
    assert_eq!(n as u64, records.iter().map(log::record_len).sum::<u64>());
    let mut unit = vec![0xEE]; // encode_unit appends
    log::encode_unit(7, &body, &mut unit);
    let unit = &unit[1..];
    assert_eq!(unit.len(), 20 + n);
    assert_eq!(UNIT_OVERHEAD_BYTES, 20);
    assert_eq!(unit[0..4], (n as u32).to_le_bytes());
    assert_eq!(unit[4..8], crc32fast::hash(&unit[0..4]).to_le_bytes());
    assert_eq!(unit[8..16], 7u64.to_le_bytes());
    assert_eq!(unit[16..16 + n], body[..]);
    assert_eq!(unit[16 + n..], crc32fast::hash(&unit[..16 + n]).to_le_bytes());
}

#[test]
fn recover_empty_input_is_fresh() {
    assert_eq!(log::recover(&[]), Ok(fresh()));
}

#[test]
fn recover_header_only_is_an_empty_log() {
    assert_eq!(log::recover(&log::encode_header()), Ok(clean(vec![], 16, 0)));
}

#[test]
fn recover_returns_every_record_in_order() {
    let records = sample_records(50);
    let groups = grouped(&records);
    let bytes = encode_units(&groups);
    assert_eq!(unit_offsets(&groups).last(), Some(&(bytes.len() as u64)));
    let units = groups.len() as u64;
    assert_eq!(log::recover(&bytes), Ok(clean(records.clone(), bytes.len() as u64, units)));
}

#[test]
fn recover_short_or_damaged_header_is_bad_header() {
    let header = log::encode_header();
    for len in 1..HEADER_BYTES {
        assert_eq!(log::recover(&header[..len]), Err(RecoveryError::BadHeader), "len {len}");
    }
    for i in 0..HEADER_BYTES {
        let mut bytes = encode_log(&sample_records(3));
        bytes[i] ^= 0x01;
        assert_eq!(log::recover(&bytes), Err(RecoveryError::BadHeader), "flipped byte {i}");
    }
}

#[test]
fn recover_other_format_version_is_unsupported() {
    for version in [0u32, FORMAT_VERSION + 1, u32::MAX] {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&version.to_le_bytes());
        let crc = crc32fast::hash(&header);
        header.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(log::recover(&header), Err(RecoveryError::UnsupportedVersion { version }));
    }
}

// ---------------------------------------------------------------------------
// Damaged units

#[test]
fn recover_cut_anywhere_in_the_last_unit_is_a_damaged_last_unit() {
    let records = sample_records(7);
    let groups = [&records[..3], &records[3..4], &records[4..]];
    let bytes = encode_units(&groups);
    let last = unit_offsets(&groups)[2];
    for cut in last + 1..bytes.len() as u64 {
        let expected = torn(records[..4].to_vec(), last, cut, 2, TailKind::Cut);
        assert_eq!(log::recover(&bytes[..cut as usize]), Ok(expected), "cut at {cut}");
    }
}

#[test]
fn recover_damage_in_any_byte_of_a_unit_before_the_last_is_corrupt() {
    let records = sample_records(9);
    let groups = [&records[..2], &records[2..5], &records[5..6], &records[6..]];
    let offsets = unit_offsets(&groups);
    let original = encode_units(&groups);
    for unit in 0..groups.len() - 1 {
        for i in offsets[unit]..offsets[unit + 1] {
            let mut bytes = original.clone();
            bytes[i as usize] ^= 0x80;
            let expected = Err(RecoveryError::Corrupt { offset: offsets[unit] });
            assert_eq!(log::recover(&bytes), expected, "unit {unit}, flipped byte {i}");
        }
    }
}

#[test]
fn recover_damage_in_any_byte_of_the_last_unit_is_a_damaged_last_unit() {
    let records = sample_records(9);
    let groups = [&records[..2], &records[2..5], &records[5..]];
    let bytes = encode_units(&groups);
    let last = unit_offsets(&groups)[2];
    for i in last..bytes.len() as u64 {
        for bit in [0x01, 0x80] {
            let mut damaged = bytes.clone();
            damaged[i as usize] ^= bit;
            let expected = torn(records[..5].to_vec(), last, bytes.len() as u64, 2, TailKind::Damaged);
            assert_eq!(log::recover(&damaged), Ok(expected), "flipped byte {i} by {bit:#x}");
        }
    }
}

/// Every way the blocks of the last unit can land when a disk persists a
/// write's 512-byte blocks out of order and the power fails: each block
/// present or zeroed, and the file ending after the last block that landed
/// or running (zeros) to the end of the unit. All are a damaged last unit,
/// never corruption, and no record of that unit is returned.
#[test]
fn recover_last_unit_with_blocks_persisted_out_of_order_is_a_damaged_last_unit() {
    let records: Vec<Record> =
        (0..6).map(|i| slot(&format!("key-{i}"), i, Some(&format!("{i}").repeat(400)), i)).collect();
    let groups = [&records[..1], &records[1..]];
    let bytes = encode_units(&groups);
    let start = unit_offsets(&groups)[1] as usize;
    // Blocks as the file is cut into them: the first one is shared with
    // the unit before, and the last one ends with the unit.
    let mut edges: Vec<usize> =
        (start / 512 + 1..).map(|b| b * 512).take_while(|&e| e < bytes.len()).collect();
    edges.insert(0, start);
    edges.push(bytes.len());
    let blocks = edges.len() - 1;
    assert!(blocks >= 5, "{blocks} blocks");
    let mut patterns = 0;
    for landed_mask in 0..(1u32 << blocks) - 1 {
        for size_persisted in [false, true] {
            let mut damaged = bytes[..start].to_vec();
            damaged.resize(bytes.len(), 0);
            let mut end = start;
            for b in (0..blocks).filter(|b| landed_mask & (1 << b) != 0) {
                damaged[edges[b]..edges[b + 1]].copy_from_slice(&bytes[edges[b]..edges[b + 1]]);
                end = edges[b + 1];
            }
            if !size_persisted {
                damaged.truncate(end);
            }
            // Cut short with its length intact, the unit was never synced;
            // at full length, or with its length lost, it may have been.
            let intact_length = landed_mask & 1 == 1;
            let short = damaged.len() < bytes.len();
            let kind = if short && intact_length { TailKind::Cut } else { TailKind::Damaged };
            let expected = match damaged.len() == start {
                true => clean(records[..1].to_vec(), start as u64, 1),
                false => torn(records[..1].to_vec(), start as u64, damaged.len() as u64, 1, kind),
            };
            let what = format!("blocks landed {landed_mask:#b}, size persisted {size_persisted}");
            assert_eq!(log::recover(&damaged), Ok(expected), "{what}");
            patterns += 1;
        }
    }
    assert_eq!(patterns, 2 * ((1 << blocks) - 1));
    // All blocks landed: the unit is whole.
    assert_eq!(log::recover(&bytes), Ok(clean(records, bytes.len() as u64, 2)));
}

#[test]
fn recover_unit_with_valid_crcs_but_the_wrong_sequence_number_is_damage() {
    let records = sample_records(4);
    let unit = |seq: u64, recs: &[Record]| {
        let mut out = Vec::new();
        log::encode_unit(seq, &frames(recs), &mut out);
        out
    };
    let two = encode_units(&[&records[..1], &records[1..2]]);
    let third_at = two.len() as u64;
    // Last: too high, the same again, too low, zero.
    for seq in [4, 2, 1, 0, u64::MAX] {
        let bytes = [two.clone(), unit(seq, &records[2..3])].concat();
        let expected = torn(records[..2].to_vec(), third_at, bytes.len() as u64, 2, TailKind::Damaged);
        assert_eq!(log::recover(&bytes), Ok(expected), "last unit numbered {seq}");
    }
    // Followed by a unit numbered above the last good one: corruption.
    for (seq, next) in [(4, 4), (4, 5), (2, 3), (1, 4)] {
        let bytes = [two.clone(), unit(seq, &records[2..3]), unit(next, &records[3..])].concat();
        let expected = Err(RecoveryError::Corrupt { offset: third_at });
        assert_eq!(log::recover(&bytes), expected, "units numbered {seq} then {next}");
    }
    // A valid unit after a damaged last one, numbered at or below the last
    // good one (a stale copy of an earlier unit), is no later write.
    for stale in [1, 2] {
        let mut damaged = unit(3, &records[2..3]);
        damaged[20] ^= 0x01;
        let bytes = [two.clone(), damaged, unit(stale, &records[..1])].concat();
        let expected = torn(records[..2].to_vec(), third_at, bytes.len() as u64, 2, TailKind::Damaged);
        assert_eq!(log::recover(&bytes), Ok(expected), "stale unit numbered {stale}");
    }
}

/// A length whose own CRC checks out but which exceeds the unit limit is
/// refused before it is used for anything.
#[test]
fn recover_huge_length_with_valid_length_crc_is_not_trusted() {
    let records = sample_records(3);
    let mut bytes = encode_units(&[&records[..2]]);
    let garbage_at = bytes.len() as u64;
    let length = 0xFFFF_FFF0u32.to_le_bytes();
    bytes.extend_from_slice(&length);
    bytes.extend_from_slice(&crc32fast::hash(&length).to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 64]);
    let expected = torn(records[..2].to_vec(), garbage_at, bytes.len() as u64, 1, TailKind::Damaged);
    assert_eq!(log::recover(&bytes), Ok(expected));

    // The same garbage with a valid unit after it is corruption.
    log::encode_unit(2, &frames(&records[2..]), &mut bytes);
    assert_eq!(log::recover(&bytes), Err(RecoveryError::Corrupt { offset: garbage_at }));
}

/// A unit whose CRCs check out but whose body is not exactly valid frames
/// (a payload that is no `Record`, a partial frame at the end, a frame
/// whose own CRC is wrong) is damaged.
#[test]
fn recover_unit_with_valid_crcs_but_a_bad_body_is_damage() {
    let records = sample_records(3);
    let good = frames(&records[1..2]);
    let mut undecodable = Vec::new();
    frame_v1(&[9u8, 1, 2, 3], &mut undecodable); // enum tag 9 is not a `Record`
    let mut bad_frame_crc = good.clone();
    let last = bad_frame_crc.len() - 1;
    bad_frame_crc[last] ^= 0x01;
    let bodies = [
        ("undecodable payload", [good.clone(), undecodable].concat()),
        ("partial frame at the end", [good.clone(), good[..5].to_vec()].concat()),
        ("trailing byte", [good.clone(), vec![0]].concat()),
        ("bad frame crc", bad_frame_crc),
    ];
    for (what, body) in bodies {
        let mut bytes = encode_units(&[&records[..1]]);
        let bad_at = bytes.len() as u64;
        log::encode_unit(2, &body, &mut bytes);
        let expected = torn(records[..1].to_vec(), bad_at, bytes.len() as u64, 1, TailKind::Damaged);
        assert_eq!(log::recover(&bytes), Ok(expected), "{what}");

        log::encode_unit(3, &frames(&records[2..]), &mut bytes);
        assert_eq!(log::recover(&bytes), Err(RecoveryError::Corrupt { offset: bad_at }), "{what}");
    }
}

/// A damaged unit whose (valid) length says it runs past the end of the
/// file, or whose length checks out while its CRC does not, is a damaged
/// last unit even when its value holds the bytes of a valid unit: those
/// bytes are the value being written, not a later write.
#[test]
fn recover_unit_embedded_in_a_damaged_value_is_not_a_later_unit() {
    let mut embedded = Vec::new();
    log::encode_unit(2, &frames(&[slot("inner", 1, Some("x"), 1)]), &mut embedded);
    let outer = Record::Slot {
        key: Key::from("outer"),
        promised: Ballot::new(1, NodeId(1)),
        accepted: Ballot::new(1, NodeId(1)),
        state: RegisterState {
            value: Some(Value([b"pad".as_slice(), &embedded, b"pad"].concat())),
            version: Version(1),
            ..Default::default()
        },
    };
    let bytes = encode_units(&[&[outer]]);
    // Cut just after the embedded unit: the padding, the version (one
    // byte), the empty lists of remembered writes and of writers and the
    // absent history (one byte each), the frame crc and the unit crc
    // remain unwritten.
    let cut = bytes.len() - 4 - 4 - 1 - 1 - 1 - 1 - 3;
    assert_eq!(bytes[cut - embedded.len()..cut], embedded[..]);
    assert_eq!(log::recover(&bytes[..cut]), Ok(torn(vec![], 16, cut as u64, 0, TailKind::Cut)));
    // Complete, with a wrong unit crc.
    let mut damaged = bytes.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    assert_eq!(log::recover(&damaged), Ok(torn(vec![], 16, bytes.len() as u64, 0, TailKind::Damaged)));
}

/// Random bytes, most of them behind a valid header (of either version) so
/// that unit and frame decoding is exercised, never panic, and whatever
/// `recover` accepts is consistent.
#[test]
fn recover_never_panics_on_random_bytes() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for i in 0..10_000 {
        let len = rng.below(300) as usize;
        let mut bytes = match i % 3 {
            0 => log::encode_header(),
            1 => header_v1(),
            _ => Vec::new(),
        };
        bytes.extend((0..len).map(|_| rng.next() as u8));
        if let Ok(got) = log::recover(&bytes) {
            accepted += 1;
            check_consistent(&bytes, &got);
        }
    }
    assert!(accepted >= 6_600, "headers were accepted {accepted} times");
}

/// Random damage to a valid log: recovery either refuses at a unit's
/// offset, or returns the records of a prefix of the units written.
#[test]
fn recover_never_panics_on_mutations_of_a_valid_log() {
    let records = sample_records(40);
    let groups = grouped(&records);
    let offsets = unit_offsets(&groups);
    let original = encode_units(&groups);
    let records_before: Vec<usize> =
        (0..=groups.len()).map(|u| groups[..u].iter().map(|g| g.len()).sum()).collect();
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    for round in 0..5_000 {
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes);
        match log::recover(&bytes) {
            Ok(got) if got.fresh => assert!(bytes.is_empty(), "round {round}"),
            Ok(got) => {
                check_consistent(&bytes, &got);
                let units = got.last_seq as usize;
                assert_eq!(got.valid_len, offsets[units], "round {round}");
                assert_eq!(got.records, records[..records_before[units]], "round {round}");
            }
            // At the start of a unit (the last one too: bytes inserted
            // before it are damage followed by a valid unit).
            Err(RecoveryError::Corrupt { offset }) => {
                assert!(offsets[..groups.len()].contains(&offset), "round {round}: {offset}")
            }
            Err(_) => assert!(bytes.get(..HEADER_BYTES) != Some(&original[..HEADER_BYTES]), "round {round}"),
        }
    }
}

fn mutate(rng: &mut XorShift, bytes: &mut Vec<u8>) {
    for _ in 0..=rng.below(3) {
        let at = rng.below(bytes.len() as u64 + 1) as usize;
        match rng.below(4) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, rng.next() as u8),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Version 1 logs

#[test]
fn recover_reads_a_version_1_log_as_ballots_of_epoch_0() {
    let records = sample_records(12);
    let bytes = encode_log_v1(&records);
    // The old ballots are shorter: one less varint each.
    assert!(bytes.len() < encode_units(&[&records]).len() - UNIT_OVERHEAD_BYTES);
    let expected = Recovered {
        records,
        valid_len: bytes.len() as u64,
        torn_tail: None,
        fresh: false,
        version: FORMAT_VERSION_FRAMES,
        last_seq: 0,
    };
    assert_eq!(log::recover(&bytes), Ok(expected));
    let header_only = header_v1();
    let got = log::recover(&header_only).expect("empty version 1 log");
    assert_eq!((got.records, got.valid_len, got.version), (vec![], 16, 1));
}

#[test]
fn recover_version_1_keeps_frame_level_torn_tails_and_corruption() {
    let records = sample_records(5);
    let bytes = encode_log_v1(&records);
    let offsets = frame_offsets_v1(&records);
    assert_eq!(offsets[5], bytes.len() as u64);
    for cut in offsets[4] + 1..bytes.len() as u64 {
        let got = log::recover(&bytes[..cut as usize]).expect("torn tail");
        assert_eq!(got.records, records[..4], "cut at {cut}");
        let torn_tail = Some(TornTail { offset: offsets[4], bytes: cut - offsets[4], kind: TailKind::Cut });
        assert_eq!((got.valid_len, got.torn_tail, got.version), (offsets[4], torn_tail, 1), "cut at {cut}");
    }
    for i in offsets[1]..offsets[2] {
        let mut damaged = bytes.clone();
        damaged[i as usize] ^= 0x80;
        let expected = Err(RecoveryError::Corrupt { offset: offsets[1] });
        assert_eq!(log::recover(&damaged), expected, "flipped byte {i}");
    }
}

#[test]
fn open_upgrades_a_version_1_log_to_the_current_format_with_the_same_records() {
    let dir = TempDir::new("upgrade");
    let records = sample_records(10);
    let v1 = encode_log_v1(&records);
    fs::write(dir.log_path(), &v1).expect("write");
    let (mut log, recovered) = LogFile::open(dir.path()).expect("open");
    let as_found = Recovered {
        records: records.clone(),
        valid_len: v1.len() as u64,
        torn_tail: None,
        fresh: false,
        version: FORMAT_VERSION_FRAMES,
        last_seq: 0,
    };
    assert_eq!(recovered, as_found);
    let upgraded = encode_units(&[&records]);
    assert_eq!(fs::read(dir.log_path()).expect("read"), upgraded);
    assert_eq!(log.len_bytes(), upgraded.len() as u64);
    assert!(!dir.path().join(COMPACT_FILE_NAME).exists());

    // Appends go on in the current format, numbered after the rewritten unit.
    let extra = slot("after-upgrade", 50, Some("v"), 3);
    log.append(&extra).expect("append");
    log.sync().expect("sync");
    drop(log);
    let both = encode_units(&[&records, std::slice::from_ref(&extra)]);
    assert_eq!(fs::read(dir.log_path()).expect("read"), both);
    let (_, reopened) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(reopened, clean([records, vec![extra]].concat(), both.len() as u64, 2));
}

#[test]
fn open_of_a_torn_version_1_log_upgrades_the_records_before_the_tail() {
    let dir = TempDir::new("upgradetorn");
    let records = sample_records(4);
    let v1 = encode_log_v1(&records);
    let offsets = frame_offsets_v1(&records);
    let cut = offsets[3] + 5;
    fs::write(dir.log_path(), &v1[..cut as usize]).expect("write");
    let (_, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered.records, records[..3]);
    assert_eq!(recovered.torn_tail, Some(TornTail { offset: offsets[3], bytes: 5, kind: TailKind::Cut }));
    assert_eq!(fs::read(dir.log_path()).expect("read"), encode_units(&[&records[..3]]));
}

#[test]
fn open_of_an_empty_version_1_log_upgrades_to_a_header() {
    let dir = TempDir::new("upgradeempty");
    fs::write(dir.log_path(), header_v1()).expect("write");
    let (_, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered.version, FORMAT_VERSION_FRAMES);
    assert_eq!(fs::read(dir.log_path()).expect("read"), log::encode_header());
}

#[test]
fn open_of_a_corrupt_version_1_log_refuses_and_leaves_it() {
    let dir = TempDir::new("upgradecorrupt");
    let records = sample_records(4);
    let mut v1 = encode_log_v1(&records);
    let offsets = frame_offsets_v1(&records);
    v1[offsets[1] as usize + 9] ^= 0x01;
    fs::write(dir.log_path(), &v1).expect("write");
    match LogFile::open(dir.path()) {
        Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, offsets[1]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(fs::read(dir.log_path()).expect("read"), v1);
}

// ---------------------------------------------------------------------------
// LogFile: open, append, sync

#[test]
fn open_creates_a_log_with_only_a_header() {
    let dir = TempDir::new("create");
    let (log, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered, fresh());
    assert_eq!(log.path(), dir.log_path());
    assert_eq!(log.len_bytes(), 16);
    assert_eq!(fs::read(dir.log_path()).expect("read"), log::encode_header());
    drop(log);
    let (_, reopened) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(reopened, clean(vec![], 16, 0));
}

#[test]
fn open_in_missing_dir_is_an_io_error() {
    let dir = TempDir::new("nodir");
    let missing = dir.path().join("absent");
    match LogFile::open(&missing) {
        Err(LogError::Io { path, .. }) => assert!(path.starts_with(&missing)),
        other => panic!("expected Io error, got {other:?}"),
    }
}

#[test]
fn open_of_an_empty_file_writes_a_header() {
    let dir = TempDir::new("emptyfile");
    fs::write(dir.log_path(), b"").expect("write");
    let (log, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered, fresh());
    assert_eq!(log.len_bytes(), 16);
    assert_eq!(fs::read(dir.log_path()).expect("read"), log::encode_header());
}

#[test]
fn reopen_after_sync_returns_exactly_the_records() {
    let dir = TempDir::new("roundtrip");
    let records = sample_records(500);
    write_synced_log(&dir, &records);
    let expected = encode_units(&[&records]);
    assert_eq!(fs::read(dir.log_path()).expect("read"), expected);
    let (log, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered, clean(records, expected.len() as u64, 1));
    assert_eq!(log.len_bytes(), expected.len() as u64);
}

#[test]
fn appends_after_reopen_continue_the_log() {
    let dir = TempDir::new("continue");
    let records = sample_records(10);
    write_synced_log(&dir, &records[..6]);
    write_synced_log(&dir, &records[6..]);
    let expected = encode_units(&[&records[..6], &records[6..]]);
    assert_eq!(fs::read(dir.log_path()).expect("read"), expected);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered, clean(records, expected.len() as u64, 2));
}

/// Group commit: one sync writes every append since the last as exactly
/// one unit, numbered one above the last; a sync with nothing pending
/// writes nothing.
#[test]
fn each_sync_writes_exactly_one_unit() {
    let dir = TempDir::new("groupcommit");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let records = sample_records(8);
    let mut expected = log::encode_header();
    for (seq, group) in [(1, &records[..5]), (2, &records[5..6]), (3, &records[6..])] {
        for rec in group {
            log.append(rec).expect("append");
        }
        let pending: u64 = group.iter().map(log::record_len).sum();
        assert_eq!(log.len_bytes(), expected.len() as u64 + pending + UNIT_OVERHEAD_BYTES as u64);
        assert_eq!(fs::read(dir.log_path()).expect("read"), expected, "appends are buffered until sync");
        log.sync().expect("sync");
        log::encode_unit(seq, &frames(group), &mut expected);
        assert_eq!(fs::read(dir.log_path()).expect("read"), expected, "unit {seq}");
        log.sync().expect("a sync with nothing pending is fine");
        assert_eq!(fs::read(dir.log_path()).expect("read"), expected, "nothing pending");
        assert_eq!(log.len_bytes(), expected.len() as u64);
    }
    drop(log);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered, clean(records, expected.len() as u64, 3));
}

#[test]
fn unsynced_appends_are_not_in_the_file() {
    let dir = TempDir::new("unsynced");
    let records = sample_records(6);
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    for rec in &records[..3] {
        log.append(rec).expect("append");
    }
    log.sync().expect("sync");
    let synced_bytes = fs::read(dir.log_path()).expect("read");
    for rec in &records[3..] {
        log.append(rec).expect("append");
    }
    assert_eq!(fs::read(dir.log_path()).expect("read"), synced_bytes);
    drop(log); // a crash before sync: the buffer is lost
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered, clean(records[..3].to_vec(), synced_bytes.len() as u64, 1));
}

#[test]
fn append_of_an_oversized_record_is_refused_and_buffers_nothing() {
    let dir = TempDir::new("oversized");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let big = Record::Slot {
        key: Key::from("big"),
        promised: Ballot::new(1, NodeId(1)),
        accepted: Ballot::ZERO,
        state: RegisterState {
            value: Some(Value(vec![7; paxosd::limits::RECORD_BYTES_MAX])),
            version: Version(1),
            ..Default::default()
        },
    };
    match log.append(&big) {
        Err(LogError::RecordTooLarge { bytes }) => {
            assert!(bytes > paxosd::limits::RECORD_BYTES_MAX as u64)
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(log.len_bytes(), 16);
    let small = slot("small", 1, None, 1);
    log.append(&small).expect("later appends still work");
    log.sync().expect("sync");
    assert_eq!(fs::read(dir.log_path()).expect("read"), encode_units(&[&[small]]));
}

// ---------------------------------------------------------------------------
// LogFile: damaged last units and corruption on disk

#[test]
fn damaged_last_unit_is_truncated_and_the_next_open_is_clean() {
    let records = sample_records(6);
    let groups = [&records[..2], &records[2..]];
    let offsets = unit_offsets(&groups);
    let (last, full) = (offsets[1], offsets[2]);
    // Inside the length, its crc, the sequence number, the body and the
    // unit crc.
    for cut in [last + 2, last + 6, last + 12, last + 30, full - 2] {
        let dir = TempDir::new("torn");
        write_synced_units(&dir, &groups);
        cut_file(&dir.log_path(), cut);

        let (log, recovered) = LogFile::open(dir.path()).expect("a damaged last unit is recovered");
        assert_eq!(recovered, torn(records[..2].to_vec(), last, cut, 1, TailKind::Cut), "cut at {cut}");
        assert_eq!(file_len(&dir.log_path()), last, "file truncated to the valid length");
        assert_eq!(log.len_bytes(), last);
        drop(log);

        let (_, again) = LogFile::open(dir.path()).expect("second open");
        assert_eq!(again, clean(records[..2].to_vec(), last, 1), "cut at {cut}");
    }
}

#[test]
fn appends_after_a_truncated_last_unit_are_numbered_after_the_last_good_one() {
    let dir = TempDir::new("tornappend");
    let records = sample_records(4);
    let groups = [&records[..3], &records[3..]];
    write_synced_units(&dir, &groups);
    cut_file(&dir.log_path(), file_len(&dir.log_path()) - 3);
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let extra = slot("after-crash", 9, Some("v"), 9);
    log.append(&extra).expect("append");
    log.sync().expect("sync");
    drop(log);
    let expected = encode_units(&[&records[..3], std::slice::from_ref(&extra)]);
    assert_eq!(fs::read(dir.log_path()).expect("read"), expected);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered, clean([&records[..3], &[extra]].concat(), expected.len() as u64, 2));
}

#[test]
fn flipped_byte_in_an_early_unit_refuses_to_open() {
    let records = sample_records(6);
    let groups = [&records[..2], &records[2..4], &records[4..]];
    let offsets = unit_offsets(&groups);
    let damaged_unit = offsets[1];
    // In the length, the length crc, the sequence number, a frame and the
    // unit crc.
    for at in [damaged_unit + 1, damaged_unit + 5, damaged_unit + 9, damaged_unit + 30, offsets[2] - 1] {
        let dir = TempDir::new("corrupt");
        write_synced_units(&dir, &groups);
        flip_byte(&dir.log_path(), at);
        let before = fs::read(dir.log_path()).expect("read");

        let err = LogFile::open(dir.path()).expect_err("corrupt log must not open");
        match &err {
            LogError::Corrupt { path, offset } => {
                assert_eq!((path, *offset), (&dir.log_path(), damaged_unit), "flip at {at}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&dir.log_path().display().to_string()), "{message}");
        assert!(message.contains(&format!("byte offset {damaged_unit}")), "{message}");
        assert!(message.contains("refuses to start"), "{message}");
        assert_eq!(fs::read(dir.log_path()).expect("read"), before, "nothing was truncated");
    }
}

#[test]
fn flipped_byte_in_the_last_unit_is_a_damaged_last_unit() {
    let dir = TempDir::new("lastflip");
    let records = sample_records(6);
    let groups = [&records[..5], &records[5..]];
    write_synced_units(&dir, &groups);
    let last = unit_offsets(&groups)[1];
    let len = file_len(&dir.log_path());
    flip_byte(&dir.log_path(), last + 10);
    let (_, recovered) = LogFile::open(dir.path()).expect("open");
    // The damaged unit is replaced, in one rename, by a record that makes
    // the node catch up: no crash can leave a log that looks whole.
    let mut expected = torn(records[..5].to_vec(), last, len, 1, TailKind::Damaged);
    expected.records.push(Record::CatchingUp);
    assert_eq!(recovered, expected);
    let (_, again) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(again.records, expected.records, "the catching-up mark is durable");
    assert!(again.torn_tail.is_none());
}

#[test]
fn truncated_header_is_bad_header() {
    let dir = TempDir::new("shortheader");
    fs::write(dir.log_path(), &log::encode_header()[..5]).expect("write");
    match LogFile::open(dir.path()) {
        Err(LogError::BadHeader { path }) => assert_eq!(path, dir.log_path()),
        other => panic!("expected BadHeader, got {other:?}"),
    }
    assert_eq!(file_len(&dir.log_path()), 5, "a bad header is left for inspection");
}

#[test]
fn flipped_header_byte_is_bad_header() {
    let dir = TempDir::new("flipheader");
    write_synced_log(&dir, &sample_records(3));
    flip_byte(&dir.log_path(), 3);
    let err = LogFile::open(dir.path()).expect_err("bad header");
    assert!(matches!(&err, LogError::BadHeader { path } if *path == dir.log_path()));
    assert!(err.to_string().contains("refusing to start"), "{err}");
}

#[test]
fn garbage_length_on_disk_is_not_used_to_allocate() {
    let dir = TempDir::new("garbagelen");
    let records = sample_records(3);
    let mut bytes = encode_units(&[&records]);
    let garbage_at = bytes.len() as u64;
    bytes.extend_from_slice(&[0xFF; 8]); // length u32::MAX with a wrong crc
    bytes.extend_from_slice(&[0x00; 100]);
    fs::write(dir.log_path(), &bytes).expect("write");
    let (_, recovered) = LogFile::open(dir.path()).expect("open");
    let mut expected = torn(records, garbage_at, bytes.len() as u64, 1, TailKind::Damaged);
    expected.records.push(Record::CatchingUp);
    assert_eq!(recovered, expected);
}

// ---------------------------------------------------------------------------
// Compaction

/// Replays records the way the acceptor does: the last record per key wins.
fn replay(records: &[Record]) -> (BTreeMap<Key, Record>, Option<u64>) {
    let mut slots = BTreeMap::new();
    let mut round_limit = None;
    for rec in records {
        match rec {
            Record::Slot { key, .. } => {
                slots.insert(key.clone(), rec.clone());
            }
            Record::RoundsReserved { round_limit: r } => round_limit = Some(*r),
            Record::Fence { .. }
            | Record::AbsentFloor { .. }
            | Record::CatchingUp
            | Record::CaughtUp { .. }
            | Record::Membership(_) => {}
        }
    }
    (slots, round_limit)
}

#[test]
fn compaction_keeps_only_the_latest_state_per_key() {
    let dir = TempDir::new("compact");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let filler = "x".repeat(500);
    let mut written = Vec::new();
    for round in 1..=1000u64 {
        for k in 0..10 {
            let value = (round % 7 != 0).then(|| format!("{k}-{round}-{filler}"));
            let rec = slot(&format!("key-{k}"), round, value.as_deref(), round);
            log.append(&rec).expect("append");
            written.push(rec);
        }
        if round % 100 == 0 {
            log.append(&Record::RoundsReserved { round_limit: round * 1024 }).expect("append");
            written.push(Record::RoundsReserved { round_limit: round * 1024 });
            log.sync().expect("sync");
        }
    }
    let (slots, round_limit) = replay(&written);
    let mut live: Vec<Record> = slots.into_values().collect();
    live.push(Record::RoundsReserved { round_limit: round_limit.expect("reserved") });
    let live_bytes: u64 = live.iter().map(log::record_len).sum();
    let before = log.len_bytes();
    assert!(log.should_compact(live_bytes), "{before} bytes vs {live_bytes} live");

    log.compact(live.clone().into_iter()).expect("compact");
    // The live records fit in one unit.
    let compacted = encode_units(&[&live]);
    assert_eq!(fs::read(dir.log_path()).expect("read"), compacted);
    assert_eq!(log.len_bytes(), 16 + live_bytes + UNIT_OVERHEAD_BYTES as u64);
    assert!(!log.should_compact(live_bytes));
    assert!(!dir.path().join(COMPACT_FILE_NAME).exists());

    // Appends continue in the compacted file, numbered after its unit.
    let extra = slot("key-3", 2000, Some("newest"), 2000);
    log.append(&extra).expect("append");
    log.sync().expect("sync");
    drop(log);
    written.push(extra.clone());

    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    let expected = encode_units(&[&live, std::slice::from_ref(&extra)]);
    assert_eq!(recovered, clean([live, vec![extra]].concat(), expected.len() as u64, 2));
    assert_eq!(replay(&recovered.records), replay(&written));
}

/// A compaction of more live data than one chunk writes several complete
/// units, numbered 1, 2, ...; all of them are read back.
#[test]
fn compaction_of_much_live_data_writes_several_units() {
    let dir = TempDir::new("compactunits");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let value = "y".repeat(8000);
    let live: Vec<Record> = (0..400).map(|i| slot(&format!("key-{i}"), i, Some(&value), i)).collect();
    log.compact(live.clone().into_iter()).expect("compact");
    drop(log);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    let live_bytes: u64 = live.iter().map(log::record_len).sum();
    let units = recovered.last_seq;
    assert!(units >= 2, "{units} units");
    assert_eq!(recovered, clean(live, 16 + live_bytes + units * UNIT_OVERHEAD_BYTES as u64, units));
}

#[test]
fn should_compact_needs_both_the_minimum_size_and_the_ratio() {
    let dir = TempDir::new("shouldcompact");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    assert!(!log.should_compact(0), "a tiny log is never worth compacting");
    let rec = slot("k", 1, Some(&"v".repeat(4000)), 1);
    while log.len_bytes() <= paxosd::limits::COMPACT_BYTES_MIN {
        log.append(&rec).expect("append");
    }
    let len = log.len_bytes();
    let ratio = paxosd::limits::COMPACT_RATIO;
    assert!(log.should_compact(0));
    assert!(log.should_compact(len / ratio - 1));
    assert!(!log.should_compact(len / ratio + 1));
    assert!(!log.should_compact(u64::MAX));
}

#[test]
fn compaction_with_unsynced_appends_is_refused() {
    let dir = TempDir::new("compactpending");
    let records = sample_records(4);
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    for rec in &records {
        log.append(rec).expect("append");
    }
    let pending: u64 = records.iter().map(log::record_len).sum();
    match log.compact(std::iter::empty()) {
        Err(LogError::UnsyncedAppends { path, bytes }) => {
            assert_eq!((path, bytes), (dir.log_path(), pending))
        }
        other => panic!("expected UnsyncedAppends, got {other:?}"),
    }
    log.sync().expect("sync");
    drop(log);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered.records, records);
}

#[test]
fn compaction_interrupted_before_rename_leaves_the_old_log() {
    let dir = TempDir::new("compactcrash");
    let records = sample_records(20);
    let groups = grouped(&records);
    write_synced_units(&dir, &groups);
    // A compaction that stopped halfway: a header and part of a unit.
    let mut partial = encode_units(&[&records[18..]]);
    partial.truncate(partial.len() - 5);
    fs::write(dir.path().join(COMPACT_FILE_NAME), &partial).expect("write");

    let (log, recovered) = LogFile::open(dir.path()).expect("open");
    let len = encode_units(&groups).len() as u64;
    assert_eq!(recovered, clean(records.clone(), len, groups.len() as u64));
    assert!(!dir.path().join(COMPACT_FILE_NAME).exists(), "leftover removed");
    drop(log);
    let (_, again) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(again.records, records);
}

// ---------------------------------------------------------------------------
// Identity marker

fn identity(cluster: u64, node: u16) -> Identity {
    Identity { cluster_id: ClusterId(cluster), node_id: NodeId(node) }
}

#[test]
fn identity_marker_text_is_exact() {
    let text = identity::encode(identity(7, 2));
    assert_eq!(
        text,
        "# paxosd data directory: do not edit or copy between nodes\n\
         cluster_id = 7\n\
         node_id = 2\n\
         crc = c2260d24\n"
    );
    assert_eq!(identity::decode(&text), Ok(identity(7, 2)));
}

#[test]
fn identity_bootstrap_creates_dir_and_marker_then_matches() {
    let parent = TempDir::new("idcreate");
    let dir = parent.path().join("data");
    identity::check_or_create(&dir, identity(7, 2), true).expect("bootstrap");
    let marker = fs::read_to_string(dir.join("identity")).expect("marker");
    assert_eq!(marker, identity::encode(identity(7, 2)));
    assert!(!dir.join("identity.tmp").exists());
    // Later starts, with or without --bootstrap, find the marker.
    identity::check_or_create(&dir, identity(7, 2), false).expect("match");
    identity::check_or_create(&dir, identity(7, 2), true).expect("match");
    assert_eq!(fs::read_to_string(dir.join("identity")).expect("marker"), marker);
}

#[test]
fn identity_mismatch_names_both_identities() {
    let dir = TempDir::new("idmismatch");
    identity::check_or_create(dir.path(), identity(7, 2), true).expect("bootstrap");
    for (expected, bootstrap) in [(identity(7, 3), false), (identity(8, 2), true)] {
        let err = identity::check_or_create(dir.path(), expected, bootstrap).expect_err("mismatch");
        match &err {
            IdentityError::Mismatch { path, expected: e, found } => {
                assert_eq!((path, *e, *found), (&dir.path().join("identity"), expected, identity(7, 2)))
            }
            other => panic!("expected Mismatch, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("belongs to node 2 of cluster 7"), "{message}");
        assert!(message.contains(&format!("config says this is {expected}")), "{message}");
    }
}

#[test]
fn identity_missing_without_bootstrap_explains_what_to_do() {
    let dir = TempDir::new("idmissing");
    let err = identity::check_or_create(dir.path(), identity(7, 2), false).expect_err("missing");
    assert!(matches!(
        &err,
        IdentityError::Missing { path, log_present: false } if *path == dir.path().join("identity")
    ));
    let message = err.to_string();
    assert!(message.contains("no identity marker"), "{message}");
    assert!(message.contains("--bootstrap"), "{message}");
    assert!(message.contains("must not start empty as if it were new"), "{message}");
    assert!(message.contains("--rejoin"), "{message}");
    assert!(message.contains("Replacing a node's data"), "{message}");
    assert!(!dir.path().join("identity").exists(), "nothing was created");
}

#[test]
fn identity_missing_next_to_a_log_says_so() {
    let dir = TempDir::new("idmissinglog");
    write_synced_log(&dir, &sample_records(2));
    let err = identity::check_or_create(dir.path(), identity(7, 2), false).expect_err("missing");
    assert!(matches!(err, IdentityError::Missing { log_present: true, .. }));
    assert!(err.to_string().contains("holds an acceptor log"), "{err}");
}

#[test]
fn identity_missing_dir_without_bootstrap_is_missing() {
    let parent = TempDir::new("idmissingdir");
    let dir = parent.path().join("data");
    let err = identity::check_or_create(&dir, identity(7, 2), false).expect_err("missing");
    assert!(matches!(err, IdentityError::Missing { log_present: false, .. }));
    assert!(!dir.exists(), "the dir is only created when bootstrapping");
}

#[test]
fn identity_bootstrap_needs_the_parent_dir() {
    let parent = TempDir::new("idnoparent");
    let dir = parent.path().join("absent").join("data");
    match identity::check_or_create(&dir, identity(7, 2), true) {
        Err(IdentityError::NoParent { path }) => assert_eq!(path, dir),
        other => panic!("expected NoParent, got {other:?}"),
    }
    assert!(!parent.path().join("absent").exists());
}

#[test]
fn identity_damaged_marker_is_corrupt() {
    let good = identity::encode(identity(7, 2));
    let body_only = good.lines().take(3).map(|l| format!("{l}\n")).collect::<String>();
    let unknown_field = {
        let body = format!("{body_only}role = leader\n");
        format!("{body}crc = {:08x}\n", crc32fast::hash(body.as_bytes()))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("edited id", good.replace("node_id = 2", "node_id = 3").into_bytes()),
        ("edited crc", good.replace("c2260d24", "c2260d25").into_bytes()),
        ("no crc line", body_only.clone().into_bytes()),
        ("unknown field, valid crc", unknown_field.into_bytes()),
        ("empty", Vec::new()),
        ("not utf-8", vec![0xFF, 0xFE, 0x00]),
        ("too large", vec![b'#'; 10_000]),
    ];
    for (name, contents) in cases {
        let dir = TempDir::new("idcorrupt");
        fs::write(dir.path().join("identity"), &contents).expect("write");
        let err = identity::check_or_create(dir.path(), identity(7, 2), true).expect_err(name);
        match &err {
            IdentityError::Corrupt { path, .. } => assert_eq!(path, &dir.path().join("identity")),
            other => panic!("{name}: expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains("refusing to start"), "{name}: {err}");
        assert_eq!(fs::read(dir.path().join("identity")).expect("read"), contents, "{name}");
    }
}

#[test]
fn identity_decode_rejects_duplicates_and_out_of_range_ids() {
    let with_crc = |body: &str| format!("{body}crc = {:08x}\n", crc32fast::hash(body.as_bytes()));
    let twice = with_crc("cluster_id = 7\nnode_id = 2\nnode_id = 3\n");
    assert!(identity::decode(&twice).is_err());
    let too_big = with_crc("cluster_id = 7\nnode_id = 70000\n");
    assert!(identity::decode(&too_big).is_err());
    let no_node = with_crc("cluster_id = 7\n");
    assert!(identity::decode(&no_node).is_err());
    let minimal = with_crc("cluster_id = 7\nnode_id = 2\n");
    assert_eq!(identity::decode(&minimal), Ok(identity(7, 2)));
}

/// A crash right after a damaged last unit is dropped must not leave a log
/// that looks whole: the drop and the catching-up mark are one rename.
#[test]
fn a_crash_after_opening_a_damaged_log_keeps_the_damage_known() {
    let dir = TempDir::new("damagedcrash");
    let records = sample_records(6);
    let groups = [&records[..5], &records[5..]];
    write_synced_units(&dir, &groups);
    let last = unit_offsets(&groups)[1];
    flip_byte(&dir.log_path(), last + 10);
    let (log, first) = LogFile::open(dir.path()).expect("open");
    assert!(first.may_have_lost_acknowledged_state());
    drop(log); // the node dies before it appends anything
    let (_, second) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(second.records.last(), Some(&Record::CatchingUp), "{:?}", second.records);
}

#[test]
fn start_over_writes_a_log_that_says_the_node_catches_up() {
    let dir = TempDir::new("startover");
    let (_, recovered) = LogFile::start_over(dir.path()).expect("start over");
    assert_eq!(recovered.records, vec![Record::CatchingUp]);
    let (_, again) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(again.records, vec![Record::CatchingUp]);
}

// ---------------------------------------------------------------------------
// The largest record

/// A watched key at every bound at once (the largest key and value, a full
/// history of the largest values, every remembered write and writer) makes
/// a record within `RECORD_BYTES_MAX`, which the log writes and recovers.
#[test]
fn the_largest_watched_state_fits_a_record_and_round_trips() {
    use paxosd::limits;
    let history_value = |i: usize| {
        let share = limits::WATCH_HISTORY_BYTES_MAX / limits::WATCH_HISTORY_VERSIONS_MAX;
        Some(Value(vec![i as u8; share]))
    };
    let top = u64::MAX - 1;
    let past = (0..limits::WATCH_HISTORY_VERSIONS_MAX)
        .map(|i| PastState { version: Version(top - 1 - i as u64), value: history_value(i) })
        .collect();
    let recent = (0..limits::RECENT_WRITES_MAX)
        .map(|i| Evaluation {
            request: Fingerprint([i as u8; 8]),
            version: Version(u64::MAX - i as u64),
            took_effect: true,
        })
        .collect();
    let max_ballot = Ballot::at(Epoch(u64::MAX), u64::MAX, NodeId(u16::MAX));
    let state = RegisterState {
        value: Some(Value(vec![0xEE; limits::VALUE_BYTES_MAX])),
        version: Version(top),
        recent,
        writers: vec![max_ballot; limits::NODES_MAX],
        history: Some(History { past }),
    };
    assert!(state.history.as_ref().is_some_and(|h| h.is_well_formed(state.version)));
    let record = Record::Slot {
        key: Key(vec![0xAB; limits::KEY_BYTES_MAX]),
        promised: max_ballot,
        accepted: max_ballot,
        state,
    };
    let payload = postcard::to_stdvec(&record).expect("encode").len();
    assert!(payload <= limits::RECORD_BYTES_MAX, "{payload} bytes");
    let dir = TempDir::new("largest");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    log.append(&record).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered.records, vec![record]);
}

/// A version 3 log (today's layout, header version 3) is read with
/// the same records, rewritten as version 4, and a floor record appended
/// after the upgrade survives a reopen.
#[test]
fn opening_upgrades_a_version_3_log_and_keeps_its_records() {
    let dir = TempDir::new("upgrade-v3");
    let records = sample_records(10);
    let mut v3 = encode_units(&[&records]);
    v3[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&v3[..12]);
    v3[12..16].copy_from_slice(&crc.to_le_bytes());
    fs::write(dir.log_path(), &v3).expect("write");
    let (mut log, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered.records, records);
    assert_eq!(recovered.version, 3);
    assert_eq!(fs::read(dir.log_path()).expect("read"), encode_units(&[&records]), "rewritten as v4");
    let floor = Record::AbsentFloor { promised: Ballot::new(7, NodeId(2)) };
    log.append(&floor).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (_, reopened) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(reopened.records, [records, vec![floor]].concat());
}
