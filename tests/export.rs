//! `paxosctl export` and `paxosctl import` end to end: real `paxosd`
//! processes on loopback, the real `paxosctl`, and the client library to
//! write what the command line cannot (bytes that are not UTF-8, system
//! keys).

mod common;

use common::*;
use paxosd::types::{Key, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Keys and values exactly as bytes.
type Contents = BTreeMap<Vec<u8>, Vec<u8>>;

/// Keys and values to write, in order.
type Writes = Vec<(Vec<u8>, Vec<u8>)>;

fn put_all(cluster: &TestCluster, contents: &[(Vec<u8>, Vec<u8>)]) {
    in_parallel(cluster, contents, |client, (key, value)| {
        client.put(&Key(key.clone()), Value(value.clone())).expect("put");
    });
}

/// Decodes a `key`/`key_hex` or `value`/`value_hex` field, asserting that
/// exactly one of the two is there and that hex is used only when needed.
fn field(line: &serde_json::Map<String, serde_json::Value>, name: &str, text: &str) -> Vec<u8> {
    let hex_name = format!("{name}_hex");
    match (line.get(name), line.get(&hex_name)) {
        (Some(serde_json::Value::String(s)), None) => s.as_bytes().to_vec(),
        (None, Some(serde_json::Value::String(h))) => {
            assert_eq!(*h, h.to_lowercase(), "lowercase hex: {text}");
            let bytes: Vec<u8> =
                (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex")).collect();
            assert!(std::str::from_utf8(&bytes).is_err(), "hex only for bytes that are not UTF-8: {text}");
            bytes
        }
        _ => panic!("exactly one of {name} and {hex_name}: {text}"),
    }
}

/// An export file's keys, values and versions, checking its format: one
/// object per line with exactly these fields, keys in strictly increasing
/// byte order.
fn read_export(path: &Path) -> BTreeMap<Vec<u8>, (Vec<u8>, u64)> {
    let text = std::fs::read_to_string(path).expect("read the export");
    let mut keys = BTreeMap::new();
    let mut last: Option<Vec<u8>> = None;
    for line in text.lines() {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).expect("a JSON object");
        assert_eq!(object.len(), 3, "key, value, version: {line}");
        let key = field(&object, "key", line);
        let value = field(&object, "value", line);
        let version = object.get("version").and_then(serde_json::Value::as_u64).expect("version");
        assert!(last.as_ref().is_none_or(|l| *l < key), "keys in order: {line}");
        last = Some(key.clone());
        keys.insert(key, (value, version));
    }
    keys
}

fn values(exported: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>) -> Contents {
    exported.iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect()
}

/// Exports `cluster` to `path`, asserting success; the time it took.
fn export(cluster: &TestCluster, path: &Path) -> Duration {
    let started = Instant::now();
    let out = cluster.ctl(&["export", "--output", path.to_str().expect("utf-8 path")]);
    let took = started.elapsed();
    assert_exit(&out, 0);
    eprintln!("{}", stderr(&out).trim());
    took
}

/// 10,000 keys of every shape: plain, overwritten, with JSON's special
/// characters, with bytes that are not UTF-8 in the key or the value; some
/// of them deleted afterwards; and a system key.
fn ten_thousand_keys() -> (Writes, Vec<Vec<u8>>) {
    let mut written: Writes = (0..10_000)
        .map(|i| {
            let key = match i % 500 {
                0 => vec![b'b', b'i', b'n', 0xff, (i / 500) as u8],
                1 => format!("quote\"/back\\slash/newline\n/ключ/{i}").into_bytes(),
                _ => format!("user/{i:05}").into_bytes(),
            };
            let value = match i % 10 {
                0 => vec![0xfe, 0x00, (i % 256) as u8, 0xc3],
                1 => String::new().into_bytes(),
                _ => format!("value of {i}: ü\t\"").into_bytes(),
            };
            (key, value)
        })
        .collect();
    let deleted: Vec<Vec<u8>> = written.iter().step_by(7).map(|(k, _)| k.clone()).collect();
    // A few keys written twice: the export has the second value.
    for i in (3..10_000).step_by(997) {
        let key = written[i].0.clone();
        written.push((key, format!("second value of {i}").into_bytes()));
    }
    (written, deleted)
}

#[test]
fn ten_thousand_keys_exported_and_imported_into_a_fresh_cluster_come_back_the_same() {
    let a = TestCluster::start("export-a", 3);
    let (written, deleted) = ten_thousand_keys();
    let (first, second) = written.split_at(10_000);
    put_all(&a, first);
    put_all(&a, second);
    in_parallel(&a, &deleted, |client, key| {
        client.delete(&Key(key.clone())).expect("delete");
    });
    let epoch_key = Key(paxosd::core::rejoin::EPOCH_KEY.to_vec());
    a.client(None).put(&epoch_key, Value::from("a system key")).expect("write a system key");
    let mut expected: Contents = written.into_iter().collect();
    for key in &deleted {
        expected.remove(key);
    }

    let file_a = a.dir.join("a.jsonl");
    let export_took = export(&a, &file_a);
    let exported = read_export(&file_a);
    assert_eq!(exported.len(), expected.len());
    assert!(values(&exported) == expected, "cluster A's export holds exactly its live keys and values");
    assert!(exported.iter().any(|(_, (_, version))| *version == 2), "overwritten keys are at version 2");

    let b = TestCluster::start("export-b", 3);
    let started = Instant::now();
    let out = b.ctl(&["import", file_a.to_str().expect("utf-8 path")]);
    let import_took = started.elapsed();
    assert_exit(&out, 0);
    let summary = stdout(&out);
    assert!(summary.contains(&format!("{} written, 0 present", expected.len())), "{summary}");

    let file_b = b.dir.join("b.jsonl");
    export(&b, &file_b);
    let reexported = read_export(&file_b);
    assert!(values(&reexported) == expected, "cluster B holds what A held");
    assert!(reexported.values().all(|(_, version)| *version == 1), "versions start again at 1");
    eprintln!(
        "{} keys: export took {:.1} s, import {:.1} s",
        expected.len(),
        export_took.as_secs_f64(),
        import_took.as_secs_f64()
    );
}

fn write_file(cluster: &TestCluster, name: &str, lines: &[&str]) -> String {
    let path = cluster.dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the file");
    path.to_str().expect("utf-8 path").to_string()
}

fn read_json(cluster: &TestCluster, key: &str) -> String {
    stdout(&cluster.ctl(&["read", key, "--json"]))
}

#[test]
fn import_writes_only_absent_keys_and_exits_3_naming_those_present() {
    let cluster = TestCluster::start("import-present", 3);
    assert_exit(&cluster.ctl(&["propose", "mine", "kept"]), 0);
    let file = write_file(
        &cluster,
        "in.jsonl",
        &[
            r#"{"key":"mine","value":"imported","version":7}"#,
            r#"{"key":"new","value":"fresh","version":7}"#,
            r#"{"key":"bytes","value_hex":"ff00"}"#,
        ],
    );
    let out = cluster.ctl(&["import", &file]);
    assert_exit(&out, 3);
    assert!(stdout(&out).contains("3 keys in"), "{}", stdout(&out));
    assert!(stdout(&out).contains("2 written, 1 present already"), "{}", stdout(&out));
    assert!(stderr(&out).contains("1 keys were present already") && stderr(&out).contains("\"mine\""));
    assert_eq!(read_json(&cluster, "mine"), "{\"key\":\"mine\",\"value\":\"kept\",\"version\":1}\n");
    assert_eq!(read_json(&cluster, "new"), "{\"key\":\"new\",\"value\":\"fresh\",\"version\":1}\n");
    let bytes = cluster.client(None).read(&Key::from("bytes")).expect("read");
    assert_eq!(bytes.value, Some(Value(vec![0xff, 0x00])));

    // Again: every key is present now, two of them with the file's value.
    let out = cluster.ctl(&["import", &file]);
    assert_exit(&out, 3);
    assert!(stdout(&out).contains("0 written, 3 present already"), "{}", stdout(&out));
    assert!(stdout(&out).contains("(2 of them with the file's value)"), "{}", stdout(&out));
}

#[test]
fn a_malformed_file_is_refused_naming_its_line_and_nothing_is_written() {
    let cluster = TestCluster::start("import-malformed", 3);
    let file = write_file(
        &cluster,
        "bad.jsonl",
        &[r#"{"key":"first","value":"1"}"#, "", r#"{"key":"second","value":"2"}"#, r#"{"key":"third","#],
    );
    let out = cluster.ctl(&["import", &file]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("line 4: not an export line"), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing was written"), "{}", stderr(&out));
    assert_eq!(read_json(&cluster, "first"), "{\"key\":\"first\",\"value\":null,\"version\":0}\n");

    let file =
        write_file(&cluster, "twice.jsonl", &[r#"{"key":"k","value":"1"}"#, r#"{"key":"k","value":"2"}"#]);
    let out = cluster.ctl(&["import", &file]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("line 2: the key is already on line 1"), "{}", stderr(&out));
}

/// Runs `paxosctl export` to `name` in the cluster's dir; the output and
/// the file's path.
fn export_to(cluster: &TestCluster, name: &str) -> (std::process::Output, std::path::PathBuf) {
    let file = cluster.dir.join(name);
    (cluster.ctl(&["export", "--output", file.to_str().expect("utf-8 path")]), file)
}

fn numbered(prefix: &str, count: usize) -> Writes {
    (0..count).map(|i| (format!("{prefix}{i:03}").into_bytes(), format!("v{i}").into_bytes())).collect()
}

#[test]
fn export_goes_on_without_a_dead_node_reads_what_the_others_disagree_on_and_needs_a_majority() {
    let mut cluster = TestCluster::start("export-dead", 3);
    let early = numbered("early", 100);
    put_all(&cluster, &early);
    // A write is answered once a majority holds it: wait until node 3 holds
    // every early key, so that later only the late ones are in dispute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cluster.status_line(3).contains(" keys=100 ") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    cluster.kill(3);
    let late = numbered("late", 50);
    put_all(&cluster, &late);
    let everything: Contents = early.into_iter().chain(late).collect();

    let (out, file) = export_to(&cluster, "without-3.jsonl");
    assert_exit(&out, 0);
    let text = stderr(&out);
    assert!(text.contains("node 3 did not answer the scan"), "{text}");
    assert!(text.contains("150 keys written (150 settled by the scan, 0 by a read)"), "{text}");
    assert!(text.contains("2 of 3 nodes scanned in full"), "{text}");
    assert!(values(&read_export(&file)) == everything);

    // Node 3 missed the late keys: with node 2 gone, nodes 1 and 3 disagree
    // on them, and the export reads them through the cluster.
    cluster.kill(2);
    cluster.start_node(3);
    cluster.wait_until_answers(3);
    let (out, file) = export_to(&cluster, "without-2.jsonl");
    assert_exit(&out, 0);
    let text = stderr(&out);
    assert!(text.contains("150 keys written (100 settled by the scan, 50 by a read)"), "{text}");
    assert!(values(&read_export(&file)) == everything);

    cluster.kill(3);
    let (out, file) = export_to(&cluster, "without-2-and-3.jsonl");
    assert_exit(&out, 4);
    assert!(stderr(&out).contains("needs a majority (2)"), "{}", stderr(&out));
    assert!(!file.exists(), "a failed export leaves no file");
    assert!(!cluster.dir.join("without-2-and-3.jsonl.partial").exists());
}

#[test]
fn an_export_during_writes_has_every_value_acknowledged_before_it_began() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const KEYS: usize = 400;
    let cluster = TestCluster::start("export-busy", 3);
    let key = |i: usize| Key(format!("counter{i:03}").into_bytes());
    // The last value acknowledged for each key; values count up from 1.
    let acked: Vec<AtomicU64> = (0..KEYS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let (before, exported, after) = std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let (acked, stop, cluster) = (&acked, &stop, &cluster);
            scope.spawn(move || {
                let mut client = cluster.client(None);
                for round in 1.. {
                    for i in (writer..KEYS).step_by(WRITERS) {
                        client.put(&key(i), Value(format!("{round}").into_bytes())).expect("put");
                        acked[i].store(round, Ordering::SeqCst);
                    }
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
            });
        }
        while acked.iter().any(|a| a.load(Ordering::SeqCst) < 2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        let (out, file) = export_to(&cluster, "busy.jsonl");
        let after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
        stop.store(true, Ordering::SeqCst);
        assert_exit(&out, 0);
        eprintln!("{}", stderr(&out).trim());
        (before, read_export(&file), after)
    });
    assert_eq!(exported.len(), KEYS);
    for i in 0..KEYS {
        let (value, _) = &exported[&key(i).0];
        let value: u64 = String::from_utf8_lossy(value).parse().expect("a number");
        // At least what was acknowledged before the export began; at most
        // the write in flight when it ended.
        assert!(
            before[i] <= value && value <= after[i] + 1,
            "key {i}: {} <= {value} <= {} + 1",
            before[i],
            after[i]
        );
    }
}
