//! The identity marker: a small file that ties a data dir to one node of one
//! cluster.
//!
//! An acceptor's data dir holds promises it has made. Started with another
//! node's data, or with no data after having voted before, a node could
//! break those promises. So the daemon refuses to start unless the marker
//! matches its configuration, and only creates a marker when told
//! (`--bootstrap`) that this is a founding member of a new cluster.
//!
//! The marker is text, `dir/identity`:
//!
//! ```text
//! # paxosd data directory: do not edit or copy between nodes
//! cluster_id = 7
//! node_id = 2
//! crc = c2260d24
//! ```
//!
//! The last line holds the CRC-32 (lowercase hex, 8 digits) of every byte
//! before it, so an edited or damaged marker is detected rather than read
//! as some other identity.

use crate::types::{ClusterId, NodeId};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Name of the marker inside the data dir.
pub const IDENTITY_FILE_NAME: &str = "identity";
/// The marker is written here first, then renamed into place.
const IDENTITY_TMP_FILE_NAME: &str = "identity.tmp";
/// A marker is a few dozen bytes; anything much larger is not one, and is
/// not read into memory whole.
const IDENTITY_BYTES_MAX: u64 = 4096;

const COMMENT: &str = "# paxosd data directory: do not edit or copy between nodes";
const CRC_PREFIX: &str = "crc = ";

/// Which node of which cluster a data dir belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub cluster_id: ClusterId,
    pub node_id: NodeId,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} of cluster {}", self.node_id, self.cluster_id)
    }
}

/// Why a data dir's identity cannot be confirmed.
#[derive(Debug)]
pub enum IdentityError {
    /// The marker names another node or cluster.
    Mismatch { path: PathBuf, expected: Identity, found: Identity },
    /// No marker, and not bootstrapping. `log_present` tells whether the dir
    /// nevertheless holds an acceptor log.
    Missing { path: PathBuf, log_present: bool },
    /// Bootstrapping, but the data dir's parent directory does not exist.
    NoParent { path: PathBuf },
    /// The marker exists but is damaged or not in the expected format.
    Corrupt { path: PathBuf, detail: String },
    /// A system call failed.
    Io { path: PathBuf, op: &'static str, source: io::Error },
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Mismatch { path, expected, found } => write!(
                f,
                "data dir marker {} says this data dir belongs to {found}, but the config says \
                 this is {expected}; refusing to start (a data dir must never be copied between \
                 nodes or clusters)",
                path.display()
            ),
            IdentityError::Missing { path, log_present } => write_missing(f, path, *log_present),
            IdentityError::NoParent { path } => {
                write!(f, "cannot create data dir {}: its parent directory does not exist", path.display())
            }
            IdentityError::Corrupt { path, detail } => {
                write!(f, "data dir marker {} is damaged ({detail}); refusing to start", path.display())
            }
            IdentityError::Io { path, op, source } => {
                write!(f, "data dir marker {}: {op} failed: {source}", path.display())
            }
        }
    }
}

fn write_missing(f: &mut fmt::Formatter<'_>, path: &Path, log_present: bool) -> fmt::Result {
    write!(f, "this data dir has no identity marker ({} is missing)", path.display())?;
    if log_present {
        write!(
            f,
            ", yet it holds an acceptor log: the marker was removed, or the data was copied \
             from elsewhere"
        )?;
    }
    write!(
        f,
        ". If this node is a founding member of a brand-new cluster, start it with \
         --bootstrap. A node of a running cluster that lost its data must not start empty as \
         if it were new (it could break promises it made before): it comes back with --rejoin, \
         which catches up from the other nodes first (README, \"Replacing a node's data\")"
    )
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> IdentityError {
    let path = path.to_path_buf();
    move |source| IdentityError::Io { path, op, source }
}

/// Checks that `dir` belongs to `expected`; when it has no marker and
/// `bootstrap` is set, creates the dir (if missing) and the marker.
pub fn check_or_create(dir: &Path, expected: Identity, bootstrap: bool) -> Result<(), IdentityError> {
    let path = dir.join(IDENTITY_FILE_NAME);
    match read_marker(&path)? {
        Some(found) if found == expected => Ok(()),
        Some(found) => Err(IdentityError::Mismatch { path, expected, found }),
        None if bootstrap => create(dir, expected),
        None => {
            let log_present = dir.join(super::log::LOG_FILE_NAME).exists();
            Err(IdentityError::Missing { path, log_present })
        }
    }
}

/// The marker's text for `identity`.
pub fn encode(identity: Identity) -> String {
    let body = format!("{COMMENT}\ncluster_id = {}\nnode_id = {}\n", identity.cluster_id, identity.node_id);
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}{CRC_PREFIX}{crc:08x}\n")
}

/// Parses a marker's text, checking its CRC first.
pub fn decode(text: &str) -> Result<Identity, String> {
    let body_len = text.rfind(&format!("\n{CRC_PREFIX}")).map(|i| i + 1).ok_or("no crc line")?;
    let (body, crc_line) = text.split_at(body_len);
    let crc_hex = crc_line.strip_prefix(CRC_PREFIX).and_then(|s| s.strip_suffix('\n'));
    let crc_hex = crc_hex.filter(|h| h.len() == 8).ok_or("malformed crc line")?;
    let crc = u32::from_str_radix(crc_hex, 16).map_err(|_| "malformed crc line")?;
    if crc != crc32fast::hash(body.as_bytes()) {
        return Err(format!(
            "crc mismatch: the file says {crc:08x}, its contents have {:08x}",
            crc32fast::hash(body.as_bytes())
        ));
    }
    parse_body(body)
}

fn parse_body(body: &str) -> Result<Identity, String> {
    let mut cluster_id = None;
    let mut node_id = None;
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once('=').ok_or(format!("line {line:?} is not name = value"))?;
        let (name, value) = (name.trim(), value.trim());
        let slot_is_taken = match name {
            "cluster_id" => cluster_id.replace(parse_number(name, value)?).is_some(),
            "node_id" => node_id.replace(parse_number(name, value)?).is_some(),
            _ => return Err(format!("unknown field {name:?}")),
        };
        if slot_is_taken {
            return Err(format!("field {name:?} appears twice"));
        }
    }
    let cluster_id = cluster_id.ok_or("no cluster_id")?;
    let node_id = node_id.ok_or("no node_id")?;
    let node_id = u16::try_from(node_id).map_err(|_| format!("node_id {node_id} is too large"))?;
    Ok(Identity { cluster_id: ClusterId(cluster_id), node_id: NodeId(node_id) })
}

fn parse_number(name: &str, value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| format!("{name} {value:?} is not a number"))
}

/// Reads the marker; `Ok(None)` when there is none.
fn read_marker(path: &Path) -> Result<Option<Identity>, IdentityError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, "open")(e)),
    };
    let mut bytes = Vec::new();
    file.take(IDENTITY_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(io_error(path, "read"))?;
    let corrupt = |detail: String| IdentityError::Corrupt { path: path.to_path_buf(), detail };
    if bytes.len() as u64 > IDENTITY_BYTES_MAX {
        return Err(corrupt(format!("larger than {IDENTITY_BYTES_MAX} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8 text".to_string()))?;
    decode(&text).map(Some).map_err(corrupt)
}

/// Creates the data dir if needed and writes the marker durably: a
/// temporary file, fsync, rename, fsync of the directory.
fn create(dir: &Path, identity: Identity) -> Result<(), IdentityError> {
    create_dir(dir)?;
    let tmp = dir.join(IDENTITY_TMP_FILE_NAME);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_error(&tmp, "create"))?;
    file.write_all(encode(identity).as_bytes()).map_err(io_error(&tmp, "write"))?;
    file.sync_all().map_err(io_error(&tmp, "fsync"))?;
    let path = dir.join(IDENTITY_FILE_NAME);
    fs::rename(&tmp, &path).map_err(io_error(&path, "rename"))?;
    sync_dir(dir)?;
    log::info!("created data dir marker {} for {identity}", path.display());
    Ok(())
}

/// Creates `dir` (not its parents) and makes the new entry durable by
/// syncing the parent directory.
pub fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    if dir.is_dir() {
        return Ok(());
    }
    // A relative dir like `data` has the empty path as parent: the cwd.
    let parent = match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => {
            return Err(IdentityError::NoParent { path: dir.to_path_buf() });
        }
    };
    if !parent.is_dir() {
        return Err(IdentityError::NoParent { path: dir.to_path_buf() });
    }
    fs::create_dir(dir).map_err(io_error(dir, "create directory"))?;
    sync_dir(parent)
}

pub fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    let handle = File::open(dir).map_err(io_error(dir, "open directory"))?;
    handle.sync_all().map_err(io_error(dir, "fsync directory"))
}
