//! Acceptor storage: the record log (layout, recovery from torn writes and
//! corruption, group commit, compaction) and the data dir identity marker.
//! Many tests damage files on purpose and check exactly what recovery says.

use paxosd::storage::identity::{self, Identity, IdentityError};
use paxosd::storage::log::{
    self, COMPACT_FILE_NAME, FORMAT_VERSION, HEADER_BYTES, LOG_FILE_NAME, LogError, LogFile, MAGIC,
    Recovered, RecoveryError, TornTail,
};
use paxosd::storage::{Record, Storage};
use paxosd::types::{Ballot, ClusterId, Key, NodeId, RegisterState, Value, Version};
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

/// A mix of every kind of record: values, tombstones, promise-only slots and
/// round reservations.
fn sample_records(count: u64) -> Vec<Record> {
    (0..count)
        .map(|i| match i % 4 {
            0 => slot(&format!("key-{i}"), i, Some(&format!("value-{i}")), i),
            1 => slot(&format!("key-{i}"), i, None, i),
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

fn encode_log(records: &[Record]) -> Vec<u8> {
    let mut bytes = log::encode_header();
    for rec in records {
        log::encode_record(rec, &mut bytes);
    }
    bytes
}

/// Byte offset of each record's frame in a log holding `records`.
fn frame_offsets(records: &[Record]) -> Vec<u64> {
    let mut offset = HEADER_BYTES as u64;
    records
        .iter()
        .map(|rec| {
            let this = offset;
            offset += log::record_len(rec);
            this
        })
        .collect()
}

fn write_synced_log(dir: &TempDir, records: &[Record]) {
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    for rec in records {
        log.append(rec).expect("append");
    }
    log.sync().expect("sync");
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x40;
    fs::write(path, bytes).expect("write");
}

fn clean(records: Vec<Record>, valid_len: u64) -> Recovered {
    Recovered { records, valid_len, torn_tail: None, fresh: false }
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
// Byte layout and `recover` over byte slices

#[test]
fn header_layout_is_magic_version_crc() {
    let header = log::encode_header();
    assert_eq!(header.len(), HEADER_BYTES);
    assert_eq!(&header[..8], b"PXDLOG\0\x01");
    assert_eq!(&header[..8], &MAGIC);
    assert_eq!(header[8..12], FORMAT_VERSION.to_le_bytes());
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
fn recover_empty_input_is_fresh() {
    let expected = Recovered { records: vec![], valid_len: 0, torn_tail: None, fresh: true };
    assert_eq!(log::recover(&[]), Ok(expected));
}

#[test]
fn recover_header_only_is_an_empty_log() {
    assert_eq!(log::recover(&log::encode_header()), Ok(clean(vec![], 16)));
}

#[test]
fn recover_returns_every_record_in_order() {
    let records = sample_records(50);
    let bytes = encode_log(&records);
    assert_eq!(log::recover(&bytes), Ok(clean(records, bytes.len() as u64)));
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
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(log::recover(&header), Err(RecoveryError::UnsupportedVersion { version: 2 }));
}

#[test]
fn recover_cut_anywhere_in_last_frame_is_torn_tail() {
    let records = sample_records(4);
    let bytes = encode_log(&records);
    let last = *frame_offsets(&records).last().expect("offsets");
    for cut in last + 1..bytes.len() as u64 {
        let expected = Recovered {
            records: records[..3].to_vec(),
            valid_len: last,
            torn_tail: Some(TornTail { offset: last, bytes: cut - last }),
            fresh: false,
        };
        assert_eq!(log::recover(&bytes[..cut as usize]), Ok(expected), "cut at {cut}");
    }
}

#[test]
fn recover_damage_in_any_byte_of_an_early_frame_is_corrupt() {
    let records = sample_records(5);
    let offsets = frame_offsets(&records);
    let (start, end) = (offsets[1], offsets[2]);
    for i in start..end {
        let mut bytes = encode_log(&records);
        bytes[i as usize] ^= 0x80;
        assert_eq!(log::recover(&bytes), Err(RecoveryError::Corrupt { offset: start }), "flipped byte {i}");
    }
}

#[test]
fn recover_damage_in_any_byte_of_the_last_frame_is_torn_tail() {
    let records = sample_records(5);
    let bytes = encode_log(&records);
    let last = frame_offsets(&records)[4];
    for i in last..bytes.len() as u64 {
        let mut damaged = bytes.clone();
        damaged[i as usize] ^= 0x80;
        let torn = TornTail { offset: last, bytes: bytes.len() as u64 - last };
        let got = log::recover(&damaged).expect("torn tail is not an error");
        assert_eq!(got.records, records[..4], "flipped byte {i}");
        assert_eq!((got.valid_len, got.torn_tail), (last, Some(torn)), "flipped byte {i}");
    }
}

/// A length whose own CRC checks out but which exceeds the record limit is
/// refused before it is used for anything.
#[test]
fn recover_huge_length_with_valid_length_crc_is_not_trusted() {
    let records = sample_records(2);
    let mut bytes = encode_log(&records);
    let garbage_at = bytes.len() as u64;
    let length = 0xFFFF_FFF0u32.to_le_bytes();
    bytes.extend_from_slice(&length);
    bytes.extend_from_slice(&crc32fast::hash(&length).to_le_bytes());
    bytes.extend_from_slice(&[0xAB; 64]);
    let got = log::recover(&bytes).expect("torn tail");
    assert_eq!(got.records, records);
    assert_eq!(got.torn_tail, Some(TornTail { offset: garbage_at, bytes: 8 + 64 }));

    // The same garbage with a valid frame after it is corruption.
    log::encode_record(&slot("after", 1, None, 1), &mut bytes);
    assert_eq!(log::recover(&bytes), Err(RecoveryError::Corrupt { offset: garbage_at }));
}

#[test]
fn recover_frame_with_valid_crcs_but_undecodable_payload_is_damage() {
    let records = sample_records(2);
    let mut bytes = encode_log(&records);
    let bad_at = bytes.len() as u64;
    // Enum tag 9 is not a `Record` variant.
    let payload = [9u8, 1, 2, 3];
    let start = bytes.len();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let length_crc = crc32fast::hash(&bytes[start..start + 4]);
    bytes.extend_from_slice(&length_crc.to_le_bytes());
    bytes.extend_from_slice(&payload);
    let frame_crc = crc32fast::hash(&bytes[start..]);
    bytes.extend_from_slice(&frame_crc.to_le_bytes());

    let got = log::recover(&bytes).expect("last frame: torn tail");
    assert_eq!(got.torn_tail, Some(TornTail { offset: bad_at, bytes: 16 }));

    log::encode_record(&records[0], &mut bytes);
    assert_eq!(log::recover(&bytes), Err(RecoveryError::Corrupt { offset: bad_at }));
}

/// A torn frame whose (valid) length says it runs past the end of the file
/// is torn even when its partial payload happens to contain a valid frame:
/// those bytes are the value being written, not a later record.
#[test]
fn recover_frame_embedded_in_a_torn_value_is_not_a_later_record() {
    let mut embedded = Vec::new();
    log::encode_record(&slot("inner", 1, Some("x"), 1), &mut embedded);
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
    let mut bytes = encode_log(&[]);
    log::encode_record(&outer, &mut bytes);
    // Cut the outer frame just after its embedded frame: the padding, the
    // version (one byte), the empty lists of remembered writes and of
    // writers (one byte each) and the trailing crc remain unwritten.
    let cut = bytes.len() - 4 - 1 - 1 - 1 - 3;
    assert_eq!(bytes[cut - embedded.len()..cut], embedded[..]);
    let got = log::recover(&bytes[..cut]).expect("torn tail");
    assert_eq!(got.records, vec![]);
    assert_eq!(got.torn_tail, Some(TornTail { offset: 16, bytes: cut as u64 - 16 }));
}

/// Random bytes, half of them behind a valid header so that frame decoding
/// is exercised, never panic, and whatever `recover` accepts is consistent:
/// the records re-encode to exactly the valid prefix.
#[test]
fn recover_never_panics_on_random_bytes() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    for i in 0..10_000 {
        let len = rng.below(300) as usize;
        let mut bytes = if i % 2 == 0 { log::encode_header() } else { Vec::new() };
        bytes.extend((0..len).map(|_| rng.next() as u8));
        if let Ok(got) = log::recover(&bytes) {
            accepted += 1;
            check_consistent(&bytes, &got);
        }
    }
    assert!(accepted >= 5_000, "headers were accepted {accepted} times");
}

/// Random damage to a valid log: recovery either refuses, or returns a
/// prefix of the records that were written.
#[test]
fn recover_never_panics_on_mutations_of_a_valid_log() {
    let records = sample_records(40);
    let original = encode_log(&records);
    let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
    for round in 0..5_000 {
        let mut bytes = original.clone();
        mutate(&mut rng, &mut bytes);
        match log::recover(&bytes) {
            Ok(got) => {
                check_consistent(&bytes, &got);
                assert!(!got.fresh || bytes.is_empty());
                let n = got.records.len();
                assert!(n <= records.len(), "round {round}");
                assert_eq!(got.records, records[..n], "round {round}");
            }
            Err(RecoveryError::Corrupt { offset }) => {
                assert!(offset >= HEADER_BYTES as u64 && offset < bytes.len() as u64)
            }
            Err(_) => {}
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

fn check_consistent(bytes: &[u8], got: &Recovered) {
    let valid = got.valid_len as usize;
    assert!(valid <= bytes.len());
    if got.fresh {
        assert!(bytes.is_empty());
        return;
    }
    assert_eq!(encode_log(&got.records), bytes[..valid]);
    match got.torn_tail {
        Some(torn) => {
            assert_eq!((torn.offset, torn.offset + torn.bytes), (got.valid_len, bytes.len() as u64))
        }
        None => assert_eq!(valid, bytes.len()),
    }
}

// ---------------------------------------------------------------------------
// LogFile: open, append, sync

#[test]
fn open_creates_a_log_with_only_a_header() {
    let dir = TempDir::new("create");
    let (log, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered, Recovered { records: vec![], valid_len: 0, torn_tail: None, fresh: true });
    assert_eq!(log.path(), dir.log_path());
    assert_eq!(log.len_bytes(), 16);
    assert_eq!(fs::read(dir.log_path()).expect("read"), log::encode_header());
    drop(log);
    let (_, reopened) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(reopened, clean(vec![], 16));
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
    assert!(recovered.fresh);
    assert_eq!(log.len_bytes(), 16);
    assert_eq!(fs::read(dir.log_path()).expect("read"), log::encode_header());
}

#[test]
fn reopen_after_sync_returns_exactly_the_records() {
    let dir = TempDir::new("roundtrip");
    let records = sample_records(500);
    write_synced_log(&dir, &records);
    let expected_len = encode_log(&records).len() as u64;
    assert_eq!(file_len(&dir.log_path()), expected_len);
    assert_eq!(fs::read(dir.log_path()).expect("read"), encode_log(&records));
    let (log, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered, clean(records, expected_len));
    assert_eq!(log.len_bytes(), expected_len);
}

#[test]
fn appends_after_reopen_continue_the_log() {
    let dir = TempDir::new("continue");
    let records = sample_records(10);
    write_synced_log(&dir, &records[..6]);
    write_synced_log(&dir, &records[6..]);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered.records, records);
}

#[test]
fn one_sync_commits_every_append_since_the_last() {
    let dir = TempDir::new("groupcommit");
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let records = sample_records(8);
    for rec in &records[..5] {
        log.append(rec).expect("append");
    }
    let pending: u64 = records[..5].iter().map(log::record_len).sum();
    assert_eq!(log.len_bytes(), 16 + pending);
    assert_eq!(file_len(&dir.log_path()), 16, "appends are buffered until sync");
    log.sync().expect("sync");
    assert_eq!(file_len(&dir.log_path()), 16 + pending);
    for rec in &records[5..] {
        log.append(rec).expect("append");
    }
    log.sync().expect("sync");
    log.sync().expect("a sync with nothing pending is fine");
    assert_eq!(log.len_bytes(), file_len(&dir.log_path()));
    drop(log);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered.records, records);
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
    assert_eq!(recovered, clean(records[..3].to_vec(), synced_bytes.len() as u64));
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
    log.append(&slot("small", 1, None, 1)).expect("later appends still work");
    log.sync().expect("sync");
}

// ---------------------------------------------------------------------------
// LogFile: torn tails and corruption on disk

#[test]
fn torn_tail_is_truncated_and_the_next_open_is_clean() {
    let records = sample_records(6);
    let offsets = frame_offsets(&records);
    let last = offsets[5];
    let full = encode_log(&records).len() as u64;
    let payload_mid = last + 8 + (full - last - 12) / 2;
    // Inside the length, inside its crc, inside the payload, inside the
    // trailing crc.
    for cut in [last + 2, last + 6, payload_mid, full - 2] {
        let dir = TempDir::new("torn");
        write_synced_log(&dir, &records);
        let file = fs::OpenOptions::new().write(true).open(dir.log_path()).expect("open");
        file.set_len(cut).expect("cut");
        drop(file);

        let (log, recovered) = LogFile::open(dir.path()).expect("torn tail is recovered");
        let torn = TornTail { offset: last, bytes: cut - last };
        let expected = Recovered {
            records: records[..5].to_vec(),
            valid_len: last,
            torn_tail: Some(torn),
            fresh: false,
        };
        assert_eq!(recovered, expected, "cut at {cut}");
        assert_eq!(file_len(&dir.log_path()), last, "file truncated to the valid length");
        assert_eq!(log.len_bytes(), last);
        drop(log);

        let (_, again) = LogFile::open(dir.path()).expect("second open");
        assert_eq!(again, clean(records[..5].to_vec(), last), "cut at {cut}");
    }
}

#[test]
fn appends_after_a_truncated_torn_tail_are_readable() {
    let dir = TempDir::new("tornappend");
    let records = sample_records(4);
    write_synced_log(&dir, &records);
    let len = file_len(&dir.log_path());
    let file = fs::OpenOptions::new().write(true).open(dir.log_path()).expect("open");
    file.set_len(len - 3).expect("cut");
    drop(file);
    let (mut log, _) = LogFile::open(dir.path()).expect("open");
    let extra = slot("after-crash", 9, Some("v"), 9);
    log.append(&extra).expect("append");
    log.sync().expect("sync");
    drop(log);
    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered.records, [&records[..3], &[extra]].concat());
    assert_eq!(recovered.torn_tail, None);
}

#[test]
fn flipped_byte_in_an_early_record_refuses_to_open() {
    let records = sample_records(6);
    let offsets = frame_offsets(&records);
    let damaged_frame = offsets[2];
    // In the length, the length crc, the payload and the trailing crc.
    for at in [damaged_frame + 1, damaged_frame + 5, damaged_frame + 9, offsets[3] - 1] {
        let dir = TempDir::new("corrupt");
        write_synced_log(&dir, &records);
        flip_byte(&dir.log_path(), at);
        let before = fs::read(dir.log_path()).expect("read");

        let err = LogFile::open(dir.path()).expect_err("corrupt log must not open");
        match &err {
            LogError::Corrupt { path, offset } => {
                assert_eq!((path, *offset), (&dir.log_path(), damaged_frame), "flip at {at}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains(&dir.log_path().display().to_string()), "{message}");
        assert!(message.contains(&format!("byte offset {damaged_frame}")), "{message}");
        assert!(message.contains("refuses to start"), "{message}");
        assert_eq!(fs::read(dir.log_path()).expect("read"), before, "nothing was truncated");
    }
}

#[test]
fn flipped_byte_in_the_last_record_is_a_torn_tail() {
    let dir = TempDir::new("lastflip");
    let records = sample_records(6);
    write_synced_log(&dir, &records);
    let last = frame_offsets(&records)[5];
    let len = file_len(&dir.log_path());
    flip_byte(&dir.log_path(), last + 10);
    let (_, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered.records, records[..5]);
    assert_eq!(recovered.torn_tail, Some(TornTail { offset: last, bytes: len - last }));
    assert_eq!(file_len(&dir.log_path()), last);
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
    let mut bytes = encode_log(&records);
    let garbage_at = bytes.len() as u64;
    bytes.extend_from_slice(&[0xFF; 8]); // length u32::MAX with a wrong crc
    bytes.extend_from_slice(&[0x00; 100]);
    fs::write(dir.log_path(), &bytes).expect("write");
    let (_, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered.records, records);
    assert_eq!(recovered.torn_tail, Some(TornTail { offset: garbage_at, bytes: 108 }));
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
            Record::Fence { .. } | Record::CatchingUp | Record::CaughtUp => {}
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
    assert_eq!(log.len_bytes(), 16 + live_bytes);
    assert_eq!(file_len(&dir.log_path()), 16 + live_bytes);
    assert!(!log.should_compact(live_bytes));
    assert!(!dir.path().join(COMPACT_FILE_NAME).exists());

    // Appends continue in the compacted file.
    let extra = slot("key-3", 2000, Some("newest"), 2000);
    log.append(&extra).expect("append");
    log.sync().expect("sync");
    drop(log);
    written.push(extra.clone());

    let (_, recovered) = LogFile::open(dir.path()).expect("reopen");
    assert_eq!(recovered.records.len(), 12);
    assert_eq!(recovered.records[..11], live[..]);
    assert_eq!(replay(&recovered.records), replay(&written));
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
    let pending = log.len_bytes() - 16;
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
    write_synced_log(&dir, &records);
    // A compaction that stopped halfway: a header and part of a frame.
    let mut partial = encode_log(&records[18..]);
    partial.truncate(partial.len() - 5);
    fs::write(dir.path().join(COMPACT_FILE_NAME), &partial).expect("write");

    let (log, recovered) = LogFile::open(dir.path()).expect("open");
    assert_eq!(recovered, clean(records.clone(), encode_log(&records).len() as u64));
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
    assert!(message.contains("must not rejoin as if it were empty"), "{message}");
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
