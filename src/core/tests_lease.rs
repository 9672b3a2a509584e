//! The lease machine, input by input: each test feeds endings and times and
//! asserts exactly what the machine asks for next.

use super::client::{Answer, Ending, NotRun, Unknown};
use super::lease::*;
use crate::change::Change;
use crate::types::{Key, NodeId, Time, Value, Version};

const TTL_MS: u64 = 1_000;
const ME: HolderId = HolderId(0xaa);
const OTHER: HolderId = HolderId(0xbb);

fn ms(t: u64) -> Time {
    Time::from_millis(t)
}

fn lease() -> Lease {
    Lease::new(ms(0), Key::from("lock"), ME, TTL_MS, b"me".to_vec())
}

fn record(holder: HolderId) -> Value {
    LeaseRecord { holder, ttl_ms: TTL_MS, label: b"x".to_vec() }.encode()
}

fn read(version: u64, value: Option<Value>) -> Ending {
    Ending::Done(Answer {
        version: Version(version),
        precondition_held: true,
        value,
        value_known: true,
        node: NodeId(1),
    })
}

fn wrote(version: u64) -> Ending {
    Ending::Done(Answer {
        version: Version(version),
        precondition_held: true,
        value: None,
        value_known: false,
        node: NodeId(1),
    })
}

fn conflict(version: u64) -> Ending {
    Ending::Done(Answer {
        version: Version(version),
        precondition_held: false,
        value: None,
        value_known: false,
        node: NodeId(1),
    })
}

fn take(expect: u64) -> Action {
    Action::Run(Change::CasVersion { expect: Version(expect), new: record(ME).with_label(b"me") })
}

trait WithLabel {
    fn with_label(self, label: &[u8]) -> Value;
}

impl WithLabel for Value {
    fn with_label(self, label: &[u8]) -> Value {
        let mut r = LeaseRecord::decode(&self).expect("a record");
        r.label = label.to_vec();
        r.encode()
    }
}

/// A lease that took a free lock at version 1 with its request sent at 0.
fn held() -> Lease {
    let mut l = lease();
    assert_eq!(l.poll(ms(0)), Action::Run(Change::Read));
    l.handle_ending(ms(1), &read(0, None));
    assert_eq!(l.poll(ms(1)), take(0));
    l.handle_ending(ms(2), &wrote(1));
    l
}

#[test]
fn a_free_lock_is_taken_at_once_and_held_for_the_ttl_from_the_send() {
    let mut l = lease();
    assert_eq!(l.poll(ms(0)), Action::Run(Change::Read));
    assert_eq!(l.poll(ms(0)), Action::InFlight);
    l.handle_ending(ms(1), &read(0, None));
    assert_eq!(l.poll(ms(1)), take(0));
    l.handle_ending(ms(2), &wrote(1));
    assert_eq!(l.status(ms(2)), Status::Held { token: Version(1), valid_until: ms(1 + TTL_MS) });
}

#[test]
fn a_held_lock_is_waited_out_from_the_read_that_showed_it() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(OTHER))));
    assert_eq!(l.status(ms(10)), Status::Waiting { holder: Some(OTHER) });
    let until = ms(10).plus_micros(acquire_wait_us(TTL_MS));
    assert_eq!(until, Time(10_000 + 1_010_000 + 1_000));
    // It reads again every poll interval; the same version keeps the wait.
    assert_eq!(l.poll(ms(50)), Action::WaitUntil(ms(110)));
    assert_eq!(l.poll(ms(110)), Action::Run(Change::Read));
    l.handle_ending(ms(120), &read(5, Some(record(OTHER))));
    assert_eq!(l.poll(until.plus_micros(0).plus_micros(0)), take(5));
}

#[test]
fn a_renewal_seen_while_waiting_starts_the_wait_again() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(OTHER))));
    let _ = l.poll(ms(110));
    l.handle_ending(ms(500), &read(6, Some(record(OTHER))));
    let until = ms(500).plus_micros(acquire_wait_us(TTL_MS));
    assert_eq!(l.poll(ms(550)), Action::WaitUntil(ms(600)));
    assert_eq!(l.poll_timeout(), Some(ms(600)));
    let _ = l.poll(ms(600));
    l.handle_ending(ms(601), &read(6, Some(record(OTHER))));
    assert_eq!(l.poll(until), take(6));
}

#[test]
fn a_release_seen_while_waiting_is_taken_at_once() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(OTHER))));
    let _ = l.poll(ms(110));
    l.handle_ending(ms(111), &read(6, None));
    assert_eq!(l.poll(ms(111)), take(6));
}

#[test]
fn a_take_that_loses_the_race_reads_and_waits_out_the_winner() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(1), &read(0, None));
    let _ = l.poll(ms(1));
    l.handle_ending(ms(2), &conflict(1));
    assert_eq!(l.poll(ms(2)), Action::Run(Change::Read));
    l.handle_ending(ms(3), &read(1, Some(record(OTHER))));
    assert_eq!(l.status(ms(3)), Status::Waiting { holder: Some(OTHER) });
}

#[test]
fn the_holder_renews_a_third_into_its_lease_and_counts_from_the_renewal_sent() {
    let mut l = held();
    assert_eq!(l.poll(ms(100)), Action::WaitUntil(ms(1 + TTL_MS / 3)));
    let renew_at = ms(1 + TTL_MS / 3);
    assert_eq!(l.poll(renew_at), take(1));
    l.handle_ending(renew_at.plus_millis(5), &wrote(2));
    let valid_until = renew_at.plus_millis(TTL_MS);
    assert_eq!(l.status(renew_at.plus_millis(5)), Status::Held { token: Version(1), valid_until });
}

#[test]
fn a_lease_not_renewed_in_time_is_lost_by_the_holders_clock() {
    let mut l = held();
    let renew_at = ms(1 + TTL_MS / 3);
    let _ = l.poll(renew_at);
    l.handle_ending(renew_at.plus_millis(5), &Ending::NotRun(NotRun::NoQuorum));
    assert_eq!(l.status(ms(1 + TTL_MS - 1)), Status::Held { token: Version(1), valid_until: ms(1 + TTL_MS) });
    assert_eq!(l.status(ms(1 + TTL_MS)), Status::Lost { token: Version(1), why: LostWhy::Expired });
    assert_eq!(l.poll(ms(1 + TTL_MS)), Action::Finished);
}

#[test]
fn a_renewal_of_unknown_outcome_is_checked_by_a_read_and_counted_from_its_send() {
    let mut l = held();
    let renew_at = ms(1 + TTL_MS / 3);
    let _ = l.poll(renew_at);
    l.handle_ending(renew_at.plus_millis(300), &Ending::Unknown(Unknown::NoAnswer));
    let check_at = renew_at.plus_millis(300 + 50);
    assert_eq!(l.poll(check_at), Action::Run(Change::Read));
    l.handle_ending(check_at, &read(2, Some(record(ME))));
    let valid_until = renew_at.plus_millis(TTL_MS);
    assert_eq!(l.status(check_at), Status::Held { token: Version(1), valid_until });
}

#[test]
fn a_holder_that_finds_another_holder_has_lost_the_lock() {
    let mut l = held();
    let renew_at = ms(1 + TTL_MS / 3);
    let _ = l.poll(renew_at);
    l.handle_ending(renew_at, &conflict(2));
    assert_eq!(l.poll(renew_at), Action::Run(Change::Read));
    l.handle_ending(renew_at, &read(2, Some(record(OTHER))));
    assert_eq!(l.status(renew_at), Status::Lost { token: Version(1), why: LostWhy::Taken });
}

#[test]
fn a_release_deletes_at_the_holders_version_only() {
    let mut l = held();
    l.release();
    assert_eq!(l.poll(ms(10)), Action::Run(Change::DeleteVersion { expect: Version(1) }));
    l.handle_ending(ms(11), &wrote(2));
    assert_eq!(l.status(ms(11)), Status::Released);
    assert_eq!(l.poll(ms(11)), Action::Finished);
}

#[test]
fn a_release_before_taking_gives_up_without_writing() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(OTHER))));
    l.release();
    assert_eq!(l.poll(ms(20)), Action::Finished);
    assert_eq!(l.status(ms(20)), Status::Released);
}

#[test]
fn a_key_that_is_not_a_lock_is_left_alone() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(1), &read(3, Some(Value::from("hello"))));
    assert_eq!(l.status(ms(1)), Status::NotALock);
    assert_eq!(l.poll(ms(1)), Action::Finished);
}

#[test]
fn records_round_trip_and_junk_is_not_a_record() {
    let r =
        LeaseRecord { holder: HolderId(0x0123_4567_89ab_cdef), ttl_ms: 10_000, label: b"a b\0c".to_vec() };
    let v = r.encode();
    assert!(v.as_bytes().starts_with(b"paxosd-lease/1 0123456789abcdef 10000 "));
    assert_eq!(LeaseRecord::decode(&v), Some(r));
    for junk in ["", "paxosd-lease/1 ", "paxosd-lease/1 zz 100 x", "paxosd-lease/1 1 5 x", "lease 1 100 x"] {
        assert_eq!(LeaseRecord::decode(&Value::from(junk)), None, "{junk:?}");
    }
}

fn is_take(a: &Action) -> bool {
    matches!(a, Action::Run(Change::CasVersion { .. }))
}

/// Drives the machine from `from` to `to` (ms), answering each read after
/// 1 ms with `answer(t)` (`None`: the read was not run). Returns the time
/// of the first take, if any.
fn drive(l: &mut Lease, from: u64, to: u64, answer: impl Fn(u64) -> Option<Ending>) -> Option<u64> {
    let mut t = from;
    while t < to {
        match l.poll(ms(t)) {
            Action::Run(Change::Read) => {
                let e = answer(t).unwrap_or(Ending::NotRun(NotRun::NoQuorum));
                l.handle_ending(ms(t + 1), &e);
                t += 1;
            }
            a if is_take(&a) => return Some(t),
            Action::WaitUntil(at) => t = (at.0 / 1000).max(t + 1),
            other => panic!("unexpected {other:?} at {t} ms"),
        }
    }
    None
}

#[test]
fn failed_reads_while_waiting_do_not_start_the_wait_over() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(OTHER))));
    // The holder is dead; one read in every 300 ms is not run.
    let take = drive(&mut l, 10, 60_000, |t| (t % 300 >= 100).then(|| read(5, Some(record(OTHER)))));
    let due = (10_000 + acquire_wait_us(TTL_MS)).div_ceil(1000);
    assert!(take.is_some_and(|t| t >= due && t <= due + 100), "took at {take:?}, due at {due} ms");
}

#[test]
fn a_take_not_run_is_sent_again_soon_not_after_a_new_wait() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(OTHER))));
    let t = drive(&mut l, 10, 10_000, |_| Some(read(5, Some(record(OTHER))))).expect("a take");
    l.handle_ending(ms(t + 1), &Ending::NotRun(NotRun::NoQuorum));
    let again = drive(&mut l, t + 1, 10_000, |_| Some(read(5, Some(record(OTHER))))).expect("a take again");
    assert!(again - t <= 1 + crate::limits::LEASE_RETRY_MS, "taken again {} ms later", again - t);
}

#[test]
fn its_own_record_from_a_forgotten_write_is_taken_afresh_at_once() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(10), &read(5, Some(record(ME))));
    assert_eq!(l.poll(ms(10)), take(5));
}

#[test]
fn a_take_answered_after_its_ttl_is_taken_afresh_not_lost() {
    let mut l = lease();
    let _ = l.poll(ms(0));
    l.handle_ending(ms(1), &read(0, None));
    assert_eq!(l.poll(ms(1)), take(0));
    l.handle_ending(ms(1_500), &wrote(1));
    assert_eq!(l.status(ms(1_500)), Status::Waiting { holder: None });
    assert_eq!(l.poll(ms(1_500)), take(1));
    l.handle_ending(ms(1_502), &wrote(2));
    let valid_until = ms(1_500 + TTL_MS);
    assert_eq!(l.status(ms(1_502)), Status::Held { token: Version(2), valid_until });
}

#[test]
fn a_lease_being_released_is_no_longer_held() {
    let mut l = held();
    l.release();
    assert_eq!(l.status(ms(10)), Status::Released);
    assert_eq!(l.poll_timeout(), Some(Time(0)), "the delete goes out at once");
    assert_eq!(l.poll(ms(10)), Action::Run(Change::DeleteVersion { expect: Version(1) }));
}

#[test]
fn a_release_not_run_is_checked_after_the_retry_delay() {
    let mut l = held();
    l.release();
    let _ = l.poll(ms(10));
    l.handle_ending(ms(11), &Ending::NotRun(NotRun::Unreachable));
    let retry_at = ms(11 + crate::limits::LEASE_RETRY_MS);
    assert_eq!(l.poll(ms(11)), Action::WaitUntil(retry_at));
    assert_eq!(l.poll(retry_at), Action::Run(Change::Read));
    l.handle_ending(retry_at, &read(1, Some(record(ME))));
    assert_eq!(l.poll(retry_at), Action::Run(Change::DeleteVersion { expect: Version(1) }));
}

#[test]
fn a_renewal_sent_twice_counts_from_the_first_send() {
    let mut l = held();
    let first = ms(1 + TTL_MS / 3);
    assert_eq!(l.poll(first), take(1));
    l.handle_ending(first.plus_millis(200), &Ending::Unknown(Unknown::NoAnswer));
    let check = first.plus_millis(250);
    assert_eq!(l.poll(check), Action::Run(Change::Read));
    l.handle_ending(check, &read(1, Some(record(ME))));
    // Still at 1: renew again, expecting 1; the first copy lands meanwhile.
    assert_eq!(l.poll(check), take(1));
    l.handle_ending(check.plus_millis(5), &conflict(2));
    let _ = l.poll(check.plus_millis(5));
    l.handle_ending(check.plus_millis(6), &read(2, Some(record(ME))));
    let valid_until = first.plus_millis(TTL_MS);
    assert_eq!(l.status(check.plus_millis(6)), Status::Held { token: Version(1), valid_until });
}

#[test]
fn a_record_outlives_its_lease_once_an_acquirer_may_take_the_lock() {
    let r = LeaseRecord { holder: OTHER, ttl_ms: TTL_MS, label: Vec::new() };
    assert!(!outlived(&r, acquire_wait_us(TTL_MS)));
    assert!(outlived(&r, acquire_wait_us(TTL_MS) + 1));
}
