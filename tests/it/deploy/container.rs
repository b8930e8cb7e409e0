//! The container build file: hadolint, and what no linter knows — that the
//! files it copies exist and pass the ignore file, that it builds and runs
//! the binary Cargo.toml declares, with the toolchain the tests run on.

use std::process::Command;

use kvitto::config::Config;

use super::{run, text, venv_tool};

const DOCKERFILE: &str = "deploy/Dockerfile";
/// BuildKit's per-Dockerfile ignore file, beside the Dockerfile.
const DOCKERIGNORE: &str = "deploy/Dockerfile.dockerignore";

/// The instructions, continuation lines joined, comments dropped, each
/// split into its keyword and arguments.
fn instructions(dockerfile: &str) -> Vec<(String, Vec<String>)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => current.push_str(start),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut words = line.split_whitespace().map(str::to_string);
            let keyword = words.next().unwrap().to_uppercase();
            (keyword, words.collect())
        })
        .collect()
}

fn declared_binary() -> String {
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string("Cargo.toml").unwrap()).unwrap();
    manifest["bin"][0]["name"].as_str().unwrap().to_string()
}

/// `1.95` from `rustc 1.95.0 (...)`.
fn toolchain_minor() -> String {
    let output =
        run(Command::new(std::env::var("RUSTC").unwrap_or("rustc".into())).arg("--version"));
    let version = String::from_utf8(output.stdout).unwrap();
    let full = version
        .split_whitespace()
        .nth(1)
        .expect("rustc version")
        .to_string();
    full.rsplit_once('.').unwrap().0.to_string()
}

#[test]
fn dockerfile_copies_what_the_repository_has_and_runs_the_declared_binary() {
    let dockerfile = std::fs::read_to_string(DOCKERFILE).unwrap();
    let instructions = instructions(&dockerfile);
    let args = |keyword: &str| -> Vec<&Vec<String>> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, a)| a)
            .collect()
    };
    let admitted: Vec<String> = std::fs::read_to_string(DOCKERIGNORE)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix('!'))
        .map(|pattern| pattern.trim_end_matches('/').to_string())
        .collect();

    let mut copied = 0;
    for copy in args("COPY") {
        if copy.iter().any(|a| a.starts_with("--from=")) {
            continue;
        }
        let (_destination, sources) = copy.split_last().unwrap();
        for source in sources {
            let source = source.trim_end_matches('/').trim_start_matches("./");
            assert!(
                std::path::Path::new(source).exists(),
                "COPY {source}: not in the repository"
            );
            assert!(
                admitted.iter().any(|a| a == source),
                "COPY {source}: excluded by {DOCKERIGNORE}"
            );
            copied += 1;
        }
    }
    assert!(copied >= 5, "{copied} COPY sources found");

    let binary = declared_binary();
    let build = args("RUN")
        .into_iter()
        .map(|a| a.join(" "))
        .find(|r| r.contains("cargo build"));
    let build = build.expect("a cargo build step");
    assert!(build.contains("--release --locked"), "{build}");
    assert!(build.contains(&format!("--bin {binary}")), "{build}");
    assert!(
        build.contains(&format!("target/release/{binary}")),
        "{build}"
    );
    let entrypoint = args("ENTRYPOINT")[0].join(" ");
    assert_eq!(entrypoint, format!(r#"["/usr/local/bin/{binary}"]"#));

    // The builder runs the toolchain the test suite ran on, and the runtime
    // is the same Debian release, so the binary finds the glibc it linked.
    let stages = args("FROM");
    assert_eq!(stages.len(), 2, "a builder and a runtime stage");
    let (image, suite) = stages[0][0].split_once('-').expect("rust:VERSION-SUITE");
    assert_eq!(image, format!("rust:{}", toolchain_minor()));
    assert_eq!(stages[1][0], format!("debian:{suite}-slim"));

    let defaults = Config::default().server;
    let port = |listen: &str| listen.rsplit_once(':').unwrap().1.to_string();
    let exposed: Vec<String> = args("EXPOSE").into_iter().flatten().cloned().collect();
    assert_eq!(
        exposed,
        [port(&defaults.webhook_listen), port(&defaults.admin_listen)]
    );
    assert_eq!(args("STOPSIGNAL"), [&vec!["SIGTERM".to_string()]]);
    let user = args("USER").last().expect("a USER").join(" ");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as {user}"
    );
}

#[test]
fn hadolint_passes_the_dockerfile_and_flags_a_careless_one() {
    let Some(hadolint) = venv_tool("hadolint") else {
        return;
    };
    let output = run(Command::new(&hadolint).arg("--no-color").arg(DOCKERFILE));
    assert!(output.status.success(), "{}", text(&output));

    let dir = tempfile::tempdir().unwrap();
    let careless = dir.path().join("Dockerfile");
    std::fs::write(
        &careless,
        "FROM debian:latest\nRUN cd /tmp && apt-get install curl\n",
    )
    .unwrap();
    let output = run(Command::new(&hadolint).arg("--no-color").arg(&careless));
    assert!(!output.status.success());
    let report = text(&output);
    assert!(
        report.contains("DL3007") && report.contains("DL3003"),
        "{report}"
    );
}
