//! The acceptor's append-only record log: byte layout, recovery, and the
//! file that implements `Storage`.
//!
//! # Byte layout
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
//! Then frames, one per record, back to back until the end of the file:
//!
//! | offset  | size | field                                        |
//! |---------|------|----------------------------------------------|
//! | 0       | 4    | payload length `n`                           |
//! | 4       | 4    | crc32 of bytes 0..4 (the length)             |
//! | 8       | n    | payload: the postcard encoding of a `Record` |
//! | 8 + n   | 4    | crc32 of bytes 0..8+n                        |
//!
//! The length has its own CRC so that a damaged length is detected before it
//! is used to find the rest of the frame, and it must not exceed
//! `limits::RECORD_BYTES_MAX`, so a length is never trusted to size a read
//! or an allocation.
//!
//! # Recovery
//!
//! `recover` decodes every frame. At the first frame that does not check
//! out it decides between two stories:
//! - a torn write: the process or machine stopped while the last frames were
//!   being written. Nothing valid follows the bad frame, and the records
//!   before it are the log. Those lost frames were never synced, so no
//!   message that depended on them ever left the node.
//! - corruption: a valid frame follows the bad one, so the damaged frame was
//!   once complete (and perhaps synced and promised on). Dropping it could
//!   make the acceptor break a promise, so recovery refuses.
//!
//! To decide, recovery scans forward from the bad frame, byte by byte, for
//! any offset where a complete frame with valid CRCs and a decodable payload
//! starts. When the bad frame's length itself checks out, the scan starts
//! after the frame (its payload may hold a value that looks like a frame),
//! and a frame that runs past the end of the file has nothing after it.
//!
//! A write torn inside one group commit could in principle leave a damaged
//! frame followed by an intact one of the same batch, if the disk persisted
//! blocks out of order. Recovery cannot tell that batch was never synced and
//! reports corruption: refusing to start is the safe mistake.
//!
//! An empty input (0 bytes) is not an error: it is a log whose header was
//! never written, reported with `Recovered::fresh` set.
//!
//! The functions over bytes (`encode_header`, `encode_record`, `recover`,
//! `record_len`) do no I/O, so a simulator with an in-memory disk uses them
//! too.

use crate::limits;
use crate::storage::{Record, Storage, Synced};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// First bytes of every log file.
pub const MAGIC: [u8; 8] = *b"PXDLOG\0\x01";
/// The frame layout described above.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the file header.
pub const HEADER_BYTES: usize = 16;
/// Bytes a frame adds around its payload: length, length CRC, frame CRC.
pub const FRAME_OVERHEAD_BYTES: usize = 12;

/// Name of the log inside the data dir.
pub const LOG_FILE_NAME: &str = "acceptor.log";
/// Name of the file a compaction (or the creation of a log) writes before
/// renaming it over `LOG_FILE_NAME`.
pub const COMPACT_FILE_NAME: &str = "acceptor.log.compact";

/// Compaction writes the new file in chunks of about this size, so the live
/// state is not encoded into one buffer of its own size.
const COMPACT_CHUNK_BYTES: usize = 1024 * 1024;

const LENGTH_BYTES: usize = 4;
const CRC_BYTES: usize = 4;
const PREFIX_BYTES: usize = LENGTH_BYTES + CRC_BYTES;

const _: () = assert!(PREFIX_BYTES + CRC_BYTES == FRAME_OVERHEAD_BYTES);
const _: () = assert!(MAGIC.len() + 4 + CRC_BYTES == HEADER_BYTES);
const _: () = assert!(limits::RECORD_BYTES_MAX <= u32::MAX as usize);

/// The file header for a new log.
pub fn encode_header() -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Appends the frame of `rec` to `out`.
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
    /// Length of the valid prefix: the header and every valid frame. Bytes
    /// after it are the torn tail, if any.
    pub valid_len: u64,
    /// The incomplete or damaged frames at the end, if the last write was
    /// torn.
    pub torn_tail: Option<TornTail>,
    /// True when there were no bytes at all (no header yet): a log that was
    /// never written, which `LogFile::open` initialises. `valid_len` is then
    /// 0 and there are no records.
    pub fresh: bool,
}

/// Where a torn write begins and how many bytes it left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub offset: u64,
    pub bytes: u64,
}

/// Why a log's bytes cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryError {
    /// The file is shorter than a header, or the header's magic or CRC is
    /// wrong: this is not a paxosd log, or its first bytes are damaged.
    BadHeader,
    /// A valid header of a format this build does not read.
    UnsupportedVersion { version: u32 },
    /// The frame at `offset` is damaged and a valid frame follows it.
    Corrupt { offset: u64 },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::BadHeader => write!(f, "missing or damaged log header"),
            RecoveryError::UnsupportedVersion { version } => write!(
                f,
                "log format version {version} is not supported (this build reads version {FORMAT_VERSION})"
            ),
            RecoveryError::Corrupt { offset } => {
                write!(f, "damaged record at byte offset {offset}, followed by valid records")
            }
        }
    }
}

impl std::error::Error for RecoveryError {}

/// Decodes a whole log. Whatever the bytes, it never panics and never sizes
/// a read or an allocation from a length that has not been checked.
pub fn recover(bytes: &[u8]) -> Result<Recovered, RecoveryError> {
    if bytes.is_empty() {
        return Ok(Recovered { records: Vec::new(), valid_len: 0, torn_tail: None, fresh: true });
    }
    check_header(bytes)?;
    // Sized for the usual record (a key, a small value and its remembered
    // writes), so a large log is not copied over and over as it grows.
    let mut records = Vec::with_capacity((bytes.len() / 128).min(limits::RECOVERY_RECORDS_RESERVED_MAX));
    let mut offset = HEADER_BYTES;
    let mut torn_tail = None;
    while offset < bytes.len() {
        match decode_frame(bytes, offset) {
            Ok((record, next)) => {
                records.push(record);
                offset = next;
            }
            Err(fault) => {
                if valid_frame_from(bytes, fault.rescan_from(offset)) {
                    return Err(RecoveryError::Corrupt { offset: offset as u64 });
                }
                let dropped = (bytes.len() - offset) as u64;
                torn_tail = Some(TornTail { offset: offset as u64, bytes: dropped });
                break;
            }
        }
    }
    Ok(Recovered { records, valid_len: offset as u64, torn_tail, fresh: false })
}

fn check_header(bytes: &[u8]) -> Result<(), RecoveryError> {
    let header = bytes.get(..HEADER_BYTES).ok_or(RecoveryError::BadHeader)?;
    let (body, crc) = header.split_at(HEADER_BYTES - CRC_BYTES);
    if read_u32(crc, 0) != Some(crc32fast::hash(body)) || body[..MAGIC.len()] != MAGIC {
        return Err(RecoveryError::BadHeader);
    }
    match read_u32(body, MAGIC.len()) {
        Some(FORMAT_VERSION) => Ok(()),
        Some(version) => Err(RecoveryError::UnsupportedVersion { version }),
        None => Err(RecoveryError::BadHeader),
    }
}

/// Why the frame at some offset is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameFault {
    /// The length, its CRC, or the bound on it is bad (or cut short): the
    /// frame's extent is unknown.
    BadLength,
    /// The length checks out but the frame runs past the end of the bytes.
    Incomplete,
    /// The length checks out, the frame is complete, but its CRC is wrong or
    /// its payload is not a `Record`. The frame ends at `end`.
    BadFrame { end: usize },
}

impl FrameFault {
    /// Where to look for a valid frame after a bad one at `offset`. When the
    /// frame's length is trustworthy, the bytes inside the frame are its own
    /// payload (a value may well contain bytes that look like a frame), so
    /// the search starts after it; a frame running past the end has nothing
    /// after it at all.
    fn rescan_from(self, offset: usize) -> usize {
        match self {
            FrameFault::BadLength => offset + 1,
            FrameFault::Incomplete => usize::MAX,
            FrameFault::BadFrame { end } => end,
        }
    }
}

/// Decodes the frame starting at `offset`; on success returns its record and
/// the offset just after it.
fn decode_frame(bytes: &[u8], offset: usize) -> Result<(Record, usize), FrameFault> {
    let length = read_u32(bytes, offset).ok_or(FrameFault::BadLength)?;
    let length_crc = read_u32(bytes, offset + LENGTH_BYTES).ok_or(FrameFault::BadLength)?;
    if crc32fast::hash(&length.to_le_bytes()) != length_crc {
        return Err(FrameFault::BadLength);
    }
    let payload_bytes = length as usize;
    if payload_bytes > limits::RECORD_BYTES_MAX {
        return Err(FrameFault::BadLength);
    }
    let payload_start = offset + PREFIX_BYTES;
    let end = payload_start + payload_bytes + CRC_BYTES;
    if end > bytes.len() {
        return Err(FrameFault::Incomplete);
    }
    let crc_start = payload_start + payload_bytes;
    let bad = FrameFault::BadFrame { end };
    if read_u32(bytes, crc_start) != Some(crc32fast::hash(&bytes[offset..crc_start])) {
        return Err(bad);
    }
    match postcard::take_from_bytes::<Record>(&bytes[payload_start..crc_start]) {
        Ok((record, [])) => Ok((record, end)),
        // Trailing bytes mean the writer and this reader disagree about the
        // encoding: as untrustworthy as a payload that does not decode.
        Ok(_) | Err(_) => Err(bad),
    }
}

/// Whether a complete, valid frame starts at any offset from `start` on.
/// Linear in the bytes scanned: most offsets fail the 4-byte length CRC.
fn valid_frame_from(bytes: &[u8], start: usize) -> bool {
    let last_start = bytes.len().saturating_sub(FRAME_OVERHEAD_BYTES);
    (start..=last_start).any(|offset| decode_frame(bytes, offset).is_ok())
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let word: [u8; 4] = bytes.get(offset..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(word))
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
    /// A damaged record with valid records after it.
    Corrupt { path: PathBuf, offset: u64 },
    /// A record whose payload exceeds `limits::RECORD_BYTES_MAX`.
    RecordTooLarge { bytes: u64 },
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
                "acceptor log {} has format version {version}, this build reads version \
                 {FORMAT_VERSION}; refusing to start",
                path.display()
            ),
            LogError::Corrupt { path, offset } => write!(
                f,
                "acceptor log {} is corrupt: the record at byte offset {offset} is damaged and \
                 valid records follow it, so this is not a write torn by a crash. The log holds \
                 this acceptor's promises, and dropping any could break one; the node refuses to \
                 start. See the README section \"Replacing a node's data\"",
                path.display()
            ),
            LogError::RecordTooLarge { bytes } => write!(
                f,
                "log record of {bytes} bytes exceeds the limit of {} bytes",
                limits::RECORD_BYTES_MAX
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
/// Appends are buffered in memory; `sync` writes them and fdatasyncs, one
/// sync for every append since the last (group commit). After a failed
/// write or fsync the log is poisoned: the kernel may have dropped the dirty
/// pages and cleared the error (PostgreSQL's "fsyncgate"), so retrying could
/// report success for data that is gone. Every later call fails and the
/// daemon exits; the next start recovers from what really is on disk.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    path: PathBuf,
    /// Opened in append mode: every write lands at the end of the file.
    file: File,
    /// Bytes in the file, all of them synced.
    synced_len: u64,
    /// Frames appended since the last sync.
    pending: Vec<u8>,
    /// The operation whose failure poisoned the log.
    poisoned: Option<&'static str>,
}

impl LogFile {
    /// Opens `dir/acceptor.log`, creating it if missing, and recovers it.
    ///
    /// A torn tail is cut off (and a warning logged). A damaged log, a bad
    /// header or an unknown format version is an error: the node must not
    /// start on it. A leftover `acceptor.log.compact` from an interrupted
    /// compaction is deleted; the log it was meant to replace is complete.
    ///
    /// The returned `Recovered` describes the file as found; a missing or
    /// empty file is reported as `fresh`.
    pub fn open(dir: &Path) -> Result<(LogFile, Recovered), LogError> {
        remove_leftover_compaction(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return LogFile::create(dir),
            Err(e) => return Err(io_error(&path, "open")(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error(&path, "read"))?;
        let recovered = recover(&bytes).map_err(|e| recovery_error(&path, e))?;
        if recovered.fresh {
            // Logs are created by renaming a complete file into place, so
            // an empty one was not made by paxosd; it holds nothing to keep.
            log::warn!("acceptor log {} is empty; writing a new header", path.display());
            return LogFile::create(dir);
        }
        if let Some(torn) = recovered.torn_tail {
            truncate_torn_tail(&file, &path, torn)?;
        }
        let log = LogFile {
            dir: dir.to_path_buf(),
            path,
            file,
            synced_len: recovered.valid_len,
            pending: Vec::new(),
            poisoned: None,
        };
        Ok((log, recovered))
    }

    /// Creates a new, empty log the way compaction writes one, so that
    /// `acceptor.log` never exists without a complete header.
    fn create(dir: &Path) -> Result<(LogFile, Recovered), LogError> {
        let (file, len) = write_replacement(dir, std::iter::empty())?;
        let log = LogFile {
            dir: dir.to_path_buf(),
            path: dir.join(LOG_FILE_NAME),
            file,
            synced_len: len,
            pending: Vec::new(),
            poisoned: None,
        };
        let recovered = Recovered { records: Vec::new(), valid_len: 0, torn_tail: None, fresh: true };
        Ok((log, recovered))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the log including appended, not yet synced records.
    pub fn len_bytes(&self) -> u64 {
        self.synced_len + self.pending.len() as u64
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
            Ok((file, len)) => {
                self.file = file;
                self.synced_len = len;
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

    /// Writes the pending frames and fdatasyncs; poisons the log on failure.
    fn flush_pending(&mut self) -> Result<(), LogError> {
        if let Err(e) = self.file.write_all(&self.pending) {
            self.poisoned = Some("write");
            return Err(io_error(&self.path, "write")(e));
        }
        if let Err(e) = self.file.sync_data() {
            self.poisoned = Some("fdatasync");
            return Err(io_error(&self.path, "fdatasync")(e));
        }
        self.synced_len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

impl Storage for LogFile {
    type Error = LogError;

    fn append(&mut self, record: &Record) -> Result<(), LogError> {
        self.check_poisoned()?;
        encode_frame(record, &mut self.pending)
    }

    fn sync(&mut self) -> Result<Synced, LogError> {
        self.check_poisoned()?;
        if !self.pending.is_empty() {
            self.flush_pending()?;
        }
        Ok(Synced(()))
    }
}

fn recovery_error(path: &Path, e: RecoveryError) -> LogError {
    let path = path.to_path_buf();
    match e {
        RecoveryError::BadHeader => LogError::BadHeader { path },
        RecoveryError::UnsupportedVersion { version } => LogError::UnsupportedVersion { path, version },
        RecoveryError::Corrupt { offset } => LogError::Corrupt { path, offset },
    }
}

fn truncate_torn_tail(file: &File, path: &Path, torn: TornTail) -> Result<(), LogError> {
    log::warn!(
        "acceptor log {}: dropping a torn write of {} bytes at byte offset {} (the end of the \
         log was being written when the node stopped; those records were never synced)",
        path.display(),
        torn.bytes,
        torn.offset
    );
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

/// Writes a log holding `records` to `acceptor.log.compact`, syncs it,
/// renames it over `acceptor.log` and syncs the directory. Returns the new
/// file, open for appending, and its length.
fn write_replacement(dir: &Path, records: impl Iterator<Item = Record>) -> Result<(File, u64), Replace> {
    let tmp = dir.join(COMPACT_FILE_NAME);
    let written = write_log_file(&tmp, records);
    let (file, len) = written.map_err(|e| {
        // Best effort: `open` removes a leftover file anyway.
        let _ = fs::remove_file(&tmp);
        Replace::Before(e)
    })?;
    let path = dir.join(LOG_FILE_NAME);
    fs::rename(&tmp, &path)
        .map_err(|e| Replace::After(io_error(&path, "rename compacted log")(e), "rename"))?;
    sync_dir(dir).map_err(|e| Replace::After(e, "directory fsync"))?;
    Ok((file, len))
}

/// Creates `path` with the header and `records`, and syncs it.
fn write_log_file(path: &Path, records: impl Iterator<Item = Record>) -> Result<(File, u64), LogError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io_error(path, "create"))?;
    // A file left by an earlier attempt must not contribute bytes.
    file.set_len(0).map_err(io_error(path, "truncate"))?;
    let mut buf = encode_header();
    let mut len = 0u64;
    for record in records {
        encode_frame(&record, &mut buf)?;
        if buf.len() >= COMPACT_CHUNK_BYTES {
            file.write_all(&buf).map_err(io_error(path, "write"))?;
            len += buf.len() as u64;
            buf.clear();
        }
    }
    file.write_all(&buf).map_err(io_error(path, "write"))?;
    len += buf.len() as u64;
    file.sync_all().map_err(io_error(path, "fsync"))?;
    Ok((file, len))
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
        Some(LogFile {
            dir: PathBuf::from("/dev"),
            path: PathBuf::from("/dev/full"),
            file,
            synced_len: HEADER_BYTES as u64,
            pending: Vec::new(),
            poisoned: None,
        })
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
}
