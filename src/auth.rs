//! The cluster secret: the keys that authenticate every datagram.
//!
//! With `secret_file` set in `paxosd.toml`, every datagram a node or a
//! client sends ends with a MAC over its header and body (keyed BLAKE3,
//! `wire::seal`), and every datagram without a valid one is dropped unread
//! and counted, never answered. `previous_secret_file` names a second key
//! that is accepted but never sent with, so a cluster changes keys without
//! downtime (the README's "Rotating the cluster secret"):
//!
//! 1. put the new key in every host's previous file: everyone accepts both;
//! 2. swap the files, new key in `secret_file`, old one in the previous:
//!    everyone sends with the new key and still accepts the old;
//! 3. put the new key in the previous file too (or remove it from the config).
//!
//! Nodes and clients look at the key files again every
//! `limits::SECRET_CHECK_MS` and take new contents without a restart. The
//! keys they accepted before a change are still accepted for
//! `limits::SECRET_GRACE_MS` after it: a step that rewrites both files is
//! never seen half done, with neither the old key nor the new accepted.
//!
//! A key file holds 64 hexadecimal digits (32 bytes, `paxosctl secret new`
//! writes one) and may be readable by its owner only: a key others can read
//! is no secret, so such a file is refused.

use crate::config::Config;
use crate::limits;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One 32-byte key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Domain separation: a key's MAC key is derived for this one use, so the
/// same file could key something else without the two ever colliding.
const MAC_CONTEXT: &str = "paxosd 2026-12 datagram MAC v1";

impl Secret {
    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(blake3::derive_key(MAC_CONTEXT, &bytes))
    }

    /// The MAC of `bytes` under this key.
    pub fn mac(&self, bytes: &[u8]) -> [u8; limits::MAC_BYTES] {
        *blake3::keyed_hash(&self.0, bytes).as_bytes()
    }

    /// Whether `tag` is the MAC of `bytes`, compared in constant time
    /// (`blake3::Hash`'s equality), so a forger learns nothing from how
    /// long a wrong tag took to refuse.
    pub fn verifies(&self, bytes: &[u8], tag: &[u8; limits::MAC_BYTES]) -> bool {
        blake3::keyed_hash(&self.0, bytes) == blake3::Hash::from_bytes(*tag)
    }
}

/// The keys a node or client uses: none (no secret configured, datagrams
/// carry no MAC), or one to send with and up to two to accept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keyring {
    /// The first sends; all are accepted.
    keys: Vec<Secret>,
}

impl Keyring {
    /// No secret: datagrams go out without a MAC, and one that carries a
    /// MAC is dropped (this node could not check it).
    pub const fn none() -> Keyring {
        Keyring { keys: Vec::new() }
    }

    pub fn new(current: Secret, previous: Option<Secret>) -> Keyring {
        let mut keys = vec![current];
        keys.extend(previous.filter(|p| *p != keys[0]));
        Keyring { keys }
    }

    /// This keyring, also accepting `older`'s keys (sending as before).
    fn also_accepting(&self, older: &Keyring) -> Keyring {
        let mut keys = self.keys.clone();
        if keys.is_empty() {
            // No secret now: nothing is checked, so there is nothing to add.
            return Keyring::none();
        }
        for key in &older.keys {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        Keyring { keys }
    }

    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The key datagrams are sent with.
    pub fn sending(&self) -> Option<&Secret> {
        self.keys.first()
    }

    /// The index of the key that made `tag` (0: the current one), if any.
    /// Every key is tried, so the time taken does not tell which matched.
    pub fn verify(&self, bytes: &[u8], tag: &[u8; limits::MAC_BYTES]) -> Option<usize> {
        let mut found = None;
        for (i, key) in self.keys.iter().enumerate() {
            if key.verifies(bytes, tag) && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    /// The keyring `config` names, read from its key files.
    pub fn load(config: &Config) -> Result<Keyring, SecretError> {
        let Some(current) = &config.secret_file else {
            if config.previous_secret_file.is_some() {
                return Err(SecretError::PreviousWithoutCurrent);
            }
            return Ok(Keyring::none());
        };
        let current = read_secret(current)?;
        let previous = config.previous_secret_file.as_deref().map(read_secret).transpose()?;
        Ok(Keyring::new(current, previous))
    }
}

#[derive(Debug)]
pub enum SecretError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Group or others may read or write it.
    Exposed {
        path: PathBuf,
        mode: u32,
    },
    Malformed {
        path: PathBuf,
    },
    PreviousWithoutCurrent,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Read { path, error } => {
                write!(f, "cannot read key file {}: {error}", path.display())
            }
            SecretError::Exposed { path, mode } => write!(
                f,
                "key file {} has mode {mode:03o}: others may read it, so it is no secret; \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
            SecretError::Malformed { path } => write!(
                f,
                "key file {} must hold 64 hexadecimal digits (32 bytes); `paxosctl secret new FILE` writes one",
                path.display()
            ),
            SecretError::PreviousWithoutCurrent => {
                f.write_str("previous_secret_file is set without secret_file: set both, or neither")
            }
        }
    }
}

impl std::error::Error for SecretError {}

/// Reads a key file, refusing one that group or others may access.
pub fn read_secret(path: &Path) -> Result<Secret, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |error| SecretError::Read { path: path.to_path_buf(), error };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::Exposed { path: path.to_path_buf(), mode });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    parse_hex(text.trim()).map(Secret::from_bytes).ok_or(SecretError::Malformed { path: path.to_path_buf() })
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

/// 32 bytes from the kernel's random generator, as a key file's text.
pub fn new_secret_text() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
}

/// Writes a new key file, readable by its owner only; never overwrites.
pub fn write_new_secret(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = new_secret_text()?;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Watches the key files a config names, so that a rotation's new
/// contents are taken without a restart.
#[derive(Debug)]
pub struct KeyFiles {
    config: Config,
    /// Each file's mode and contents when last looked at (a few dozen
    /// bytes each): a change of either, `chmod` included, is seen, where
    /// a timestamp may not tick between two writes.
    stamps: Vec<Option<(u32, Vec<u8>)>>,
    checked: Instant,
    /// The keys the files named when last read.
    named: Keyring,
    /// Until when the keys in use before the last change are accepted too.
    grace_until: Option<Instant>,
}

impl KeyFiles {
    /// The keyring `config` names now, and the watcher for later changes.
    pub fn open(config: &Config) -> Result<(Keyring, KeyFiles), SecretError> {
        let keyring = Keyring::load(config)?;
        let files = KeyFiles {
            config: config.clone(),
            stamps: Vec::new(),
            checked: Instant::now(),
            named: keyring.clone(),
            grace_until: None,
        };
        let stamps = files.stamps();
        Ok((keyring, KeyFiles { stamps, ..files }))
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.config.secret_file.iter().chain(self.config.previous_secret_file.iter())
    }

    fn stamps(&self) -> Vec<Option<(u32, Vec<u8>)>> {
        use std::os::unix::fs::PermissionsExt;
        let stamp = |p: &PathBuf| {
            let mode = std::fs::metadata(p).ok()?.permissions().mode();
            // A key file is 65 bytes; anything far larger is not one, and is
            // not read whole every second.
            let mut contents = Vec::new();
            let file = std::fs::File::open(p).ok()?;
            std::io::Read::read_to_end(&mut std::io::Read::take(file, 1024), &mut contents).ok()?;
            Some((mode, contents))
        };
        self.paths().map(stamp).collect()
    }

    /// At most every `SECRET_CHECK_MS`: the keyring to use from now on,
    /// when a key file changed since it was last read (with the keys in
    /// use before still accepted for `SECRET_GRACE_MS`), or when that
    /// grace ended. `Err` when the changed files are unusable: the caller
    /// keeps its keys and says why.
    pub fn poll(&mut self) -> Option<Result<Keyring, SecretError>> {
        let now = Instant::now();
        if now.duration_since(self.checked).as_millis() < u128::from(limits::SECRET_CHECK_MS) {
            return None;
        }
        self.checked = now;
        let stamps = self.stamps();
        if stamps == self.stamps {
            let ended = self.grace_until.is_some_and(|until| now >= until);
            return ended.then(|| {
                self.grace_until = None;
                Ok(self.named.clone())
            });
        }
        self.stamps = stamps;
        let named = match Keyring::load(&self.config) {
            Ok(named) => named,
            Err(e) => return Some(Err(e)),
        };
        let keyring = named.also_accepting(&self.named);
        self.named = named;
        self.grace_until = Some(now + std::time::Duration::from_millis(limits::SECRET_GRACE_MS));
        Some(Ok(keyring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key(n: u8) -> Secret {
        Secret::from_bytes([n; 32])
    }

    #[test]
    fn a_tag_verifies_under_its_key_only() {
        let tag = key(1).mac(b"datagram");
        assert!(key(1).verifies(b"datagram", &tag));
        assert!(!key(2).verifies(b"datagram", &tag));
        assert!(!key(1).verifies(b"datagraM", &tag));
        let ring = Keyring::new(key(2), Some(key(1)));
        assert_eq!(ring.verify(b"datagram", &tag), Some(1));
        assert_eq!(ring.verify(b"datagram", &key(2).mac(b"datagram")), Some(0));
        assert_eq!(ring.verify(b"datagram", &key(3).mac(b"datagram")), None);
        assert_eq!(ring.sending(), Some(&key(2)));
    }

    #[test]
    fn key_files_must_be_private_and_well_formed() {
        let dir = std::env::temp_dir().join(format!("paxosd-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("k");
        write_new_secret(&path).expect("write");
        assert!(read_secret(&path).is_ok());
        assert!(write_new_secret(&path).is_err(), "an existing key file is never overwritten");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_secret(&path).expect_err("group-readable").to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "abc\n").expect("write");
        assert!(read_secret(&path).expect_err("short").to_string().contains("64 hexadecimal digits"));
        std::fs::write(&path, "zz".repeat(32)).expect("write");
        assert!(read_secret(&path).is_err(), "not hex");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn after_a_change_the_keys_named_before_are_accepted_for_the_grace_only() {
        let dir = std::env::temp_dir().join(format!("paxosd-auth-grace-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let (current, previous) = (dir.join("current"), dir.join("previous"));
        let hex = |n: u8| format!("{n:02x}").repeat(32);
        let write = |path: &Path, n: u8| {
            std::fs::write(path, hex(n)).expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        };
        write(&current, 1);
        write(&previous, 1);
        let text = format!(
            "cluster_id = 1\nsecret_file = {current:?}\nprevious_secret_file = {previous:?}\n\
             [[node]]\nid = 1\naddress = \"127.0.0.1:9\"\ndata_dir = \"d\"\n"
        );
        let config = Config::parse(&dir.join("paxosd.toml"), &text).expect("config");
        let (ring, mut files) = KeyFiles::open(&config).expect("open");
        assert_eq!(ring, Keyring::new(Secret::from_bytes([1; 32]), None));
        write(&current, 2);
        write(&previous, 2);
        let wait = || std::thread::sleep(std::time::Duration::from_millis(limits::SECRET_CHECK_MS + 50));
        wait();
        let ring = files.poll().expect("changed").expect("usable");
        assert_eq!(ring.sending(), Some(&Secret::from_bytes([2; 32])));
        let tag = Secret::from_bytes([1; 32]).mac(b"d");
        assert_eq!(ring.verify(b"d", &tag), Some(1), "the old key, in its grace");
        files.grace_until = Some(Instant::now());
        wait();
        let ring = files.poll().expect("the grace ended").expect("usable");
        assert_eq!(ring, Keyring::new(Secret::from_bytes([2; 32]), None));
        wait();
        assert!(files.poll().is_none(), "nothing changed since");
        // A file refused for its mode is taken once `chmod 600` fixes it,
        // though neither its contents nor its times changed.
        write(&previous, 3);
        std::fs::set_permissions(&previous, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        wait();
        assert!(files.poll().expect("changed").is_err(), "readable by others");
        std::fs::set_permissions(&previous, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        wait();
        let ring = files.poll().expect("the mode changed").expect("usable");
        assert_eq!(ring.verify(b"d", &Secret::from_bytes([3; 32]).mac(b"d")), Some(1));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_secret_twice_is_one_key() {
        assert_eq!(Keyring::new(key(1), Some(key(1))).keys.len(), 1);
    }
}
