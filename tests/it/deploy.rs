//! The deployment files, checked by the tools that consume them: Kubernetes
//! manifests against the Kubernetes schemas in strict mode, the
//! ServiceMonitor against the Prometheus Operator's API schema, the
//! Dockerfile with hadolint and against the repository, and the systemd
//! unit with `systemd-analyze`. Each validator is also shown a broken file
//! and must reject it, so none of these checks can pass by not looking.
//!
//! The validators are installed by `scripts/test` under
//! `${KVITTO_TOOLS_DIR:-$HOME/.cache/kvitto/tools}`; a missing one fails the
//! test under CI and skips it with a note elsewhere.

mod container;
mod kubernetes;
mod systemd;

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn tools_dir() -> PathBuf {
    match std::env::var_os("KVITTO_TOOLS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
            .join(".cache/kvitto/tools"),
    }
}

/// `path` when it exists; otherwise a loud failure under CI, and `None`
/// (the caller skips) elsewhere.
pub fn tool(path: PathBuf) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: scripts/test installs it", path.display());
    }
    eprintln!("skipping: {} is missing (run scripts/test)", path.display());
    None
}

pub fn venv_tool(name: &str) -> Option<PathBuf> {
    tool(tools_dir().join("venv/bin").join(name))
}

pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"))
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A program on `PATH`, with the same missing-tool policy as [`tool`].
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    tool(found.unwrap_or_else(|| PathBuf::from(name)))
}
