//! The Kubernetes manifests: strict schema validation for the built-in
//! kinds, the Prometheus Operator's schema for the ServiceMonitor, and the
//! links between them (selectors, ports, grace periods, kvitto's config).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kvitto::config::Config;
use serde_json::Value;

use super::{run, text, tool, tools_dir, venv_tool};

/// Kubernetes releases the manifests must be valid for: the oldest and the
/// newest minor still maintained upstream.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.35.0", "1.37.0"];
const MANIFESTS: &str = "deploy/kubernetes";
/// Validated, but never applied: it only shows the Secret's shape.
const SECRET_EXAMPLE: &str = "secret.example.yaml";

/// The manifest files (every YAML file but the kustomization), sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(MANIFESTS)
        .expect("deploy/kubernetes exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of each YAML file, as JSON, parsed by PyYAML.
fn load_yaml(python: &Path, files: &[PathBuf]) -> Vec<Vec<Value>> {
    let script = "import json, sys, yaml\n\
        json.dump([list(yaml.safe_load_all(open(p))) for p in sys.argv[1:]], sys.stdout)";
    let output = run(Command::new(python).arg("-c").arg(script).args(files));
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice(&output.stdout).expect("PyYAML's JSON")
}

/// All manifests by kind (each kind appears once).
struct Manifests(Vec<Value>);

impl Manifests {
    fn load(python: &Path) -> Manifests {
        Manifests(load_yaml(python, &manifest_files()).concat())
    }

    fn kind(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self.0.iter().filter(|m| m["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "exactly one {kind} in {MANIFESTS}");
        found[0]
    }
}

fn kubernetes_validate(validator: &Path, file: &Path, version: &str) -> Output {
    run(Command::new(validator)
        .args(["--strict", "--kubernetes-version", version])
        .arg(file))
}

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let (Some(validator), Some(python)) = (venv_tool("kubernetes-validate"), venv_tool("python"))
    else {
        return;
    };
    let files = manifest_files();
    let documents = load_yaml(&python, &files);
    let mut kinds = Vec::new();
    for (file, documents) in files.iter().zip(&documents) {
        // The ServiceMonitor is a custom resource: the Kubernetes schemas do
        // not know it (see the next test).
        if documents
            .iter()
            .all(|d| d["apiVersion"] == "monitoring.coreos.com/v1")
        {
            continue;
        }
        kinds.extend(
            documents
                .iter()
                .map(|d| d["kind"].as_str().unwrap().to_string()),
        );
        for version in KUBERNETES_VERSIONS {
            let output = kubernetes_validate(&validator, file, version);
            let report = text(&output);
            assert!(output.status.success(), "{}: {report}", file.display());
            // A kind without a schema is only a warning to the validator; here
            // it is a failure, as is anything but one pass per document.
            let passed = report
                .lines()
                .filter(|l| l.starts_with("INFO ") && l.contains(" passed "))
                .count();
            assert_eq!(passed, documents.len(), "{}: {report}", file.display());
            assert!(
                !report.contains("WARN") && !report.contains("ERROR"),
                "{report}"
            );
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Secret",
            "Service"
        ]
    );
}

#[test]
fn strict_validation_rejects_a_misspelt_field_and_a_wrong_type() {
    let Some(validator) = venv_tool("kubernetes-validate") else {
        return;
    };
    let original = std::fs::read_to_string(format!("{MANIFESTS}/deployment.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, expected) in [
        (
            "periodSeconds: 10",
            "periodSecond: 10",
            "'periodSecond' was unexpected",
        ),
        (
            "containerPort: 8080",
            "containerPort: eighty",
            "'eighty' is not of type 'integer'",
        ),
    ] {
        let broken = original.replacen(from, to, 1);
        assert_ne!(broken, original, "{from:?} is in deployment.yaml");
        let file = dir.path().join("deployment.yaml");
        std::fs::write(&file, broken).unwrap();
        let output = kubernetes_validate(&validator, &file, KUBERNETES_VERSIONS[1]);
        assert!(!output.status.success(), "accepted {to:?}");
        assert!(text(&output).contains(expected), "{}", text(&output));
    }
}

/// Validates ServiceMonitors (JSON on stdin) with the validator generated
/// from the Prometheus Operator's `monitoring.coreos.com/v1` API types, the
/// same types its CRD schema is generated from: field types, required
/// fields, enums and duration patterns. Unknown fields are not reported by
/// it; the consistency test below checks every field kvitto relies on.
const SERVICE_MONITOR_CHECK: &str = r#"
import { ServiceMonitor } from "MODELS/monitoring.coreos.com/v1/ServiceMonitor.js";
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const manifest of JSON.parse(input)) {
  try { new ServiceMonitor(manifest).validate(); console.log("valid", manifest.metadata.name); }
  catch (error) { failed++; console.log("invalid", manifest.metadata.name, error.message); }
}
process.exit(failed ? 1 : 0);
"#;

fn validate_service_monitors(models: &Path, manifests: &[Value]) -> Output {
    use std::io::Write;
    let script = SERVICE_MONITOR_CHECK.replace("MODELS", &models.display().to_string());
    let mut child = Command::new("node")
        .args(["--input-type=module", "-e", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("node runs");
    let input = serde_json::to_vec(manifests).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn service_monitor_passes_the_prometheus_operator_schema_and_a_broken_one_fails() {
    let models = tools_dir().join("node/node_modules/@kubernetes-models/prometheus-operator");
    let (Some(models), Some(python)) = (tool(models), venv_tool("python")) else {
        return;
    };
    let manifests = Manifests::load(&python);
    let monitor = manifests.kind("ServiceMonitor").clone();
    let output = validate_service_monitors(&models, std::slice::from_ref(&monitor));
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(text(&output).trim(), "valid kvitto");

    let mut numeric_port = monitor.clone();
    numeric_port["spec"]["endpoints"][0]["port"] = 9464.into();
    let mut no_selector = monitor.clone();
    no_selector["spec"]
        .as_object_mut()
        .unwrap()
        .remove("selector");
    let mut bad_interval = monitor;
    bad_interval["spec"]["endpoints"][0]["interval"] = "every 15 seconds".into();
    for broken in [numeric_port, no_selector, bad_interval] {
        let output = validate_service_monitors(&models, std::slice::from_ref(&broken));
        assert!(!output.status.success(), "accepted {broken}");
        assert!(
            text(&output).starts_with("invalid kvitto"),
            "{}",
            text(&output)
        );
    }
}

/// Whether every label `selector` asks for is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a label map");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn manifests_agree_with_each_other_and_with_kvitto() {
    let Some(python) = venv_tool("python") else {
        return;
    };
    let manifests = Manifests::load(&python);
    let deployment = manifests.kind("Deployment");
    let service = manifests.kind("Service");
    let monitor = manifests.kind("ServiceMonitor");
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let port_named = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("container port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };

    // Selectors find what they are meant to find.
    let pod_labels = &pod["metadata"]["labels"];
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let budget = manifests.kind("PodDisruptionBudget");
    assert!(selects(
        &budget["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));

    // Ports: the monitor scrapes the Service's admin port, which leads to
    // the container's, where kvitto's admin listener is.
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    let service_ports = service["spec"]["ports"].as_array().unwrap();
    assert!(service_ports.iter().any(|p| p["name"] == endpoint["port"]));
    for port in service_ports {
        port_named(port["targetPort"].as_str().expect("named target port"));
    }
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(container[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }

    // The ConfigMap's settings with the example Secret's integrations are a
    // valid kvitto config for Kafka and PostgreSQL, on the container ports.
    let config_text = manifests.kind("ConfigMap")["data"]["kvitto.toml"]
        .as_str()
        .unwrap();
    let integrations = manifests.kind("Secret")["stringData"]["integrations.toml"]
        .as_str()
        .unwrap();
    let config = Config::from_toml(&format!("{config_text}\n{integrations}"))
        .unwrap_or_else(|error| panic!("ConfigMap + Secret: {error}"));
    assert!(config.bus.is_kafka());
    assert!(config.database.url.starts_with("postgres://"));
    assert!(!config.integrations.is_empty());
    assert!(config.server.webhook_listen.starts_with("0.0.0.0:"));
    assert!(config.server.admin_listen.starts_with("0.0.0.0:"));
    assert_eq!(
        port_of(&config.server.webhook_listen),
        port_named("webhook")
    );
    assert_eq!(port_of(&config.server.admin_listen), port_named("admin"));

    // The kubelet's grace period includes the preStop pause, and must
    // outlast kvitto's whole shutdown after it.
    let pre_stop = &container["lifecycle"]["preStop"]["exec"]["command"];
    assert_eq!(pre_stop[0], "/bin/sleep");
    let pause_secs: u64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    let grace_secs = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace_secs > pause_secs + config.server.shutdown_timeout_secs,
        "grace period {grace_secs} s <= preStop {pause_secs} s + shutdown {} s",
        config.server.shutdown_timeout_secs
    );

    // Secrets come from the Secret, never as literal values.
    for env in container["env"].as_array().unwrap() {
        assert!(env.get("value").is_none(), "literal env value: {env}");
        assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "kvitto-secrets");
    }
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn kustomization_lists_every_manifest_but_the_secret_example() {
    let Some(python) = venv_tool("python") else {
        return;
    };
    let kustomization = PathBuf::from(MANIFESTS).join("kustomization.yaml");
    let documents = load_yaml(&python, &[kustomization]);
    let mut listed: Vec<String> = documents[0][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = manifest_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name != SECRET_EXAMPLE)
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
}
