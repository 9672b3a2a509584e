//! `paxosctl list` end to end: real `paxosd` processes on loopback, the
//! real `paxosctl`, and the client library to write the keys (some of them
//! bytes that are not UTF-8).

mod common;

use common::*;
use paxosd::types::{Key, Value};
use std::collections::BTreeMap;

/// Keys under the listed prefix.
const LISTED: usize = 10_000;
const PREFIX: &str = "app/";

/// Each key and the version it ends at, or `None` when it ends deleted.
type Expected = BTreeMap<Vec<u8>, Option<u64>>;

/// The numbered keys under `PREFIX`.
fn numbered(i: usize) -> Vec<u8> {
    format!("{PREFIX}{i:05}").into_bytes()
}

/// Keys under `PREFIX` that need escaping in text, each with its text
/// line's key; and the prefix itself, which is a key under it too.
fn unusual_keys() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"app/".to_vec(), "app/"),
        (b"app/tab\there\n".to_vec(), "app/tab\\x09here\\x0a"),
        (b"app/back\\slash".to_vec(), "app/back\\\\slash"),
        (b"app/\xff!".to_vec(), "app/\\xff!"),
        ("app/ключ".as_bytes().to_vec(), "app/ключ"),
    ]
}

/// Keys that sort right before and right after the keys under `PREFIX`
/// ('.' and '0' are the bytes around '/'), with a few shapes of their own.
fn outside_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = vec![b"app".to_vec(), b"app.".to_vec(), b"app.\xff\xff\xff".to_vec()];
    keys.extend([b"app0".to_vec(), b"app0\x00".to_vec(), b"apq".to_vec(), b"a".to_vec(), b"b".to_vec()]);
    for i in 0..100 {
        keys.push(format!("app./{i:03}").into_bytes());
        keys.push(format!("app0/{i:03}").into_bytes());
    }
    keys
}

/// Writes the keys, and says what each one ends at: every key once; then,
/// of the numbered ones, every 3rd again, every 7th deleted, and every
/// 77th (deleted) written again.
fn write_keys(cluster: &TestCluster) -> Expected {
    let mut expected = Expected::new();
    let mut all: Vec<Vec<u8>> = (0..LISTED).map(numbered).collect();
    all.extend(unusual_keys().into_iter().map(|(key, _)| key));
    all.extend(outside_keys());
    put(cluster, &all);
    expected.extend(all.iter().map(|key| (key.clone(), Some(1))));

    let twice: Vec<Vec<u8>> = (0..LISTED).step_by(3).map(numbered).collect();
    put(cluster, &twice);
    let deleted: Vec<Vec<u8>> = (0..LISTED).step_by(7).map(numbered).collect();
    in_parallel(cluster, &deleted, |client, key| {
        client.delete(&Key(key.clone())).expect("delete");
    });
    let again: Vec<Vec<u8>> = (0..LISTED).step_by(77).map(numbered).collect();
    put(cluster, &again);
    for i in 0..LISTED {
        let writes = 1 + u64::from(i % 3 == 0) + u64::from(i % 7 == 0) + u64::from(i % 77 == 0);
        let live = i % 7 != 0 || i % 77 == 0;
        expected.insert(numbered(i), live.then_some(writes));
    }
    expected
}

fn put(cluster: &TestCluster, keys: &[Vec<u8>]) {
    in_parallel(cluster, keys, |client, key| {
        client.put(&Key(key.clone()), Value::from("v")).expect("put");
    });
}

/// The live keys of `expected` that start with `prefix`, in key order.
fn live_under(expected: &Expected, prefix: &[u8]) -> Vec<(Vec<u8>, u64)> {
    let live = expected.iter().filter_map(|(key, version)| Some((key.clone(), (*version)?)));
    live.filter(|(key, _)| key.starts_with(prefix)).collect()
}

/// A `list --json` line's key and version, checking its format: exactly
/// `key` (or `key_hex`, only for bytes that are not UTF-8) and `version`.
fn parse_json_line(line: &str) -> (Vec<u8>, u64) {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).expect("a JSON object");
    assert_eq!(object.len(), 2, "key and version alone: {line}");
    let version = object.get("version").and_then(serde_json::Value::as_u64).expect("a version");
    let key = match (object.get("key"), object.get("key_hex")) {
        (Some(serde_json::Value::String(text)), None) => text.as_bytes().to_vec(),
        (None, Some(serde_json::Value::String(hex))) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            assert!(std::str::from_utf8(&bytes).is_err(), "hex only for bytes that are not UTF-8: {line}");
            bytes
        }
        _ => panic!("exactly one of key and key_hex: {line}"),
    };
    (key, version)
}

/// Runs `paxosctl list ARGS`, asserting it succeeds; its stdout, and its
/// stderr summary.
fn list(cluster: &TestCluster, args: &[&str]) -> (String, String) {
    let out = cluster.ctl(&[&["list"], args].concat());
    assert_exit(&out, 0);
    (stdout(&out), stderr(&out))
}

fn list_json(cluster: &TestCluster, prefix: &str) -> (Vec<(Vec<u8>, u64)>, String) {
    let (text, summary) = list(cluster, &[prefix, "--json"]);
    (text.lines().map(parse_json_line).collect(), summary)
}

/// The text line `list` prints for `key` at `version`.
fn text_line(key: &[u8], version: u64) -> String {
    let unusual = unusual_keys().into_iter().find(|(k, _)| k == key);
    let shown = match unusual {
        Some((_, shown)) => shown.to_string(),
        None => {
            assert!(key.iter().all(|b| b.is_ascii_graphic() && *b != b'\\'), "{key:?} is shown as it is");
            String::from_utf8(key.to_vec()).expect("ASCII")
        }
    };
    format!("{shown}\t{version}\n")
}

#[test]
fn list_prints_exactly_the_live_keys_under_the_prefix_with_their_versions() {
    let cluster = TestCluster::start("list", 3);
    let expected = write_keys(&cluster);
    // A system key under no prefix but the empty one: never listed.
    let epoch_key = Key(paxosd::core::rejoin::EPOCH_KEY.to_vec());
    cluster.client(None).put(&epoch_key, Value::from("a system key")).expect("write a system key");
    let wanted = live_under(&expected, PREFIX.as_bytes());
    let deleted =
        expected.iter().filter(|(key, v)| key.starts_with(PREFIX.as_bytes()) && v.is_none()).count();
    assert_eq!(wanted.len(), LISTED + unusual_keys().len() - deleted);

    let (listed, summary) = list_json(&cluster, PREFIX);
    eprintln!("{}", summary.trim());
    assert!(listed == wanted, "the listing is exactly the live keys under {PREFIX}, in order, with versions");
    assert!(summary.contains(&format!("list: {} keys listed", wanted.len())), "{summary}");
    assert!(summary.contains(&format!("{deleted} deleted or absent keys left out")), "{summary}");
    assert!(summary.contains("3 of 3 nodes scanned in full"), "{summary}");

    let (text, _) = list(&cluster, &[PREFIX]);
    let lines: String = wanted.iter().map(|(key, version)| text_line(key, *version)).collect();
    assert!(text == lines, "the text listing: one escaped KEY<TAB>VERSION line per key");

    // Without a prefix: every live key, the system key left out.
    let (everything, _) = list_json(&cluster, "");
    assert!(everything == live_under(&expected, b""), "every live key, and no system key");
}

#[test]
fn a_prefix_no_key_has_lists_nothing_and_list_needs_a_majority() {
    let mut cluster = TestCluster::start("list-none", 3);
    put(&cluster, &[b"app/1".to_vec(), b"app0".to_vec(), b"apq".to_vec()]);
    for prefix in ["app/2", "app/10", "zzz", "\u{10ffff}"] {
        let (text, summary) = list(&cluster, &[prefix]);
        assert_eq!(text, "", "nothing under {prefix:?}");
        assert!(summary.contains("list: 0 keys listed"), "{summary}");
    }
    assert_eq!(list(&cluster, &["app/1"]).0, "app/1\t1\n", "a key equal to the prefix is under it");

    let out = cluster.ctl(&["--node", "1", "list", "app/"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--node does not apply"), "{}", stderr(&out));
    let out = cluster.ctl(&["list", &"k".repeat(paxosd::limits::KEY_BYTES_MAX + 1)]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("no key has more than"), "{}", stderr(&out));

    cluster.kill(2);
    cluster.kill(3);
    let out = cluster.ctl(&["list", "app/"]);
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("list failed: only 1 of 3 nodes"), "{}", stderr(&out));
}
