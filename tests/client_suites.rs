//! Real clients' own test suites, unmodified, against memcached, a node
//! (`--insecure-no-auth`) and the sidecar (`memgate up --nodes 1`: the
//! sidecar in front of one TLS + SASL node): pymemcache 4.0's integration
//! tests, python-binary-memcached 0.33's tests, pylibmc 1.6.3's tests and
//! doctests, node `memcached` 2.2.2's mocha tests, and memcached 1.6.18's own
//! protocol tests (t/*.t). `.ci/run` fetches them from PyPI, npm and
//! Debian's source archive into tests/clients/suites/cache;
//! tests/clients/suites/run.py runs them against one subject in a network
//! namespace of its own (the suites hard-code 127.0.0.1:11211 and more).
//!
//! memcached's results are the reference: every test it passes must pass on
//! the node and through the sidecar, except the deliberate differences that
//! tests/clients/suites/expected.txt names one by one, each of which must
//! still fail (so that the list stays true).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::process::BIN;

const SUBJECTS: [&str; 3] = ["memcached", "node", "sidecar"];

/// passed and failed test names, per suite.
type Results = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

fn suites_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/suites")
}

/// Each subject's results; the three run side by side, one namespace each.
fn run_all() -> BTreeMap<&'static str, Results> {
    let dir = suites_dir();
    let cache = dir.join("cache");
    assert!(
        cache.join("pymemcache-4.0.0").is_dir(),
        "{} holds no suites: run .ci/run to fetch them",
        cache.display()
    );
    let children: Vec<_> = SUBJECTS
        .iter()
        .map(|&subject| {
            // A pid namespace too: whatever a suite leaves running (its
            // stand-in servers are processes) ends with run.py.
            let child = Command::new("unshare")
                .args(["--net", "--mount", "--pid", "--fork", "python3"])
                .arg(dir.join("run.py"))
                .arg(subject)
                .arg(BIN)
                .arg(&cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("unshare and python3 run (.ci/run installs the rest)");
            (subject, child)
        })
        .collect();
    children
        .into_iter()
        .map(|(subject, child)| {
            let done = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&done.stdout);
            assert!(
                done.status.success(),
                "{subject}: run.py failed:\n{stdout}{}",
                String::from_utf8_lossy(&done.stderr)
            );
            (subject, parse(&stdout))
        })
        .collect()
}

fn parse(json: &str) -> Results {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let names = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect()
    };
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(suite, r)| (suite.clone(), (names(&r["passed"]), names(&r["failed"]))))
        .collect()
}

/// (subject, suite, test) of each deliberate difference in expected.txt.
fn expected_differences() -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(suites_dir().join("expected.txt")).unwrap();
    text.lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            // The test is the rest of the line: memcached's own tests are
            // named by what they check, in words.
            let mut words = line.splitn(3, ' ');
            let mut next = || words.next().expect("SUBJECT SUITE TEST").trim().to_string();
            (next(), next(), next())
        })
        .collect()
}

#[test]
fn client_suites_pass_on_node_and_sidecar_as_on_memcached() {
    let results = run_all();
    let expected = expected_differences();
    let reference = &results["memcached"];
    let mut table = String::from("suite | memcached | node | sidecar\n");
    for (suite, (passed, failed)) in reference {
        table += &format!("{suite} | {}/{}", passed.len(), failed.len());
        for subject in &SUBJECTS[1..] {
            let (p, f) = &results[subject][suite];
            table += &format!(" | {}/{}", p.len(), f.len());
        }
        table += "\n";
    }
    eprintln!("{table}");
    let mut wrong = Vec::new();
    for (suite, (passed, _)) in reference {
        // A reference that passes nothing would make every check below vacuous.
        assert!(
            passed.len() >= 40,
            "{suite} passed only {passed:?} on memcached"
        );
        for subject in &SUBJECTS[1..] {
            // Skipped or missing counts as not passed.
            let subject_passed = &results[subject][suite].0;
            for test in passed {
                let listed = expected.contains(&(subject.to_string(), suite.clone(), test.clone()));
                match (!subject_passed.contains(test), listed) {
                    (true, false) => wrong.push(format!("{subject} {suite} {test}: does not pass")),
                    (false, true) => wrong.push(format!(
                        "{subject} {suite} {test}: passes, but expected.txt lists it"
                    )),
                    _ => {}
                }
            }
        }
    }
    for (subject, suite, test) in &expected {
        if !reference.get(suite).is_some_and(|(p, _)| p.contains(test)) {
            wrong.push(format!(
                "expected.txt: {subject} {suite} {test} is not a test memcached passes"
            ));
        }
    }
    assert!(wrong.is_empty(), "{table}\n{}", wrong.join("\n"));
}
