//! The acceptor's append-only record log: byte layout, recovery, and the
//! file that implements `Storage`.
//!
//! # Byte layout (format version 4)
//!
//! All integers are little-endian; every CRC is CRC-32 (IEEE, `crc32fast`).
//!
//! File header, 16 bytes, written once when the log is created:
//!
//! | offset | size | field                                 |
//! |--------|------|---------------------------------------|
//! | 0      | 8    | magic `b"PXDLOG\0\x01"`               |
//! | 8      | 4    | format version (`FORMAT_VERSION`)     |
//! | 12     | 4    | crc32 of bytes 0..12                  |
//!
//! Then units, back to back until the end of the file. A unit is what one
//! `sync` wrote: the records appended since the sync before, in one write
//! made durable by one fdatasync (group commit).
//!
//! | offset  | size | field                                                  |
//! |---------|------|--------------------------------------------------------|
//! | 0       | 4    | body length `n`                                        |
//! | 4       | 4    | crc32 of bytes 0..4 (the length)                       |
//! | 8       | 8    | sequence number: 1 for the file's first unit, then +1 |
//! | 16      | n    | body: frames, back to back, one per record             |
//! | 16 + n  | 4    | crc32 of bytes 0..16+n                                 |
//!
//! A frame, inside a body:
//!
//! | offset  | size | field                                        |
//! |---------|------|----------------------------------------------|
//! | 0       | 4    | payload length `m`                           |
//! | 4       | 4    | crc32 of bytes 0..4 (the length)             |
//! | 8       | m    | payload: the postcard encoding of a `Record` |
//! | 8 + m   | 4    | crc32 of bytes 0..8+m                        |
//!
//! A unit is valid when its length, its CRCs and its sequence number check
//! out and its body is exactly a sequence of valid frames. Lengths have their
//! own CRC so that a damaged length is detected before it is used to find
//! the rest, and a body may not exceed `limits::LOG_UNIT_BYTES_MAX` nor a
//! payload `limits::RECORD_BYTES_MAX`, so a length is never trusted to size
//! a read or an allocation. Frames are the whole of a version 1 log (see
//! below), which is why they keep their own CRCs inside a unit.
//!
//! # Recovery
//!
//! `recover` decodes the units in order. At the first unit that does not
//! check out it decides between two stories:
//! - a damaged last unit: no valid unit follows it. Either the node stopped
//!   while writing it (it was never synced, and nothing depended on it), or
//!   it was synced and has been damaged since (a bad block, a disk that
//!   acknowledged a flush it had not done), and then promises or accepts
//!   that the node acknowledged are gone. The file alone cannot tell which.
//!   The unit is reported in `Recovered::torn_tail` and the records before
//!   it are the log; a caller that sees `torn_tail` must treat the node as
//!   one that may have lost acknowledged state (and catch up from a majority
//!   of its peers before it votes again).
//! - corruption: a valid unit follows the bad one, so the bad one was once
//!   complete and synced, and more was synced after it. Dropping it could
//!   make the acceptor break a promise, so recovery refuses.
//!
//! To decide, recovery scans forward from the bad unit, byte by byte, for
//! any offset where a valid unit starts whose sequence number is above the
//! last good one (a stale copy of an earlier unit is no evidence of later
//! writes). When the bad unit's length itself checks out, the scan starts
//! after the unit (its body may hold a value that looks like a unit), and a
//! unit that runs past the end of the file has nothing after it.
//!
//! Since one sync writes one unit, a power loss that persisted the blocks of
//! the last write out of order (zeros, then intact blocks, or the other way
//! round) damages only the last unit: the blocks that did land are pieces of
//! one unit, never a unit of their own, so recovery cuts it as a damaged
//! last unit and returns no record from it. (One exception is possible: if
//! the lost blocks held the unit's length and a value in the unit holds the
//! bytes of a whole valid unit with a higher sequence number, recovery
//! reports corruption. Refusing to start is the safe mistake.)
//!
//! An empty input (0 bytes) is not an error: it is a log whose header was
//! never written, reported with `Recovered::fresh` set.
//!
//! # Versions 1, 2 and 3
//!
//! A version 3 log has the layout above and today's records, without
//! `Record::AbsentFloor`, which the version number keeps older builds from
//! reading (they refuse the log rather than misread it).
//!
//! A version 2 log has the layout above; its records are of the shape they
//! had before register states kept a watched key's history, and `log_v2`
//! reads them (as states without history). Recovery works as for version 4.
//!
//! Logs of format version 1 hold frames right after the header, without
//! units, and records of an older shape (ballots had no epoch); `log_v1`
//! reads them. Recovery of such a log works frame by frame with the rules
//! above (a bad frame followed by a valid one is corruption, else the bad
//! frames are the torn tail). `LogFile::open` rewrites a version 1, 2 or 3
//! log as a version 4 one before it appends anything.
//!
//! The functions over bytes (`encode_header`, `encode_record`,
//! `encode_unit`, `recover`, `record_len`) do no I/O, so the simulator's
//! in-memory disk writes and reads its log with the same code.

use crate::limits;
use crate::storage::{Record, Storage, Synced};
use serde::de::DeserializeOwned;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

// In a file of its own, but a child module: it shares the private frame
// decoding.
#[path = "log_v1.rs"]
mod log_v1;
#[path = "log_v2.rs"]
mod log_v2;

/// First bytes of every log file.
pub const MAGIC: [u8; 8] = *b"PXDLOG\0\x01";
/// The unit layout described above.
pub const FORMAT_VERSION: u32 = 4;
/// The frame-only layout of the first release, still read (see `log_v1`).
pub const FORMAT_VERSION_FRAMES: u32 = 1;
/// Units of records without a watched key's history, still read (see
/// `log_v2`).
pub const FORMAT_VERSION_NO_HISTORY: u32 = 2;
/// Units of records before `Record::AbsentFloor`, still read: the record
/// types are today's but for that variant, which comes last in the enum,
/// so their bytes decode as today's.
pub const FORMAT_VERSION_NO_ABSENT_FLOOR: u32 = 3;
/// Size of the file header.
pub const HEADER_BYTES: usize = 16;
/// Bytes a frame adds around its payload: length, length CRC, frame CRC.
pub const FRAME_OVERHEAD_BYTES: usize = 12;
/// Bytes a unit adds around its body: length, length CRC, sequence number,
/// unit CRC.
pub const UNIT_OVERHEAD_BYTES: usize = 20;

/// Name of the log inside the data dir.
pub const LOG_FILE_NAME: &str = "acceptor.log";
/// Name of the file a compaction (or the creation of a log) writes before
/// renaming it over `LOG_FILE_NAME`.
pub const COMPACT_FILE_NAME: &str = "acceptor.log.compact";

/// Compaction writes the new file in units of about this size, so the live
/// state is not encoded into one buffer of its own size.
const COMPACT_CHUNK_BYTES: usize = 1024 * 1024;

const LENGTH_BYTES: usize = 4;
const CRC_BYTES: usize = 4;
const SEQ_BYTES: usize = 8;
const PREFIX_BYTES: usize = LENGTH_BYTES + CRC_BYTES;
const UNIT_PREFIX_BYTES: usize = PREFIX_BYTES + SEQ_BYTES;

const _: () = assert!(PREFIX_BYTES + CRC_BYTES == FRAME_OVERHEAD_BYTES);
const _: () = assert!(UNIT_PREFIX_BYTES + CRC_BYTES == UNIT_OVERHEAD_BYTES);
const _: () = assert!(MAGIC.len() + 4 + CRC_BYTES == HEADER_BYTES);
const _: () = assert!(limits::RECORD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(limits::LOG_UNIT_BYTES_MAX <= u32::MAX as usize);
// A unit holds the largest record, and a compaction chunk (which may end
// with one) never needs a unit above the limit.
const _: () = assert!(
    COMPACT_CHUNK_BYTES + limits::RECORD_BYTES_MAX + FRAME_OVERHEAD_BYTES <= limits::LOG_UNIT_BYTES_MAX
);

/// The file header for a new log.
pub fn encode_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Appends the frame of `rec` to `out`: a unit's body is such frames.
///
/// # Panics
/// If the record's payload is larger than `limits::RECORD_BYTES_MAX`. Keys
/// and values are checked against their limits long before they reach the
/// log, so this is a bug in the caller; writing the frame anyway would make
/// a log that recovery refuses. `LogFile::append` returns an error instead.
pub fn encode_record(rec: &Record, out: &mut Vec<u8>) {
    if let Err(e) = encode_frame(rec, out) {
        panic!("cannot encode a log record: {e}");
    }
}

/// Size of `rec`'s frame in the log, so callers can track the live bytes
/// that `LogFile::should_compact` compares the log against.
pub fn record_len(rec: &Record) -> u64 {
    // Serializing to a counting sink cannot fail for `Record`, whose fields
    // are all plain data; 0 would only make compaction a little early.
    let payload = postcard::experimental::serialized_size(rec).unwrap_or(0);
    (payload + FRAME_OVERHEAD_BYTES) as u64
}

/// Appends to `out` the unit numbered `seq` whose body is `frames` (what
/// `encode_record` wrote, for each record of one sync).
///
/// # Panics
/// If `frames` is longer than `limits::LOG_UNIT_BYTES_MAX`: recovery would
/// refuse the unit. `LogFile::append` refuses a record that would make the
/// pending unit too long, so only a caller's bug gets here.
pub fn encode_unit(seq: u64, frames: &[u8], out: &mut Vec<u8>) {
    assert!(frames.len() <= limits::LOG_UNIT_BYTES_MAX, "log unit of {} bytes", frames.len());
    let start = out.len();
    let length = (frames.len() as u32).to_le_bytes();
    out.extend_from_slice(&length);
    out.extend_from_slice(&crc32fast::hash(&length).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(frames);
    let unit_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&unit_crc.to_le_bytes());
}

/// Appends the frame of `rec` to `out`, or leaves `out` as it was and
/// returns an error.
fn encode_frame(rec: &Record, out: &mut Vec<u8>) -> Result<(), LogError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; PREFIX_BYTES]);
    let encoded = postcard::to_io(rec, &mut *out).map(|_| ());
    let payload_bytes = out.len() - start - PREFIX_BYTES;
    if encoded.is_err() || payload_bytes > limits::RECORD_BYTES_MAX {
        out.truncate(start);
        return Err(LogError::RecordTooLarge { bytes: payload_bytes as u64 });
    }
    let length = (payload_bytes as u32).to_le_bytes();
    out[start..start + LENGTH_BYTES].copy_from_slice(&length);
    let length_crc = crc32fast::hash(&length).to_le_bytes();
    out[start + LENGTH_BYTES..start + PREFIX_BYTES].copy_from_slice(&length_crc);
    let frame_crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&frame_crc.to_le_bytes());
    Ok(())
}

/// What `recover` found in a log's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Every valid record, in the order they were appended.
    pub records: Vec<Record>,
    /// Length of the valid prefix: the header and every valid unit (frame,
    /// in a version 1 log). Bytes after it are the torn tail, if any.
    pub valid_len: u64,
    /// The damaged last unit (in a version 1 log: the damaged frames at the
    /// end), cut off. It may be a write torn by a crash, never synced, or a
    /// synced unit damaged since (`TailKind`). For the second,
    /// `LogFile::open` replaces it with `Record::CatchingUp`, and `records`
    /// ends with that record.
    pub torn_tail: Option<TornTail>,
    /// True when there were no bytes at all (no header yet): a log that was
    /// never written, which `LogFile::open` initialises. `valid_len` is then
    /// 0 and there are no records.
    pub fresh: bool,
    /// The format version of the bytes: `FORMAT_VERSION`, or an older one
    /// (`FORMAT_VERSION_FRAMES`, `FORMAT_VERSION_NO_HISTORY`) for a log
    /// `LogFile::open` rewrites. A fresh log counts as `FORMAT_VERSION`.
    pub version: u32,
    /// Sequence number of the last valid unit, 0 when there is none (and
    /// always in a version 1 log): the next unit written is numbered one
    /// more.
    pub last_seq: u64,
}

impl Recovered {
    fn fresh() -> Recovered {
        Recovered {
            records: Vec::new(),
            valid_len: 0,
            torn_tail: None,
            fresh: true,
            version: FORMAT_VERSION,
            last_seq: 0,
        }
    }
}

/// The bytes recovery cut off the end of a log: where they begin, how many
/// there are, and what they may have held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub offset: u64,
    pub bytes: u64,
    pub kind: TailKind,
}

/// What a damaged last unit may have been.
///
/// A unit is written by one write and made durable by one fdatasync, after
/// which every byte of it is on disk. So a unit the file ends inside (its
/// checked length runs past the end, or fewer bytes are left than the
/// smallest unit) was never synced: nothing the node acknowledged depended
/// on it. Any other damage (a bad CRC, a garbled length with the bytes all
/// there, a wrong sequence number) may be a synced unit damaged since, or a
/// write whose blocks landed out of order: the file cannot tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TailKind {
    /// Cut short: never synced, safe to drop.
    Cut,
    /// Complete in length but damaged: it may have held promises or
    /// accepts the node acknowledged, so the node must catch up from its
    /// peers before it votes (`core::rejoin`).
    Damaged,
}

impl TailKind {
    /// The kind of a bad unit (or frame) at the end, `remaining` bytes
    /// long, given why it failed and the smallest it could be.
    fn of(fault: Fault, remaining: usize, smallest: usize) -> TailKind {
        if fault == Fault::Incomplete || remaining < smallest { TailKind::Cut } else { TailKind::Damaged }
    }
}

impl Recovered {
    /// True when the log may have lost state the node acknowledged: its
    /// last unit is damaged, not merely cut short.
    pub fn may_have_lost_acknowledged_state(&self) -> bool {
        self.torn_tail.is_some_and(|t| t.kind == TailKind::Damaged)
    }
}

/// Why a log's bytes cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryError {
    /// The file is shorter than a header, or the header's magic or CRC is
    /// wrong: this is not a paxosd log, or its first bytes are damaged.
    BadHeader,
    /// A valid header of a format this build does not read.
    UnsupportedVersion { version: u32 },
    /// The unit (in a version 1 log, the frame) at `offset` is damaged and
    /// a valid one follows it.
    Corrupt { offset: u64 },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::BadHeader => write!(f, "missing or damaged log header"),
            RecoveryError::UnsupportedVersion { version } => write!(
                f,
                "log format version {version} is not supported (this build reads versions \
                 {FORMAT_VERSION_FRAMES} to {FORMAT_VERSION})"
            ),
            RecoveryError::Corrupt { offset } => {
                write!(f, "damaged records at byte offset {offset}, followed by valid records")
            }
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Decodes a whole log. Whatever the bytes, it never panics and never sizes
/// a read or an allocation from a length that has not been checked.
pub fn recover(bytes: &[u8]) -> Result<Recovered, RecoveryError> {
    if bytes.is_empty() {
        return Ok(Recovered::fresh());
    }
    match check_header(bytes)? {
        FORMAT_VERSION_FRAMES => log_v1::recover_frames(bytes),
        FORMAT_VERSION_NO_HISTORY => recover_units::<log_v2::RecordV2>(bytes, FORMAT_VERSION_NO_HISTORY),
        FORMAT_VERSION_NO_ABSENT_FLOOR => recover_units::<Record>(bytes, FORMAT_VERSION_NO_ABSENT_FLOOR),
        _ => recover_units::<Record>(bytes, FORMAT_VERSION),
    }
}

/// Recovers a log of units whose frames hold records of the shape `R`
/// (today's, or an older one that converts), of format `version`.
fn recover_units<R: DeserializeOwned + Into<Record>>(
    bytes: &[u8],
    version: u32,
) -> Result<Recovered, RecoveryError> {
    let mut records = Vec::with_capacity(records_reserved(bytes.len()));
    let mut offset = HEADER_BYTES;
    let mut last_seq = 0u64;
    let mut torn_tail = None;
    while offset < bytes.len() {
        let decoded_from = records.len();
        match decode_unit::<R>(bytes, offset, &mut records) {
            Ok(unit) if unit.seq == last_seq + 1 => {
                last_seq = unit.seq;
                offset = unit.end;
            }
            decoded => {
                records.truncate(decoded_from);
                // A unit out of sequence is as untrustworthy as a bad CRC,
                // but its extent is known.
                let fault = decoded.map_or_else(|fault| fault, |unit| Fault::Bad { end: unit.end });
                if valid_unit_from::<R>(bytes, fault.rescan_from(offset), last_seq) {
                    return Err(RecoveryError::Corrupt { offset: offset as u64 });
                }
                let remaining = bytes.len() - offset;
                let kind = TailKind::of(fault, remaining, UNIT_OVERHEAD_BYTES);
                torn_tail = Some(TornTail { offset: offset as u64, bytes: remaining as u64, kind });
                break;
            }
        }
    }
    let valid_len = offset as u64;
    Ok(Recovered { records, valid_len, torn_tail, fresh: false, version, last_seq })
}

/// Room for the records of a log of `len` bytes, sized for the usual record
/// (a key, a small value and its remembered writes), so a large log is not
/// copied over and over as it grows.
fn records_reserved(len: usize) -> usize {
    (len / 128).min(limits::RECOVERY_RECORDS_RESERVED_MAX)
}

/// Checks the header and returns the format version, one this build reads.
fn check_header(bytes: &[u8]) -> Result<u32, RecoveryError> {
    let header = bytes.get(..HEADER_BYTES).ok_or(RecoveryError::BadHeader)?;
    let (body, crc) = header.split_at(HEADER_BYTES - CRC_BYTES);
    if read_u32(crc, 0) != Some(crc32fast::hash(body)) || body[..MAGIC.len()] != MAGIC {
        return Err(RecoveryError::BadHeader);
    }
    match read_u32(body, MAGIC.len()) {
        Some(
            version @ (FORMAT_VERSION
            | FORMAT_VERSION_NO_ABSENT_FLOOR
            | FORMAT_VERSION_NO_HISTORY
            | FORMAT_VERSION_FRAMES),
        ) => Ok(version),
        Some(version) => Err(RecoveryError::UnsupportedVersion { version }),
        None => Err(RecoveryError::BadHeader),
    }
}

/// Why the unit or frame at some offset is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// The length, its CRC, or the bound on it is bad (or cut short): the
    /// extent is unknown.
    BadLength,
    /// The length checks out but the unit or frame runs past the end of the
    /// bytes.
    Incomplete,
    /// The length checks out and the unit or frame is complete, but a CRC
    /// is wrong or what it holds does not decode (or, for a unit, its
    /// sequence number is not the next one). It ends at `end`.
    Bad { end: usize },
}

impl Fault {
    /// Where to look for a valid unit or frame after a bad one at `offset`.
    /// When the length is trustworthy, the bytes inside are its own (a value
    /// may well contain bytes that look like a unit or a frame), so the
    /// search starts after them; one running past the end has nothing after
    /// it at all.
    fn rescan_from(self, offset: usize) -> usize {
        match self {
            Fault::BadLength => offset + 1,
            Fault::Incomplete => usize::MAX,
            Fault::Bad { end } => end,
        }
    }
}

/// A unit that checked out, but for its sequence number.
struct Unit {
    seq: u64,
    end: usize,
}

/// Decodes the unit starting at `offset`, appending its records to
/// `records` (some may be appended even when it fails).
fn decode_unit<R: DeserializeOwned + Into<Record>>(
    bytes: &[u8],
    offset: usize,
    records: &mut Vec<Record>,
) -> Result<Unit, Fault> {
    let (body_start, crc_start, end) =
        checked_extent(bytes, offset, UNIT_PREFIX_BYTES, limits::LOG_UNIT_BYTES_MAX)?;
    let bad = Fault::Bad { end };
    let seq = read_u64(bytes, offset + PREFIX_BYTES).ok_or(bad)?;
    let body = &bytes[body_start..crc_start];
    let mut at = 0;
    while at < body.len() {
        let (record, next) = decode_frame::<R>(body, at).map_err(|_| bad)?;
        records.push(record.into());
        at = next;
    }
    Ok(Unit { seq, end })
}

/// Whether a valid unit numbered above `last_seq` starts at any offset from
/// `start` on. Linear in the bytes scanned: most offsets fail the 4-byte
/// length CRC.
fn valid_unit_from<R: DeserializeOwned + Into<Record>>(bytes: &[u8], start: usize, last_seq: u64) -> bool {
    let last_start = bytes.len().saturating_sub(UNIT_OVERHEAD_BYTES);
    let mut scratch = Vec::new();
    (start..=last_start).any(|offset| {
        scratch.clear();
        decode_unit::<R>(bytes, offset, &mut scratch).is_ok_and(|unit| unit.seq > last_seq)
    })
}

/// Where the unit or frame at `offset` (its prefix `prefix_bytes` long,
/// its length at most `max`) keeps what it holds, where its CRC starts and
/// where it ends, once its length and its CRC check out.
fn checked_extent(
    bytes: &[u8],
    offset: usize,
    prefix_bytes: usize,
    max: usize,
) -> Result<(usize, usize, usize), Fault> {
    let length = checked_length(bytes, offset, max)?;
    let start = offset + prefix_bytes;
    let crc_start = start + length;
    let end = crc_start + CRC_BYTES;
    if end > bytes.len() {
        return Err(Fault::Incomplete);
    }
    if read_u32(bytes, crc_start) != Some(crc32fast::hash(&bytes[offset..crc_start])) {
        return Err(Fault::Bad { end });
    }
    Ok((start, crc_start, end))
}

/// The length at `offset` if it, its CRC and its bound check out.
fn checked_length(bytes: &[u8], offset: usize, max: usize) -> Result<usize, Fault> {
    let length = read_u32(bytes, offset).ok_or(Fault::BadLength)?;
    let length_crc = read_u32(bytes, offset + LENGTH_BYTES).ok_or(Fault::BadLength)?;
    if crc32fast::hash(&length.to_le_bytes()) != length_crc || length as usize > max {
        return Err(Fault::BadLength);
    }
    Ok(length as usize)
}

/// Decodes the frame starting at `offset` as a `T`; on success returns it
/// and the offset just after the frame.
fn decode_frame<T: DeserializeOwned>(bytes: &[u8], offset: usize) -> Result<(T, usize), Fault> {
    let (payload_start, crc_start, end) =
        checked_extent(bytes, offset, PREFIX_BYTES, limits::RECORD_BYTES_MAX)?;
    let bad = Fault::Bad { end };
    match postcard::take_from_bytes::<T>(&bytes[payload_start..crc_start]) {
        Ok((value, [])) => Ok((value, end)),
        // Trailing bytes mean the writer and this reader disagree about the
        // encoding: as untrustworthy as a payload that does not decode.
        Ok(_) | Err(_) => Err(bad),
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let word: [u8; 4] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let end = offset.checked_add(8)?;
    let word: [u8; 8] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(word))
}

/// Errors of the log file, with the file and the operation that failed.
#[derive(Debug)]
pub enum LogError {
    /// A system call failed.
    Io { path: PathBuf, op: &'static str, source: io::Error },
    /// The file is not a paxosd log, or its header is damaged.
    BadHeader { path: PathBuf },
    /// The log was written in a format this build does not read.
    UnsupportedVersion { path: PathBuf, version: u32 },
    /// Damaged records with valid records after them.
    Corrupt { path: PathBuf, offset: u64 },
    /// A record whose payload exceeds `limits::RECORD_BYTES_MAX`.
    RecordTooLarge { bytes: u64 },
    /// An append that would make the records pending for the next sync
    /// exceed `limits::LOG_UNIT_BYTES_MAX`.
    UnitTooLarge { bytes: u64 },
    /// `compact` was called with appended records not yet synced.
    UnsyncedAppends { path: PathBuf, bytes: u64 },
    /// An earlier write or fsync failed; the log accepts no more calls.
    Poisoned { path: PathBuf, op: &'static str },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { path, op, source } => {
                write!(f, "acceptor log {}: {op} failed: {source}", path.display())
            }
            LogError::BadHeader { path } => write!(
                f,
                "acceptor log {} has a missing or damaged header: it is not a paxosd log or its \
                 first bytes are damaged; refusing to start",
                path.display()
            ),
            LogError::UnsupportedVersion { path, version } => write!(
                f,
                "acceptor log {} has format version {version}, this build reads versions \
                 {FORMAT_VERSION_FRAMES} to {FORMAT_VERSION}; refusing to start",
                path.display()
            ),
            LogError::Corrupt { path, offset } => write!(
                f,
                "acceptor log {} is corrupt: the records at byte offset {offset} are damaged and \
                 valid records follow them, so this is not a write torn by a crash. The log holds \
                 this acceptor's promises, and dropping any could break one; the node refuses to \
                 start. See the README section \"Replacing a node's data\"",
                path.display()
            ),
            LogError::RecordTooLarge { bytes } => write!(
                f,
                "log record of {bytes} bytes exceeds the limit of {} bytes",
                limits::RECORD_BYTES_MAX
            ),
            LogError::UnitTooLarge { bytes } => write!(
                f,
                "{bytes} bytes of log records pending for one sync exceed the limit of {} bytes",
                limits::LOG_UNIT_BYTES_MAX
            ),
            LogError::UnsyncedAppends { path, bytes } => write!(
                f,
                "acceptor log {}: cannot compact with {bytes} appended bytes not yet synced",
                path.display()
            ),
            LogError::Poisoned { path, op } => write!(
                f,
                "acceptor log {}: an earlier {op} failed, so what is on disk is unknown; the log \
                 accepts no more writes",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { path, op, source }
}

/// The acceptor log on disk: `acceptor.log` in the data dir.
///
/// Appends are buffered in memory; `sync` writes them as one unit and
/// fdatasyncs, one sync for every append since the last (group commit).
/// After a failed write or fsync the log is poisoned: the kernel may have
/// dropped the dirty pages and cleared the error (PostgreSQL's
/// "fsyncgate"), so retrying could report success for data that is gone.
/// Every later call fails and the daemon exits; the next start recovers
/// from what really is on disk.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    /// Opened in append mode: every write lands at the end of the file.
    file: File,
    /// Bytes in the file, all of them synced.
    synced_len: u64,
    /// Sequence number of the file's last unit (0: none yet).
    last_seq: u64,
    /// Frames appended since the last sync: the body of the next unit.
    pending: Vec<u8>,
    /// The operation whose failure poisoned the log.
    poisoned: Option<&'static str>,
}

impl LogFile {
    /// Opens `dir/acceptor.log`, creating it if missing, and recovers it.
    ///
    /// A damaged last unit is cut off (and a warning logged); the caller
    /// learns of it from `Recovered::torn_tail`. A damaged log, a bad header
    /// or an unknown format version is an error: the node must not start on
    /// it. A log of an older format is rewritten in the current one, the way
    /// compaction writes a log. A leftover `acceptor.log.compact` from an
    /// interrupted compaction is deleted; the log it was meant to replace is
    /// complete.
    ///
    /// The returned `Recovered` describes the file as found; a missing or
    /// empty file is reported as `fresh`.
    pub fn open(dir: &Path) -> Result<(LogFile, Recovered), LogError> {
        remove_leftover_compaction(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        let Some((file, bytes)) = read_log(&path)? else {
            return LogFile::create(dir);
        };
        let recovered = recover(&bytes).map_err(|e| recovery_error(&path, e))?;
        if recovered.fresh {
            // Logs are created by renaming a complete file into place, so
            // an empty one was not made by paxosd; it holds nothing to keep.
            log::warn!("acceptor log {} is empty; writing a new header", path.display());
            return LogFile::create(dir);
        }
        if let Some(torn) = recovered.torn_tail {
            warn_torn_tail(&path, torn);
        }
        if recovered.may_have_lost_acknowledged_state() {
            // Dropping the unit and recording that the node must catch up
            // are one step (a rename): with a crash between two steps, the
            // next start would find a log that looks whole, and vote.
            let mut recovered = recovered;
            recovered.records.push(Record::CatchingUp);
            return LogFile::rewrite(dir, recovered);
        }
        if recovered.version != FORMAT_VERSION {
            return LogFile::rewrite(dir, recovered);
        }
        if let Some(torn) = recovered.torn_tail {
            truncate_torn_tail(&file, &path, torn)?;
        }
        let log = LogFile::at(dir, file, recovered.valid_len, recovered.last_seq);
        Ok((log, recovered))
    }

    fn at(dir: &Path, file: File, synced_len: u64, last_seq: u64) -> LogFile {
        LogFile {
            dir: dir.to_path_buf(),
            path: dir.join(LOG_FILE_NAME),
            file,
            synced_len,
            last_seq,
            pending: Vec::new(),
            poisoned: None,
        }
    }

    /// Creates a new, empty log the way compaction writes one, so that
    /// `acceptor.log` never exists without a complete header.
    fn create(dir: &Path) -> Result<(LogFile, Recovered), LogError> {
        let written = write_replacement(dir, std::iter::empty())?;
        let log = LogFile::at(dir, written.file, written.len, written.last_seq);
        Ok((log, Recovered::fresh()))
    }

    /// A new log holding only `Record::CatchingUp`, for a node that starts
    /// over (its data dir was lost, or its damaged log moved aside): written
    /// the way compaction writes a log, so that no log exists, even after a
    /// crash, that does not say the node must catch up.
    pub fn start_over(dir: &Path) -> Result<(LogFile, Recovered), LogError> {
        let written = write_replacement(dir, std::iter::once(Record::CatchingUp))?;
        let log = LogFile::at(dir, written.file, written.len, written.last_seq);
        Ok((log, Recovered { records: vec![Record::CatchingUp], ..Recovered::fresh() }))
    }

    /// Rewrites the log, recovered as `recovered`, the way compaction writes
    /// one: for a log of an older format (so that appends only ever go to a
    /// file of the current format), and for one whose damaged last unit is
    /// replaced by `Record::CatchingUp` (`recovered` ends with it). A torn
    /// tail goes with the old file.
    fn rewrite(dir: &Path, recovered: Recovered) -> Result<(LogFile, Recovered), LogError> {
        let written = write_replacement(dir, recovered.records.iter().cloned())?;
        let path = dir.join(LOG_FILE_NAME);
        if recovered.version != FORMAT_VERSION {
            log::info!(
                "acceptor log {}: rewrote format version {} as version {FORMAT_VERSION} ({} records)",
                path.display(),
                recovered.version,
                recovered.records.len()
            );
        } else {
            log::info!("acceptor log {}: rewrote without its damaged last unit", path.display());
        }
        let log = LogFile::at(dir, written.file, written.len, written.last_seq);
        Ok((log, recovered))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the log once the appended, not yet synced records are
    /// synced.
    pub fn len_bytes(&self) -> u64 {
        let pending = if self.pending.is_empty() { 0 } else { self.pending.len() + UNIT_OVERHEAD_BYTES };
        self.synced_len + pending as u64
    }

    /// Whether the log is worth compacting, given the framed size of the
    /// live records (the sum of `record_len` over them): it is larger than
    /// `limits::COMPACT_BYTES_MIN` and more than `limits::COMPACT_RATIO`
    /// times the live size.
    pub fn should_compact(&self, live_bytes: u64) -> bool {
        let len = self.len_bytes();
        len > limits::COMPACT_BYTES_MIN && len > live_bytes.saturating_mul(limits::COMPACT_RATIO)
    }

    /// Replaces the log with one holding only `live`: writes
    /// `acceptor.log.compact`, syncs it, renames it over `acceptor.log` and
    /// syncs the directory. Later appends go to the new file.
    ///
    /// Must be called right after a `sync`: with unsynced appends pending it
    /// returns `LogError::UnsyncedAppends` and changes nothing, because the
    /// caller has not yet decided those records are durable. A failure
    /// before the rename leaves the old log in use and intact; a failure of
    /// the rename or the directory sync poisons the log, since which file
    /// the directory names after a crash is then unknown.
    pub fn compact(&mut self, live: impl Iterator<Item = Record>) -> Result<(), LogError> {
        self.check_poisoned()?;
        if !self.pending.is_empty() {
            let bytes = self.pending.len() as u64;
            return Err(LogError::UnsyncedAppends { path: self.path.clone(), bytes });
        }
        match write_replacement(&self.dir, live) {
            Ok(written) => {
                self.file = written.file;
                self.synced_len = written.len;
                self.last_seq = written.last_seq;
                Ok(())
            }
            Err(Replace::Before(e)) => Err(e),
            Err(Replace::After(e, op)) => {
                self.poisoned = Some(op);
                Err(e)
            }
        }
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match self.poisoned {
            Some(op) => Err(LogError::Poisoned { path: self.path.clone(), op }),
            None => Ok(()),
        }
    }

    /// Writes the pending frames as one unit with one write, and
    /// fdatasyncs; poisons the log on failure.
    fn flush_pending(&mut self) -> Result<(), LogError> {
        let seq = self.last_seq + 1;
        let mut unit = Vec::with_capacity(self.pending.len() + UNIT_OVERHEAD_BYTES);
        encode_unit(seq, &self.pending, &mut unit);
        if let Err(e) = self.file.write_all(&unit) {
            self.poisoned = Some("write");
            return Err(io_error(&self.path, "write")(e));
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = Some("fdatasync");
            return Err(io_error(&self.path, "fdatasync")(e));
        }
        self.synced_len += unit.len() as u64;
        self.last_seq = seq;
        self.pending.clear();
        Ok(())
    }
}

impl Storage for LogFile {
    type Error = LogError;

    fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.check_poisoned()?;
        let before = self.pending.len();
        encode_frame(record, &mut self.pending)?;
        if self.pending.len() > limits::LOG_UNIT_BYTES_MAX {
            let bytes = self.pending.len() as u64;
            self.pending.truncate(before);
            return Err(LogError::UnitTooLarge { bytes });
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<Synced, LogError> {
        self.check_poisoned()?;
        if !self.pending.is_empty() {
            self.flush_pending()?;
        }
        Ok(Synced(()))
    }
}

/// The open log file and its bytes, or `None` when there is no file.
fn read_log(path: &Path) -> Result<Option<(File, Vec<u8>)>, LogError> {
    let mut file = match OpenOptions::new().read(true).append(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "open")(e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path, "read"))?;
    Ok(Some((file, bytes)))
}

fn recovery_error(path: &Path, e: RecoveryError) -> LogError {
    let path = path.to_path_buf();
    match e {
        RecoveryError::BadHeader => LogError::BadHeader { path },
        RecoveryError::UnsupportedVersion { version } => LogError::UnsupportedVersion { path, version },
        RecoveryError::Corrupt { offset } => LogError::Corrupt { path, offset },
    }
}

fn warn_torn_tail(path: &Path, torn: TornTail) {
    match torn.kind {
        TailKind::Cut => log::warn!(
            "acceptor log {}: dropping a torn write of {} bytes at byte offset {} (the node stopped \
             while writing its last unit, which was never synced)",
            path.display(),
            torn.bytes,
            torn.offset
        ),
        TailKind::Damaged => log::warn!(
            "acceptor log {}: dropping the damaged last unit of {} bytes at byte offset {}: either \
             its blocks reached the disk out of order when the node stopped, or it was synced and \
             damaged since, and then promises or accepts this node acknowledged are lost",
            path.display(),
            torn.bytes,
            torn.offset
        ),
    }
}

fn truncate_torn_tail(file: &File, path: &Path, torn: TornTail) -> Result<(), LogError> {
    file.set_len(torn.offset).map_err(io_error(path, "truncate"))?;
    // The new size is metadata: sync_all, not sync_data, makes it durable.
    file.sync_all().map_err(io_error(path, "fsync after truncate"))
}

fn remove_leftover_compaction(dir: &Path) -> Result<(), LogError> {
    let path = dir.join(COMPACT_FILE_NAME);
    match fs::remove_file(&path) {
        Ok(()) => {
            log::info!(
                "removed {}, left by a compaction that did not finish; {} is still complete",
                path.display(),
                LOG_FILE_NAME
            );
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&path, "remove leftover compaction file")(e)),
    }
}

/// How writing a replacement log failed: before the rename (the old log is
/// untouched) or at or after it (the directory's state is unknown).
enum Replace {
    Before(LogError),
    After(LogError, &'static str),
}

impl From<Replace> for LogError {
    fn from(r: Replace) -> LogError {
        match r {
            Replace::Before(e) | Replace::After(e, _) => e,
        }
    }
}

/// A log file just written, synced and open for appending.
struct Written {
    file: File,
    len: u64,
    last_seq: u64,
}

/// Writes a log holding `records` to `acceptor.log.compact`, syncs it,
/// renames it over `acceptor.log` and syncs the directory.
fn write_replacement(dir: &Path, records: impl Iterator<Item = Record>) -> Result<Written, Replace> {
    let tmp = dir.join(COMPACT_FILE_NAME);
    let written = write_log_file(&tmp, records).map_err(|e| {
        // Best effort: `open` removes a leftover file anyway.
        let _ = fs::remove_file(&tmp);
        Replace::Before(e)
    })?;
    let path = dir.join(LOG_FILE_NAME);
    fs::rename(&tmp, &path)
        .map_err(|e| Replace::After(io_error(&path, "rename compacted log")(e), "rename"))?;
    sync_dir(dir).map_err(|e| Replace::After(e, "directory fsync"))?;
    Ok(written)
}

/// Creates `path` with the header and `records`, in units of about
/// `COMPACT_CHUNK_BYTES` (none when there are no records), and syncs it. The
/// file is complete before anything depends on it, so how the records are
/// split into units does not matter.
fn write_log_file(path: &Path, records: impl Iterator<Item = Record>) -> Result<Written, LogError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path, "create"))?;
    // A file left by an earlier attempt must not contribute bytes.
    file.set_len(0).map_err(io_error(path, "truncate"))?;
    let mut out = encode_header();
    let (mut len, mut last_seq) = (0u64, 0u64);
    let mut body = Vec::new();
    let mut records = records.peekable();
    while let Some(record) = records.next() {
        encode_frame(&record, &mut body)?;
        if body.len() >= COMPACT_CHUNK_BYTES || records.peek().is_none() {
            last_seq += 1;
            encode_unit(last_seq, &body, &mut out);
            body.clear();
            file.write_all(&out).map_err(io_error(path, "write"))?;
            len += out.len() as u64;
            out.clear();
        }
    }
    file.write_all(&out).map_err(io_error(path, "write"))?;
    len += out.len() as u64;
    file.sync_all().map_err(io_error(path, "fsync"))?;
    Ok(Written { file, len, last_seq })
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let handle = File::open(dir).map_err(io_error(dir, "open directory"))?;
    handle.sync_all().map_err(io_error(dir, "fsync directory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Ballot, Key, NodeId, RegisterState};

    /// A log whose writes fail: `/dev/full` returns ENOSPC on every write.
    fn log_on_dev_full() -> Option<LogFile> {
        let file = OpenOptions::new().append(true).open("/dev/full").ok()?;
        let mut log = LogFile::at(Path::new("/dev"), file, HEADER_BYTES as u64, 0);
        log.path = PathBuf::from("/dev/full");
        Some(log)
    }

    fn record() -> Record {
        Record::Slot {
            key: Key::from("k"),
            promised: Ballot::new(1, NodeId(1)),
            accepted: Ballot::ZERO,
            state: RegisterState::default(),
        }
    }

    #[test]
    fn failed_write_poisons_the_log() {
        let Some(mut log) = log_on_dev_full() else {
            return; // no /dev/full on this system
        };
        log.append(&record()).expect("append only buffers");
        match log.sync() {
            Err(LogError::Io { op: "write", .. }) => {}
            other => panic!("expected a write error, got {other:?}"),
        }
        for result in [log.append(&record()), log.sync().map(|_| ()), log.compact(std::iter::empty())] {
            match result {
                Err(LogError::Poisoned { op: "write", .. }) => {}
                other => panic!("expected Poisoned, got {other:?}"),
            }
        }
    }

    /// An append that would make the next unit longer than the limit is
    /// refused with an error, buffers nothing, and later appends still fit.
    #[test]
    fn append_beyond_the_unit_limit_is_refused() {
        let Some(mut log) = log_on_dev_full() else {
            return;
        };
        // Zeroed memory from the allocator: pages are only touched where
        // written, so this costs far less than a gigabyte.
        let room = record_len(&record()) as usize - 1;
        log.pending = vec![0u8; limits::LOG_UNIT_BYTES_MAX - room];
        let before = log.pending.len();
        match log.append(&record()) {
            Err(LogError::UnitTooLarge { bytes }) => {
                assert_eq!(bytes, (limits::LOG_UNIT_BYTES_MAX + 1) as u64)
            }
            other => panic!("expected UnitTooLarge, got {other:?}"),
        }
        assert_eq!(log.pending.len(), before);
        log.pending.truncate(limits::LOG_UNIT_BYTES_MAX - room - 1);
        log.append(&record()).expect("a record that fits exactly");
        assert_eq!(log.pending.len(), limits::LOG_UNIT_BYTES_MAX);
    }

    #[test]
    fn unit_length_above_the_limit_is_not_trusted() {
        let mut frames = Vec::new();
        encode_record(&record(), &mut frames);
        let mut bytes = encode_header();
        encode_unit(1, &frames, &mut bytes);
        let recovered = recover(&bytes).expect("valid");
        assert_eq!((recovered.records, recovered.last_seq), (vec![record()], 1));
        // A length one above the limit, with a valid CRC, is refused before
        // it is used: the unit is cut as damaged, not read.
        let length = (limits::LOG_UNIT_BYTES_MAX as u32 + 1).to_le_bytes();
        let mut huge = encode_header();
        huge.extend_from_slice(&length);
        huge.extend_from_slice(&crc32fast::hash(&length).to_le_bytes());
        huge.extend_from_slice(&[0u8; 64]);
        assert_eq!(checked_length(&huge, HEADER_BYTES, limits::LOG_UNIT_BYTES_MAX), Err(Fault::BadLength));
        let got = recover(&huge).expect("damaged last unit");
        assert_eq!(got.torn_tail, Some(TornTail { offset: 16, bytes: 72, kind: TailKind::Damaged }));
    }
}
