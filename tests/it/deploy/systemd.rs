//! The systemd unit: `systemd-analyze verify` finds nothing to say about it,
//! `systemd-analyze security` rates its sandbox, and its stop timeout
//! outlasts kvitto's shutdown deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kvitto::config::Config;

use super::{on_path, run, text};

const UNIT: &str = "deploy/kvitto.service";
const INSTALLED_BINARY: &str = "ExecStart=/usr/local/bin/kvitto ";
/// `systemd-analyze security`'s exposure, in tenths: 2.0 of 10 at most
/// (the shipped unit rates about 1.2, "OK"; an unsandboxed one 9.6).
const MAX_EXPOSURE: &str = "20";

/// The unit as shipped, but starting the binary under test (verify checks
/// that ExecStart is executable), written to `dir`.
fn unit_under_test(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(unit.contains(INSTALLED_BINARY));
    let binary = format!("ExecStart={} ", env!("CARGO_BIN_EXE_kvitto"));
    let path = dir.join("kvitto.service");
    std::fs::write(&path, edit(unit.replace(INSTALLED_BINARY, &binary))).unwrap();
    path
}

/// The lines of `systemd-analyze verify` about the unit (it may also talk
/// about the host's own units, which are not ours to judge).
fn verify(analyze: &Path, unit: &Path) -> (Output, Vec<String>) {
    let output = run(Command::new(analyze).arg("verify").arg(unit));
    let about_unit = text(&output)
        .lines()
        .filter(|line| line.contains("kvitto.service"))
        .map(str::to_string)
        .collect();
    (output, about_unit)
}

fn security(analyze: &Path, unit: &Path) -> Output {
    run(Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(unit))
}

#[test]
fn systemd_unit_verifies_without_a_warning() {
    let Some(analyze) = on_path("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path(), |unit| unit);
    let (output, about_unit) = verify(&analyze, &unit);
    assert!(output.status.success(), "{}", text(&output));
    assert!(about_unit.is_empty(), "{about_unit:#?}");

    // A misspelt directive and a bad value are only warnings to systemd,
    // which then runs the unit without them: both must be caught here.
    let broken = unit_under_test(dir.path(), |unit| {
        unit.replace("[Service]\n", "[Service]\nTimeoutStopSecs=45\n")
            .replace("ProtectSystem=strict", "ProtectSystem=strickt")
    });
    let (_, about_unit) = verify(&analyze, &broken);
    let report = about_unit.join("\n");
    assert!(
        report.contains("TimeoutStopSecs") && report.contains("strickt"),
        "{report}"
    );
}

#[test]
fn systemd_unit_is_sandboxed_and_outlasts_the_shutdown_deadline() {
    let Some(analyze) = on_path("systemd-analyze") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path(), |unit| unit);
    let output = security(&analyze, &unit);
    assert!(output.status.success(), "{}", text(&output));
    let bare = unit_under_test(dir.path(), |unit| {
        let service = unit.split("\n# Sandbox").next().unwrap().to_string();
        format!("{service}\n[Install]\nWantedBy=multi-user.target\n")
    });
    let output = security(&analyze, &bare);
    assert!(
        !output.status.success(),
        "an unsandboxed unit passed: {}",
        text(&output)
    );

    let setting = |key: &str| -> String {
        let text = std::fs::read_to_string(UNIT).unwrap();
        let prefix = format!("{key}=");
        let line = text.lines().find(|l| l.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("{key} is set"))
            .trim_start_matches(&prefix)
            .to_string()
    };
    let stop_secs: u64 = setting("TimeoutStopSec")
        .parse()
        .expect("TimeoutStopSec in seconds");
    let deadline_secs = Config::default().server.shutdown_timeout_secs;
    assert!(
        stop_secs > deadline_secs,
        "TimeoutStopSec={stop_secs} <= {deadline_secs}"
    );
    assert_eq!(setting("Restart"), "on-failure");
    assert_eq!(setting("KillSignal"), "SIGTERM");
}
