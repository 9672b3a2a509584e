//! What each client does, in the meaning of `paxosctl bench --workload`:
//! which keys a client owns and which operation it runs next. Pure: no I/O,
//! no clock, so the sequences are tested exactly.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Each client writes its own keys in turn.
    Put,
    /// Each client compare-and-sets its own keys in turn, expecting the
    /// revision of its last answer for the key (absent at first).
    Cas,
    /// Each client reads its own keys in turn (linearizable reads; the keys
    /// are written once before the warm-up).
    Read,
    /// Each client alternates a put and a read of its own keys: put k0,
    /// read k0, put k1, read k1, ...
    Mixed,
    /// Every client writes one key: every write contends (in paxosd; etcd orders every write in one log anyway).
    Contended,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Cas => "cas",
            Workload::Read => "read",
            Workload::Mixed => "mixed",
            Workload::Contended => "contended",
        }
    }
}

/// One operation on one of the client's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Put,
    Read,
    /// `If(mod_revision(key) == expected) Then(put) Else(get)`.
    Cas,
}

/// The keys of client `client` in run `run`: `bench-<run>-c<client>-k<k>`,
/// or the one hot key `bench-<run>-hot` that every client of the contended
/// workload shares.
pub fn keys_of(workload: Workload, run: u64, client: usize, keys_per_client: usize) -> Vec<String> {
    match workload {
        Workload::Contended => vec![format!("bench-{run}-hot")],
        _ => (0..keys_per_client.max(1)).map(|k| format!("bench-{run}-c{client}-k{k}")).collect(),
    }
}

/// A client's operations, one after another: the index of the key (into
/// its `keys_of`) and what to do with it.
#[derive(Clone, Debug)]
pub struct Sequence {
    workload: Workload,
    keys: usize,
    /// Operations handed out so far.
    n: usize,
}

impl Sequence {
    pub fn new(workload: Workload, keys: usize) -> Sequence {
        Sequence { workload, keys: keys.max(1), n: 0 }
    }

    pub fn next_op(&mut self) -> (usize, Kind) {
        let n = self.n;
        self.n = self.n.wrapping_add(1);
        match self.workload {
            Workload::Put | Workload::Contended => (n % self.keys, Kind::Put),
            Workload::Read => (n % self.keys, Kind::Read),
            Workload::Cas => (n % self.keys, Kind::Cas),
            // Each key is written before it is read, so no read finds it absent.
            Workload::Mixed => {
                ((n / 2) % self.keys, if n.is_multiple_of(2) { Kind::Put } else { Kind::Read })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(workload: Workload, keys: usize, count: usize) -> Vec<(usize, Kind)> {
        let mut sequence = Sequence::new(workload, keys);
        (0..count).map(|_| sequence.next_op()).collect()
    }

    #[test]
    fn keys_are_named_by_run_client_and_index_and_the_hot_key_is_shared() {
        assert_eq!(keys_of(Workload::Put, 42, 3, 2), ["bench-42-c3-k0", "bench-42-c3-k1"]);
        assert_eq!(keys_of(Workload::Contended, 42, 3, 16), ["bench-42-hot"]);
        assert_eq!(keys_of(Workload::Contended, 42, 0, 16), keys_of(Workload::Contended, 42, 7, 16));
    }

    #[test]
    fn put_read_and_cas_take_the_keys_in_turn() {
        use Kind::*;
        assert_eq!(first(Workload::Put, 3, 4), [(0, Put), (1, Put), (2, Put), (0, Put)]);
        assert_eq!(first(Workload::Read, 2, 3), [(0, Read), (1, Read), (0, Read)]);
        assert_eq!(first(Workload::Cas, 2, 3), [(0, Cas), (1, Cas), (0, Cas)]);
        assert_eq!(first(Workload::Contended, 1, 2), [(0, Put), (0, Put)]);
    }

    #[test]
    fn mixed_is_half_puts_half_reads_each_read_after_the_put_of_its_key() {
        use Kind::*;
        assert_eq!(
            first(Workload::Mixed, 2, 6),
            [(0, Put), (0, Read), (1, Put), (1, Read), (0, Put), (0, Read)]
        );
    }
}
