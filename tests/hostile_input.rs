//! Hostile input, from the network and from the disk: random bytes, and
//! valid datagrams and logs damaged on purpose (bits flipped, bytes cut,
//! inserted and repeated, lengths rewritten), fed to the datagram decoder,
//! to a real node behind it, and to log recovery. Each test runs a fixed
//! seed and names the case that failed; `fuzz/` runs the same checks under
//! cargo fuzz (see docs/fuzzing.md).

mod hostile;

use hostile::logs::{self, FORMATS};
use hostile::messages::{self, VARIANTS};
use hostile::node::{self, Harness};
use paxosd::auth::Keyring;
use paxosd::core::rng::Rng;
use paxosd::storage::Record;
use paxosd::storage::log::{HEADER_BYTES, RecoveryError, TailKind};
use paxosd::wire;

#[test]
fn every_kind_of_message_is_generated_within_the_limits_and_decodes() {
    let mut rng = Rng::new(1);
    for kind in 0..VARIANTS {
        for case in 0..20 {
            let msg = messages::message(&mut rng, kind);
            assert_eq!(messages::variant(&msg), kind, "kind {kind} case {case}");
            assert!(msg.is_within_limits(), "kind {kind} case {case}: {msg:?}");
            let header = messages::header(&mut rng);
            let bytes = wire::encode_datagram(header, std::slice::from_ref(&msg), &Keyring::none());
            let decoded = messages::check_decoded(&bytes);
            assert_eq!(decoded, Some((header, vec![msg])), "kind {kind} case {case}");
        }
    }
}

#[test]
fn random_bytes_never_panic_the_decoder() {
    let mut rng = Rng::new(2);
    let mut accepted = 0;
    for case in 0..20_000 {
        // Most behind a valid header and a message count and kind, so
        // that what follows is decoded as the fields of a message.
        let mut bytes = match case % 4 {
            0 => Vec::new(),
            _ => wire::encode_datagram(messages::header(&mut rng), &[], &Keyring::none()),
        };
        if bytes.pop().is_some() {
            bytes.extend([rng.range(1, 2) as u8, rng.below(VARIANTS as u64) as u8]);
        }
        bytes.extend((0..rng.below(200)).map(|_| rng.next_u64() as u8));
        accepted += messages::check_decoded(&bytes).is_some() as u32;
    }
    assert!(accepted > 0, "the decoder accepted none of the random datagrams");
}

/// Whatever the decoder accepts of a damaged datagram re-encodes to what
/// decodes the same (`messages::check_decoded`); a good share is accepted,
/// so that the check has something to check.
#[test]
fn damaged_datagrams_never_panic_the_decoder_and_what_it_accepts_round_trips() {
    let mut rng = Rng::new(3);
    let (mut accepted, cases) = (0, 5_000);
    for case in 0..cases {
        let datagrams = messages::datagrams(&mut rng);
        for bytes in &datagrams {
            let decoded = messages::check_decoded(bytes);
            assert!(decoded.is_some(), "case {case}: an undamaged datagram was dropped");
        }
        let mut bytes = datagrams[rng.below(datagrams.len() as u64) as usize].clone();
        messages::damage(&mut rng, &mut bytes);
        accepted += messages::check_decoded(&bytes).is_some() as u32;
    }
    assert!(accepted > cases / 20, "only {accepted} of {cases} damaged datagrams were accepted");
}

/// A node fed, as the driver feeds it, a stream of valid, damaged and
/// random datagrams from clients and peers, with its timers run now and
/// then: it never panics, never writes a record its log refuses, never
/// sends a message its peers or clients would drop, and restarts from the
/// records it wrote.
#[test]
fn a_node_fed_hostile_datagrams_keeps_its_bounds_and_restarts() {
    for seed in 0..6 {
        let mut rng = Rng::new(100 + seed);
        let mut harness = Harness::new(seed, Vec::new());
        harness.warm_up();
        let mut fed = 0;
        for case in 0..400 {
            let client = node::CLIENT + rng.below(3) as u32;
            for bytes in hostile_datagrams(&mut rng) {
                fed += harness.feed(client, &bytes) as u32;
            }
            if case % 25 == 0 {
                harness.settle(3);
            }
        }
        harness.settle(10);
        assert!(fed > 150, "seed {seed}: only {fed} datagrams were accepted");
        let mut restarted = harness.restart(seed + 1);
        for bytes in hostile_datagrams(&mut rng) {
            restarted.feed(node::CLIENT, &bytes);
        }
        restarted.settle(3);
    }
}

/// One sender's turn: valid datagrams, one of them damaged, or random bytes
/// behind a valid header.
fn hostile_datagrams(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut datagrams = messages::datagrams(rng);
    match rng.below(10) {
        0..=3 => {}
        4..=8 => {
            let at = rng.below(datagrams.len() as u64) as usize;
            messages::damage(rng, &mut datagrams[at]);
        }
        _ => {
            let mut bytes = wire::encode_datagram(messages::header(rng), &[], &Keyring::none());
            bytes.pop();
            bytes.extend((0..rng.below(100)).map(|_| rng.next_u64() as u8));
            datagrams = vec![bytes];
        }
    }
    datagrams
}

#[test]
fn random_bytes_never_panic_log_recovery() {
    let mut rng = Rng::new(4);
    for case in 0..6_000 {
        let mut bytes = match case % 4 {
            3 => Vec::new(),
            i => logs::write(&mut rng, FORMATS[i], Vec::new()).bytes,
        };
        bytes.extend((0..rng.below(300)).map(|_| rng.next_u64() as u8));
        let _ = logs::check_recovery(&bytes);
    }
}

/// Every byte of a valid log of each format, damaged in turn: the damage
/// is always found. In the header it is a bad header; in a unit (a frame,
/// in version 1) followed by others it is corruption at that unit; in the
/// last unit it is a damaged tail, and the records before it are returned,
/// exactly those.
#[test]
fn one_damaged_byte_of_a_valid_log_is_always_found() {
    let mut rng = Rng::new(5);
    for format in FORMATS.repeat(3) {
        let records = logs::records(&mut rng, format, 16);
        let log = logs::write(&mut rng, format, records);
        assert_eq!(logs::check_recovery(&log.bytes).map(|r| r.records), Ok(log.records.clone()));
        for at in 0..log.bytes.len() {
            let mut bytes = log.bytes.clone();
            bytes[at] ^= rng.range(1, 255) as u8;
            let got = logs::check_recovery(&bytes);
            let unit = log.units.iter().rposition(|&start| start <= at);
            let case = || format!("format {format}, byte {at}: {got:?}");
            match unit {
                None => assert_eq!(got, Err(RecoveryError::BadHeader), "{}", case()),
                Some(u) if u + 2 < log.units.len() => {
                    let corrupt = RecoveryError::Corrupt { offset: log.units[u] as u64 };
                    assert_eq!(got, Err(corrupt), "{}", case())
                }
                Some(u) => {
                    let torn =
                        got.as_ref().ok().and_then(|r| r.torn_tail).unwrap_or_else(|| panic!("{}", case()));
                    let damaged = (log.units[u] as u64, TailKind::Damaged);
                    assert_eq!((torn.offset, torn.kind), damaged, "{}", case());
                    let records = got.as_ref().map(|r| &r.records[..]);
                    assert_eq!(records, Ok(&log.records[..log.before[u]]), "{}", case());
                }
            }
        }
    }
}

/// Logs of each format damaged in one to three places, lengths included:
/// recovery returns the records of whole units written, from the first
/// on, or refuses; never a record that was not written.
#[test]
fn a_damaged_log_recovers_only_records_that_were_written() {
    let mut rng = Rng::new(6);
    for case in 0..3_000 {
        let format = FORMATS[case % FORMATS.len()];
        let count = rng.range(1, 20) as usize;
        let records = logs::records(&mut rng, format, count);
        let log = logs::write(&mut rng, format, records);
        let mut bytes = log.bytes.clone();
        logs::damage(&mut rng, &log, &mut bytes);
        let got = logs::check_recovery(&bytes);
        logs::check_prefix(&log, &got);
        if let Err(RecoveryError::BadHeader) = got {
            assert_ne!(bytes.get(..HEADER_BYTES), log.bytes.get(..HEADER_BYTES), "case {case}");
        }
    }
}

/// A node starts from whatever recovery returns for a log, damaged or
/// not, as the driver starts one (`LogFile::open` adds `CatchingUp` after
/// a damaged last unit), and runs its timers within its bounds: the
/// records come from a disk, which may hold any membership, fence or mark.
#[test]
fn a_node_starts_from_the_records_of_any_recovered_log() {
    let mut rng = Rng::new(8);
    for case in 0..400 {
        let format = FORMATS[case % FORMATS.len()];
        let count = rng.range(1, 12) as usize;
        let records = logs::records(&mut rng, format, count);
        let log = logs::write(&mut rng, format, records);
        let mut bytes = log.bytes.clone();
        if rng.chance(0.5) {
            logs::damage(&mut rng, &log, &mut bytes);
        }
        let Ok(mut recovered) = logs::check_recovery(&bytes) else { continue };
        if recovered.may_have_lost_acknowledged_state() {
            recovered.records.push(Record::CatchingUp);
        }
        let mut harness = Harness::new(case as u64, recovered.records);
        harness.settle(3);
    }
}

/// Writes the seed corpora of the fuzz targets: valid datagrams of every
/// kind, and valid logs of every format. Not a test: run it by hand (see
/// docs/fuzzing.md) before a first fuzzing run.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut rng = Rng::new(7);
    let dir = root.join("datagram");
    std::fs::create_dir_all(&dir).expect("create the datagram corpus");
    for kind in 0..VARIANTS {
        for case in 0..4 {
            let header = messages::header(&mut rng);
            let bytes = wire::encode_datagram(header, &[messages::message(&mut rng, kind)], &Keyring::none());
            std::fs::write(dir.join(format!("seed-kind{kind}-{case}")), bytes).expect("write a seed");
        }
    }
    for case in 0..40 {
        let bytes = messages::datagrams(&mut rng).swap_remove(0);
        std::fs::write(dir.join(format!("seed-mixed-{case}")), bytes).expect("write a seed");
    }
    let dir = root.join("log_recovery");
    std::fs::create_dir_all(&dir).expect("create the log corpus");
    for format in FORMATS {
        for case in 0..20 {
            let records = logs::records(&mut rng, format, case % 8);
            let bytes = logs::write(&mut rng, format, records).bytes;
            std::fs::write(dir.join(format!("seed-v{format}-{case}")), bytes).expect("write a seed");
        }
    }
}
