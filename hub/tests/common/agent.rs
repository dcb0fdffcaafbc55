//! The real agent (`gwe run`, built from the root workspace) as a test subject: a config
//! pointing at a hub, its local ingest API, and helpers to wait on what reaches the hub.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Client, FORM};

#[path = "../../../tests/support/cargo_env.rs"]
mod cargo_env;

/// The agent binary, built from the root workspace (already built when CI ran its tests):
/// the debug build for tests, the release build (as shipped) for `cargo bench`.
pub fn agent_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let release = !cfg!(debug_assertions);
        // As a plain `cargo build` in the root makes it (not with gwe-hub's package variables).
        let mut cmd = cargo_env::cargo();
        cmd.args(["build", "--quiet", "--bin", "gwe", "--manifest-path"]).arg(root.join("Cargo.toml"));
        if release {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building the agent failed");
        root.join(if release { "target/release/gwe" } else { "target/debug/gwe" })
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Agent {
    pub child: Child,
    pub dir: PathBuf,
    pub ingest: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    pub fn start(dir: &Path, hub_url: &str, extra: &str) -> Self {
        Self::start_as(dir, hub_url, "E2E1", extra, "")
    }

    /// An agent with serial `serial`; `extra` goes in `[cloud]`, `sections` after it.
    pub fn start_as(dir: &Path, hub_url: &str, serial: &str, extra: &str, sections: &str) -> Self {
        let ingest = free_port();
        let cfg = format!(
            "[device]\nvendor = \"acme\"\nmodel = \"gw1\"\nserial = \"{serial}\"\n\
             [paths]\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/log\"\nrun_dir = \"{0}/run\"\n\
             [ingest]\nlisten = \"127.0.0.1:{ingest}\"\n[supervisor]\nprograms_dir = \"{0}/programs.d\"\n\
             [cloud]\nurl = \"{hub_url}\"\nlinger_ms = 200\nretry_max_secs = 1\n{extra}\n{sections}",
            dir.display()
        );
        std::fs::create_dir_all(dir.join("programs.d")).unwrap();
        std::fs::write(dir.join("gwe.toml"), cfg).unwrap();
        let child = Command::new(agent_bin())
            .arg("--config")
            .arg(dir.join("gwe.toml"))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", ingest)).is_err() {
            if Instant::now() > until {
                let err = std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default();
                panic!("the agent's ingest API did not come up; its stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, dir: dir.to_path_buf(), ingest }
    }

    pub fn local_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("state/state/local_token")).unwrap().trim().to_string()
    }

    /// An app records points through the local ingest API; 204 means durable on flash.
    pub fn record(&self, agent: &ureq::Agent, alias: &str, points: &[(i64, String)]) {
        let body: String = points.iter().map(|(t, v)| format!("{t}={v}")).collect::<Vec<_>>().join("&");
        let r = super::reply(
            agent
                .post(format!("http://127.0.0.1:{}/onep:v1/stack/alias/{alias}", self.ingest))
                .header("X-Exosite-CIK", self.local_token())
                .header("X-GWE-App", "sensor")
                .header("Content-Type", FORM)
                .send(body),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }
}

pub fn wait_for(what: &str, secs: u64, f: impl FnMut() -> bool) {
    wait_for_or(what, secs, f, String::new);
}

/// [`wait_for`], with `detail()` in the message when it times out.
pub fn wait_for_or(what: &str, secs: u64, mut f: impl FnMut() -> bool, detail: impl FnOnce() -> String) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !f() {
        if Instant::now() >= until {
            panic!("timed out waiting for {what}{}", detail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn values(c: &Client, dev: i64, alias: &str) -> Vec<String> {
    let r = c.op_get(&format!("/api/v1/devices/{dev}/dataports/{alias}/history?limit=100000"));
    serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap().to_string())
        .collect()
}
