//! Linearizability checker for key/value register histories.
//!
//! A history is read from JSON Lines in Jepsen's conventions (one invoke or
//! completion per line, in real time order) by [`parse_history`], split by
//! key, and each key is checked on its own by [`check`]: the whole history
//! is linearizable exactly when every key's is. For a key that is not, the
//! report shows a small stretch of its original lines that is not
//! linearizable by itself.
//!
//! The search can take exponential time on adversarial histories, so it is
//! bounded by [`CheckOptions`]; a key that exhausts the budget is reported
//! as [`Verdict::Unknown`] rather than guessed at.

mod history;
pub mod locks;
mod search;
mod shrink;
#[cfg(test)]
mod testing;

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

pub use history::{Function, History, HistoryError, HistoryErrorKind, HistoryLine, parse_history};

use search::{Budget, Outcome, search};

/// Search steps one key may take before its verdict is unknown. Real
/// histories need a tiny fraction of this.
pub const SEARCH_STEPS_MAX_DEFAULT: u64 = 50_000_000;

/// Search steps, summed over all the re-checks, spent shrinking one key's
/// violation before the stretch found so far is reported.
pub const SHRINK_STEPS_MAX_DEFAULT: u64 = 20_000_000;

/// Memory the search's cache of explored states may use, per key.
pub const CACHE_BYTES_MAX_DEFAULT: usize = 1 << 30;

/// Bounds on the work the checker does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    pub search_steps_max: u64,
    pub shrink_steps_max: u64,
    pub cache_bytes_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            search_steps_max: SEARCH_STEPS_MAX_DEFAULT,
            shrink_steps_max: SHRINK_STEPS_MAX_DEFAULT,
            cache_bytes_max: CACHE_BYTES_MAX_DEFAULT,
        }
    }
}

/// The answer for a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// One entry per key that is not linearizable, in order of the keys'
    /// first appearance. Reported even if other keys are unknown: one
    /// violation settles the question.
    Violation(Vec<KeyViolation>),
    /// No violation was found, but the search on `key` ran out of budget.
    Unknown {
        key: String,
    },
}

/// A key whose history cannot be linearized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyViolation {
    pub key: String,
    /// Original lines of the key's history, in order, that by themselves
    /// cannot be linearized.
    pub stretch: Vec<HistoryLine>,
}

/// A checked history, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub operations: usize,
    pub keys: usize,
    pub verdict: Verdict,
}

/// Why a history file could not be checked.
#[derive(Debug)]
pub enum CheckError {
    Open { path: PathBuf, source: io::Error },
    History { path: PathBuf, source: HistoryError },
}

/// Checks a history with the default budget.
pub fn check(history: &History) -> Verdict {
    check_with(history, &CheckOptions::default())
}

/// Checks a history, key by key.
pub fn check_with(history: &History, options: &CheckOptions) -> Verdict {
    let budget = Budget {
        steps_max: options.search_steps_max,
        cache_words_max: options.cache_bytes_max / size_of::<u64>(),
    };
    let mut violations = Vec::new();
    let mut unknown = None;
    for key in history.keys() {
        let all: Vec<usize> = (0..key.event_count()).collect();
        match search(&key.problem(&all), &budget).outcome {
            Outcome::Linearizable => {}
            Outcome::Violation => {
                let stretch = shrink::shrink(key, budget, options.shrink_steps_max);
                violations.push(KeyViolation { key: key.key.clone(), stretch: history.quote(key, &stretch) });
            }
            Outcome::Unknown => {
                unknown.get_or_insert_with(|| key.key.clone());
            }
        }
    }
    match (violations.is_empty(), unknown) {
        (false, _) => Verdict::Violation(violations),
        (true, Some(key)) => Verdict::Unknown { key },
        (true, None) => Verdict::Linearizable,
    }
}

/// Reads and checks a history file with the default budget.
pub fn check_file(path: &Path) -> Result<Report, CheckError> {
    check_file_with(path, &CheckOptions::default())
}

pub fn check_file_with(path: &Path, options: &CheckOptions) -> Result<Report, CheckError> {
    let file = File::open(path).map_err(|source| CheckError::Open { path: path.to_owned(), source })?;
    let history = parse_history(BufReader::new(file))
        .map_err(|source| CheckError::History { path: path.to_owned(), source })?;
    Ok(Report {
        operations: history.operation_count(),
        keys: history.key_count(),
        verdict: check_with(&history, options),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.verdict {
            Verdict::Linearizable => {
                write!(f, "linearizable: {} operations over {} keys", self.operations, self.keys)
            }
            Verdict::Unknown { key } => write!(
                f,
                "unknown: the search on key {key:?} ran out of budget \
                 ({} operations over {} keys)",
                self.operations, self.keys
            ),
            Verdict::Violation(violations) => {
                for (index, violation) in violations.iter().enumerate() {
                    if index > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{violation}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for KeyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NOT linearizable: key {:?}", self.key)?;
        for line in &self.stretch {
            write!(f, "\nline {}: {}", line.line, line.text)?;
        }
        Ok(())
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { path, source } => {
                write!(f, "{}: cannot open: {source}", path.display())
            }
            Self::History { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for CheckError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Open { source, .. } => Some(source),
            Self::History { source, .. } => Some(source),
        }
    }
}
