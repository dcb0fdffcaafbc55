//! Test harness: a private PostgreSQL server (started once per test process, killed with
//! it), hub processes on free ports, and a small HTTP client.
#![allow(dead_code)]

pub mod agent;
pub mod relay;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use ureq::http::StatusCode;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (scripts/setup.sh installs it)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("no PostgreSQL server binary under /usr/lib/postgresql")
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("no postgres user (scripts/setup.sh installs it)")
}

/// Runs `cmd` as the postgres user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(cmd: &mut Command) -> &mut Command {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        cmd.uid(id_of("postgres", "-u")).gid(id_of("postgres", "-g"));
    }
    cmd
}

struct Pg {
    port: u16,
}

/// The URL of a fresh, empty database on the test process's PostgreSQL server.
pub fn pg_database() -> String {
    static PG: OnceLock<Pg> = OnceLock::new();
    static N: AtomicUsize = AtomicUsize::new(0);
    let pg = PG.get_or_init(start_pg);
    let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
    let out = as_postgres(Command::new(pg_bin().join("psql")).args([
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port.to_string(),
        "-U",
        "gwe",
        "-d",
        "postgres",
        "-qc",
        &format!("CREATE DATABASE {name}"),
    ]))
    .output()
    .unwrap();
    assert!(out.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
    format!("postgres://gwe@127.0.0.1:{}/{name}", pg.port)
}

fn start_pg() -> Pg {
    let dir = tempfile::Builder::new().prefix("gwe-pg").tempdir().unwrap().keep();
    let data = dir.join("data");
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        let ok = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
        assert!(ok.success());
    }
    let out = as_postgres(Command::new(pg_bin().join("initdb")).args(["-A", "trust", "-U", "gwe", "--no-sync", "-D"]))
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let port = free_port();
    let (tx, rx) = std::sync::mpsc::channel();
    // The server dies with this thread (PR_SET_PDEATHSIG), so the thread lives as long as
    // the test process.
    std::thread::spawn(move || {
        let mut cmd = Command::new(pg_bin().join("postgres"));
        as_postgres(&mut cmd)
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300"])
            // Tests need no durability; benchmarks (GWE_PG_DURABLE=1) compare like with like:
            // SQLite commits with synchronous=FULL.
            .args(["-c", if std::env::var_os("GWE_PG_DURABLE").is_some() { "fsync=on" } else { "fsync=off" }])
            .arg("-k")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        tx.send(()).unwrap();
        // Reaps the server if it dies; otherwise never returns.
        let _ = child.wait();
    });
    rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(pg_bin().join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        if ok.success() {
            break;
        }
        assert!(Instant::now() < deadline, "PostgreSQL did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Pg { port }
}

pub fn db_url(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite:{}", dir.join("hub.db").display()),
        Backend::Postgres => pg_database(),
    }
}

/// A running `gwe-hub serve`, killed on drop.
pub struct HubProc {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub port: u16,
}

impl Drop for HubProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct HubOpts<'a> {
    pub db: &'a str,
    pub dir: &'a Path,
    pub port: u16,
    pub tls: Option<(&'a Path, &'a Path)>,
    pub extra: &'a [&'a str],
}

impl HubProc {
    pub fn start(db: &str, dir: &Path) -> Self {
        Self::start_with(HubOpts { db, dir, port: 0, tls: None, extra: &[] })
    }

    pub fn start_with(o: HubOpts) -> Self {
        let token_file = o.dir.join("operator.token");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gwe-hub"));
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", o.port), "--db", o.db])
            .arg("--operator-token-file")
            .arg(&token_file)
            .args(o.extra)
            .env("RUST_LOG", std::env::var("GWE_TEST_HUB_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped());
        if let Some((cert, key)) = o.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .strip_prefix("gwe-hub listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line from the hub: {line:?}"))
            .to_string();
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        let scheme = if o.tls.is_some() { "https" } else { "http" };
        let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
        Self { child, url: format!("{scheme}://localhost:{port}"), token, port }
    }
}

impl HubProc {
    /// A hub serving HTTPS with `server`'s certificate; `extra` goes on its command line.
    pub fn start_tls(db: &str, dir: &Path, server: &TestPki, extra: &[&str]) -> Arc<Self> {
        Arc::new(Self::start_with(HubOpts { db, dir, port: 0, tls: Some((&server.cert, &server.key)), extra }))
    }
}

/// A device CA whose key is on disk too (`device-ca.pem`, `device-ca.key`), for a hub that
/// issues gateways' certificates (`--device-ca-key`).
pub struct DeviceCa {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub params: rcgen::CertificateParams,
    pub key_pair: rcgen::KeyPair,
}

impl DeviceCa {
    pub fn new(dir: &Path) -> Self {
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "fleet device CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key_pair).unwrap();
        let (cert, key) = (dir.join("device-ca.pem"), dir.join("device-ca.key"));
        std::fs::write(&cert, ca.pem()).unwrap();
        std::fs::write(&key, key_pair.serialize_pem()).unwrap();
        Self { cert, key, params, key_pair }
    }

    /// The hub's options that issue with this CA, certificates valid `days`.
    pub fn hub_args(&self, days: &'static str) -> [String; 6] {
        [
            "--device-ca".into(),
            self.cert.display().to_string(),
            "--device-ca-key".into(),
            self.key.display().to_string(),
            "--device-cert-days".into(),
            days.into(),
        ]
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (null when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

pub fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut r = r.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    Reply { status, headers, body }
}

/// A private CA and a `localhost` certificate it signed, written to `dir` as
/// `NAME-ca.pem`, `NAME.pem` and `NAME.key`.
pub struct TestPki {
    pub ca_pem: String,
    pub ca_file: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki(dir: &Path, name: &str) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    // Not rcgen's default name, which is also the CA's: OpenSSL would take the certificate
    // for a self-signed one.
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key)).unwrap();
    let pki = TestPki {
        ca_pem: ca.pem(),
        ca_file: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pki.ca_file, &pki.ca_pem).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// An Arrowhead local cloud's certificates: a CA (`ca.pem`) and for each system
/// `SYSTEM.pem` and `SYSTEM.key`, its common name `SYSTEM.testcloud.aitia.arrowhead.eu`
/// (Arrowhead's form) and valid for `localhost` and 127.0.0.1.
pub fn cloud_pki(dir: &Path, systems: &[&str]) -> TestPki {
    let leaves: Vec<(String, String)> =
        systems.iter().map(|s| (s.to_string(), format!("{s}.testcloud.aitia.arrowhead.eu"))).collect();
    issue(dir, "ca", &leaves)
}

/// A CA (`CA.pem`) and, for each `(name, common name)`, `NAME.pem` and `NAME.key` it
/// issued, valid for `localhost` and 127.0.0.1. `cert` and `key` are the first one's.
pub fn issue(dir: &Path, ca_name: &str, leaves: &[(String, String)]) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{ca_name} test CA"));
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join(format!("{ca_name}.pem"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    for (name, cn) in leaves {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn.as_str());
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    TestPki {
        ca_pem: ca.pem(),
        ca_file,
        cert: dir.join(format!("{}.pem", leaves[0].0)),
        key: dir.join(format!("{}.key", leaves[0].0)),
    }
}

/// A client that trusts only the CA in `ca_pem` and shows the certificate `cert` (PEM files).
pub fn with_client_cert(ca_pem: &str, cert: &Path, key: &Path) -> ureq::Agent {
    let root = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let chain = ureq::tls::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap();
    let key = ureq::tls::PrivateKey::from_pem(&std::fs::read(key).unwrap()).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(&[root]))
        .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[chain], key)))
        .build();
    ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls).build().into()
}

/// A client that trusts only the CA in `ca_pem`.
pub fn trusting(ca_pem: &str) -> ureq::Agent {
    let root = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[root])).build();
    ureq::Agent::config_builder().http_status_as_error(false).tls_config(tls).build().into()
}

pub const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// The operator API and device API of one hub.
pub struct Client {
    pub hub: Arc<HubProc>,
    pub agent: ureq::Agent,
}

impl Client {
    pub fn new(hub: Arc<HubProc>) -> Self {
        Self { hub, agent: agent() }
    }

    pub fn op_get(&self, path: &str) -> Reply {
        reply(
            self.agent
                .get(format!("{}{path}", self.hub.url))
                .header("Authorization", format!("Bearer {}", self.hub.token))
                .call(),
        )
    }

    pub fn op_send(&self, method: &str, path: &str, ctype: &str, body: &[u8]) -> Reply {
        let url = format!("{}{path}", self.hub.url);
        let auth = format!("Bearer {}", self.hub.token);
        let r = match method {
            "POST" => self.agent.post(url).header("Authorization", auth).header("Content-Type", ctype).send(body),
            "PUT" => self.agent.put(url).header("Authorization", auth).header("Content-Type", ctype).send(body),
            _ => panic!("method {method}"),
        };
        reply(r)
    }

    /// Whitelists a device; returns its id.
    pub fn whitelist(&self, vendor: &str, model: &str, sn: &str) -> i64 {
        let body = serde_json::json!({"vendor": vendor, "model": model, "sn": sn}).to_string();
        let r = self.op_send("POST", "/api/v1/devices", "application/json", body.as_bytes());
        assert_eq!(r.status, 201, "{}", r.text());
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].as_i64().unwrap()
    }

    pub fn activate(&self, vendor: &str, model: &str, sn: &str) -> Reply {
        let body = format!("vendor={vendor}&model={model}&sn={sn}");
        reply(self.agent.post(format!("{}/provision/activate", self.hub.url)).header("Content-Type", FORM).send(body))
    }

    pub fn dev_post(&self, token: &str, path: &str, body: &str) -> Reply {
        reply(
            self.agent
                .post(format!("{}{path}", self.hub.url))
                .header("X-Exosite-CIK", token)
                .header("Content-Type", FORM)
                .send(body),
        )
    }

    pub fn dev_get(&self, token: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut rq = self.agent.get(format!("{}{path}", self.hub.url)).header("X-Exosite-CIK", token);
        for (k, v) in headers {
            rq = rq.header(*k, *v);
        }
        reply(rq.call())
    }

    pub fn point_count(&self, dev: i64, alias: &str) -> usize {
        let r = self.op_get(&format!("/api/v1/devices/{dev}/dataports/{alias}/history?limit=100000"));
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).unwrap().len()
    }
}

/// Runs a test body once per backend: `backends!(name, body_fn)`.
#[macro_export]
macro_rules! backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn sqlite() {
                super::$body(super::common::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$body(super::common::Backend::Postgres)
            }
        }
    };
}
