//! The deploy/ files are checked like code: units verify, Prometheus accepts
//! the rules and config, YAML parses, and every metric they name is one the
//! code exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::BIN;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap()
}

/// `memgate_*` names in a text, with histogram suffixes folded.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("memgate_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|n| n.ends_with("_seconds")))
            .map(str::to_string)
            .unwrap_or(name);
        names.insert(name);
    }
    names
}

#[test]
fn dashboard_and_alerts_only_use_exported_metrics() {
    let exported: BTreeSet<&str> = memgate::metrics::NODE_METRICS
        .iter()
        .chain(memgate::metrics::PROXY_METRICS)
        .map(|(name, _)| *name)
        .collect();
    let mut used = BTreeSet::new();
    for file in [
        "deploy/grafana/memgate-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let names = metric_names(&read(file));
        assert!(!names.is_empty(), "{file} names no metric");
        for name in &names {
            assert!(
                exported.contains(name.as_str()),
                "{file} uses {name}, which memgate does not export"
            );
        }
        used.extend(names);
    }
    // Every listed metric is really recorded somewhere in the code.
    let mut sources = String::new();
    for dir in ["src/node", "src/proxy"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let constants = read("src/metrics.rs");
    // Handles resolved once inside metrics.rs (RequestMetrics) count too;
    // the constant definitions and the help tables do not.
    for line in constants.lines() {
        let t = line.trim_start();
        if !t.starts_with("pub const") && !t.starts_with('(') && !t.starts_with("///") {
            sources.push_str(line);
            sources.push('\n');
        }
    }
    for name in exported {
        let constant = constants
            .lines()
            .find(|l| l.contains(&format!("\"{name}\"")) && l.contains("pub const"))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(|c| c.trim_end_matches(':'))
            .unwrap_or_else(|| panic!("no constant for {name}"));
        let recorded = sources.match_indices(constant).any(|(i, _)| {
            let after = sources[i + constant.len()..].chars().next();
            !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        assert!(recorded, "{name} ({constant}) is listed but never recorded");
    }
    assert!(
        used.len() >= 8,
        "the dashboard and alerts cover few metrics: {used:?}"
    );
}

#[test]
fn yaml_and_json_parse() {
    let files = [
        "deploy/kubernetes/app-with-sidecar.yaml",
        "deploy/kubernetes/nodes.yaml",
        "deploy/prometheus/prometheus.yml",
        "deploy/prometheus/alerts.yml",
    ];
    let script = "import sys, yaml\nfor f in sys.argv[1:]:\n    docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]\n    assert docs, f\nprint('ok')";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(files.iter().map(|f| root().join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/memgate-dashboard.json")).unwrap();
    assert!(dash["panels"].as_array().is_some_and(|p| p.len() >= 7));
}

#[test]
fn prometheus_accepts_rules_and_config() {
    for args in [
        vec!["check", "rules", "deploy/prometheus/alerts.yml"],
        vec!["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(root())
            .output()
            .expect("promtool (Debian's prometheus package)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn systemd_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    for unit in ["memgate-proxy.service", "memgate-node.service"] {
        // Point the unit at the binary just built, as an install would.
        let text = read(&format!("deploy/systemd/{unit}")).replace("/usr/local/bin/memgate", BIN);
        let path: &Path = &dir.path().join(unit);
        std::fs::write(path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // EnvironmentFile and credentials name files of the target host.
        let problems: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter(|l| !l.contains("/etc/memgate/"))
            .collect();
        assert!(
            out.status.success() && problems.is_empty(),
            "{unit}: {stderr}"
        );
    }
}
