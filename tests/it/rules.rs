//! The monitoring files hold together without a running kvitto: promtool
//! accepts the rule files and their unit tests pass, every alert links to a
//! runbook section that exists, and the Grafana dashboard is well formed.
//!
//! promtool comes with the Debian `prometheus` package, which the test
//! command installs; without it these tests fail under CI and are skipped
//! with a note elsewhere.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub const RULE_FILES: [&str; 2] = [
    "deploy/prometheus/alerts.yml",
    "deploy/prometheus/recording.yml",
];
pub const DASHBOARD: &str = "deploy/grafana/kvitto.json";
const RULE_TESTS_DIR: &str = "deploy/prometheus/tests";
const RUNBOOK: &str = "docs/runbook.md";

/// `name` on the `PATH`; `None` (with a note) when missing outside CI.
pub fn tool_or_skip(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    match found {
        Some(tool) => Some(tool),
        None if std::env::var_os("CI").is_some() => {
            panic!("{name} must be installed in CI (scripts/test installs the prometheus package)")
        }
        None => {
            eprintln!("skipping: {name} is not installed (run scripts/test)");
            None
        }
    }
}

fn run_promtool(promtool: &Path, args: &[String]) {
    let output = Command::new(promtool)
        .args(args)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_rule_files() {
    let Some(promtool) = tool_or_skip("promtool") else {
        return;
    };
    let mut args = vec!["check".to_string(), "rules".to_string()];
    args.extend(RULE_FILES.iter().map(|f| f.to_string()));
    run_promtool(&promtool, &args);
}

#[test]
fn alert_rule_unit_tests_pass() {
    let Some(promtool) = tool_or_skip("promtool") else {
        return;
    };
    let mut tests: Vec<String> = std::fs::read_dir(RULE_TESTS_DIR)
        .expect("rule tests folder")
        .map(|entry| entry.expect("entry").path().display().to_string())
        .filter(|path| path.ends_with(".yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no rule tests in {RULE_TESTS_DIR}");
    let mut args = vec!["test".to_string(), "rules".to_string()];
    args.extend(tests);
    run_promtool(&promtool, &args);
}

/// Values of `key: value` lines in a YAML file, unquoted.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            let value = line.strip_prefix(&prefix)?.trim();
            Some(value.trim_matches('"').to_string())
        })
        .collect()
}

/// GitHub's anchor for a Markdown heading: lowercase, punctuation dropped,
/// spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_severity_and_a_runbook_section() {
    let alerts = std::fs::read_to_string(RULE_FILES[0]).expect("alerts.yml");
    let names = yaml_values(&alerts, "alert");
    assert!(names.len() >= 10, "{names:?}");
    let severities = yaml_values(&alerts, "severity");
    assert_eq!(severities.len(), names.len(), "one severity per alert");
    for severity in &severities {
        assert!(
            ["page", "ticket"].contains(&severity.as_str()),
            "{severity}"
        );
    }

    let runbook = std::fs::read_to_string(RUNBOOK).expect("docs/runbook.md");
    let anchors: HashSet<String> = runbook
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();
    let urls = yaml_values(&alerts, "runbook_url");
    assert_eq!(urls.len(), names.len(), "one runbook_url per alert");
    for (name, url) in names.iter().zip(&urls) {
        let (file, section) = url.split_once('#').expect("runbook_url has an anchor");
        assert_eq!(file, RUNBOOK, "{name}");
        assert_eq!(section, name.to_lowercase(), "{name}'s anchor is its name");
        assert!(
            anchors.contains(section),
            "{name}: {RUNBOOK} has no heading for #{section}"
        );
    }
}

/// Every panel, including those nested in collapsed rows.
pub fn dashboard_panels(dashboard: &Value) -> Vec<&Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
    }
    panels
}

pub fn load_dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("dashboard file");
    serde_json::from_str(&text).expect("dashboard is JSON")
}

#[test]
fn dashboard_is_well_formed() {
    let dashboard = load_dashboard();
    assert!(dashboard["schemaVersion"].as_u64().expect("schemaVersion") >= 39);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let names: Vec<&str> = variables
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(names.contains(&"datasource"), "{names:?}");
    let provider = variables
        .iter()
        .find(|v| v["name"] == "provider")
        .expect("provider variable");
    assert_eq!(
        provider["definition"],
        "label_values(kvitto_webhooks_received_total, provider)"
    );

    let mut ids = HashSet::new();
    for panel in dashboard_panels(&dashboard) {
        let title = panel["title"].as_str().expect("every panel has a title");
        let id = panel["id"].as_u64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} ({title}) is not unique");
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{title}: gridPos.{key}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat"].contains(&panel["type"].as_str().unwrap_or_default()),
            "{title}: type {}",
            panel["type"]
        );
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: data source"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no targets");
        let mut ref_ids = HashSet::new();
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: empty expr");
            assert!(
                ref_ids.insert(target["refId"].as_str().expect("refId")),
                "{title}: duplicate refId"
            );
            if expr.contains("rate(") || expr.contains("increase(") {
                let windows_ok = expr.contains("[$__rate_interval]") || expr.contains(":rate5m");
                assert!(windows_ok, "{title}: rate window is not $__rate_interval");
            }
        }
    }
}
