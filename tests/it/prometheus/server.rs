//! A throwaway Prometheus server for the live monitoring test: its own
//! folder, a free port, a generated config that scrapes one kvitto every
//! second and loads the repository's rule files; killed on drop.

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::rules::RULE_FILES;
use crate::support::eventually;

/// A Prometheus server in a temporary folder, scraping one kvitto every
/// second with the repository's rule files; killed on drop.
pub struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Prometheus {
    pub async fn start(binary: &Path, kvitto_admin: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let rule_files: Vec<PathBuf> = RULE_FILES
            .iter()
            .map(|f| std::fs::canonicalize(f).expect("rule file"))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}\
             scrape_configs:\n  - job_name: kvitto\n    static_configs:\n      - targets: ['{kvitto_admin}']\n",
            rule_files
                .iter()
                .map(|f| format!("  - '{}'\n", f.display()))
                .collect::<String>()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let listen = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let mut prometheus = Prometheus {
            child,
            url: format!("http://{listen}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            dir,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    pub async fn wait_ready(&mut self) {
        let url = format!("{}/-/ready", self.url);
        for _ in 0..600 {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
                panic!(
                    "prometheus exited with {status}:\n{}",
                    log.unwrap_or_default()
                );
            }
            let ready = self.http.get(&url).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus not ready on {}", self.url);
    }

    /// The `data` of an API answer, or its error.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!("{}: {}", body["errorType"], body["error"]))
        }
    }

    /// The samples an instant query returns (a scalar counts as one).
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await?;
        match data["resultType"].as_str() {
            Some("scalar") => Ok(vec![serde_json::json!({ "value": data["result"] })]),
            _ => Ok(data["result"].as_array().cloned().unwrap_or_default()),
        }
    }

    /// Label names across every series of `metric`; empty when none.
    pub async fn label_names(&self, metric: &str) -> HashSet<String> {
        let data = self
            .api("/api/v1/series", &[("match[]", metric)])
            .await
            .unwrap_or_else(|e| panic!("series of {metric}: {e}"));
        data.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|labels| labels.keys().cloned())
            .collect()
    }

    /// Waits until the newest scrape of kvitto is `scrapes` seconds (one
    /// scrape each) after now.
    pub async fn wait_for_scrapes(&self, scrapes: f64) {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let expr = format!(r#"timestamp(up{{job="kvitto"}}) > {}"#, now + scrapes);
        eventually("prometheus scraping kvitto", || async {
            let newer = self.query(&expr).await.ok()?;
            (!newer.is_empty()).then_some(())
        })
        .await;
    }

    /// The rule groups, once every rule has been evaluated at least once.
    pub async fn rules_when_evaluated(&self) -> Vec<Value> {
        eventually("every rule evaluated", || async {
            let data = self.api("/api/v1/rules", &[]).await.ok()?;
            let groups = data["groups"].as_array()?.clone();
            let evaluated = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .all(|r| r["health"] != "unknown");
            (evaluated && !groups.is_empty()).then_some(groups)
        })
        .await
    }

    pub async fn alerts(&self) -> Vec<Value> {
        let data = self.api("/api/v1/alerts", &[]).await.expect("alerts");
        data["alerts"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address no one listens on right now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("free port");
    listener.local_addr().expect("address")
}
