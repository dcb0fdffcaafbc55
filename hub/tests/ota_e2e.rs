//! Over-the-air installs commanded from the hub: the real agent long-polls `engine_fetch`,
//! downloads from the hub's content area through a link that drops once (resumed with
//! Range), verifies, installs, and reports in `fetch_status` and `engine_report`. Bad
//! signatures, missing packages, malformed commands and crash-looping updates are refused
//! or rolled back while the running version keeps running.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "test and bench values (counts, sizes, times) are small"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::agent::{agent_bin, wait_for, Agent};
use common::relay::Relay;
use common::{Backend, Client, HubProc};

const VENDOR: (&str, &str) = ("acme", "gw1");

fn gwe(args: &[&str]) -> String {
    let out = Command::new(agent_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "gwe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// NAME.vVERSION.tar.gz with install.sh, run.sh (the app) and supervisor.conf, plus
/// `filler` bytes of random data; signed with `key`.
fn package(dir: &Path, version: &str, run: &str, filler: usize, key: &Path) -> PathBuf {
    let src = dir.join(format!("src-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    let files = [
        ("install.sh", "#!/bin/sh\necho installing $GWE_APP $GWE_VERSION\n".to_string()),
        ("run.sh", run.to_string()),
        ("supervisor.conf", "[supervisord]\ncommand=./run.sh\nstartsecs=1\nstartretries=1\n".to_string()),
    ];
    for (name, text) in files {
        std::fs::write(src.join(name), text).unwrap();
        Command::new("chmod").arg("755").arg(src.join(name)).status().unwrap();
    }
    let mut noise = vec![0u8; filler];
    getrandom::fill(&mut noise).unwrap();
    std::fs::write(src.join("data.bin"), noise).unwrap();
    let pkg = dir.join(format!("sensor.v{version}.tar.gz"));
    let ok = Command::new("tar").arg("czf").arg(&pkg).arg("-C").arg(&src).arg(".").status().unwrap();
    assert!(ok.success());
    gwe(&["pkg", "sign", pkg.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    pkg
}

fn upload(c: &Client, file: &Path) {
    let id = file.file_name().unwrap().to_str().unwrap();
    let body = std::fs::read(file).unwrap();
    let r = c.op_send("PUT", &format!("/api/v1/content/{}/{}/{id}", VENDOR.0, VENDOR.1), "application/gzip", &body);
    assert_eq!(r.status, 201, "{}", r.text());
}

fn upload_signed(c: &Client, pkg: &Path) {
    upload(c, pkg);
    upload(c, &PathBuf::from(format!("{}.sig", pkg.display())));
}

fn dataport(c: &Client, dev: i64, alias: &str) -> String {
    let r = c.op_get(&format!("/api/v1/devices/{dev}/dataports/{alias}"));
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["value"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn command(c: &Client, dev: i64, cmd: &str) {
    let body = serde_json::json!({ "value": cmd }).to_string();
    let r =
        c.op_send("PUT", &format!("/api/v1/devices/{dev}/dataports/engine_fetch"), "application/json", body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
}

/// Waits until the latest fetch_status starts with `prefix` (progress lines come first).
fn status_is(c: &Client, dev: i64, prefix: &str, secs: u64) -> String {
    let mut last = String::new();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        last = dataport(c, dev, "fetch_status");
        if last.starts_with(prefix) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("fetch_status never started with {prefix:?}; last: {last:?}");
}

/// The version `current` points at in the agent's app store.
fn current(agent_dir: &Path) -> String {
    let link = std::fs::read_link(agent_dir.join("state/apps/sensor/current")).unwrap();
    link.file_name().unwrap().to_string_lossy().into_owned()
}

fn sensor_report(c: &Client, dev: i64) -> serde_json::Value {
    let r: serde_json::Value = serde_json::from_str(&dataport(c, dev, "engine_report")).unwrap_or_default();
    r["apps"].as_array().into_iter().flatten().find_map(|a| a.get("sensor").cloned()).unwrap_or_default()
}

/// A hub with one whitelisted gateway, and a release key.
struct Setup {
    dir: tempfile::TempDir,
    hub: Arc<HubProc>,
    c: Client,
    dev: i64,
    key: PathBuf,
    public: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = common::db_url(Backend::Sqlite, dir.path());
    let hub = Arc::new(HubProc::start(&db, dir.path()));
    let c = Client::new(hub.clone());
    let dev = c.whitelist(VENDOR.0, VENDOR.1, "E2E1");
    let key = dir.path().join("release.key");
    let public = gwe(&["pkg", "keygen", key.to_str().unwrap()]);
    Setup { dir, hub, c, dev, key, public }
}

#[test]
fn installs_from_the_hub_and_refuses_what_is_bad() {
    let Setup { dir, hub, c, dev, key, public } = setup();
    let rogue = dir.path().join("rogue.key");
    gwe(&["pkg", "keygen", rogue.to_str().unwrap()]);

    let good = "#!/bin/sh\necho running\nexec sleep 300\n";
    let v1 = package(dir.path(), "1.0", good, 400_000, &key);
    upload_signed(&c, &v1);
    let relay = Relay::start(hub.port);
    let agent_dir = dir.path().join("agent");
    let _agent = Agent::start(
        &agent_dir,
        &format!("http://localhost:{}", relay.port),
        &format!("[ota]\ntrusted_keys = [\"{public}\"]\ninstall_timeout_secs = 20\n"),
    );
    wait_for("activation", 20, || agent_dir.join("state/state/cloud_token").exists());

    // Install; the link drops once 150 kB into the download, which resumes where it was.
    relay.cut_after.store(150_000, Ordering::SeqCst);
    relay.take();
    command(&c, dev, r#"{"install":[{"name":"sensor.v1.0.tar.gz"}]}"#);
    let s = status_is(&c, dev, "installed sensor 1.0", 60);
    assert!(s.contains("installing sensor 1.0"), "install.sh output is reported: {s}");
    assert_eq!(relay.cut_after.load(Ordering::SeqCst), 0, "the link was cut");
    assert!(relay.ranges.load(Ordering::SeqCst) >= 1, "the download resumed with Range");
    let size = std::fs::metadata(&v1).unwrap().len();
    assert!(relay.take().1 < size + size / 2, "resumed, not downloaded again from the start");
    assert_eq!(dataport(&c, dev, "engine_fetch"), "", "the command is cleared on pick-up");
    assert_eq!(current(&agent_dir), "1.0");
    wait_for("engine_report with sensor 1.0 running", 20, || {
        let s = sensor_report(&c, dev);
        s["version"] == "1.0" && s["status"] == "RUNNING"
    });

    // Signed by a key the agent does not trust: refused, 1.0 keeps running.
    let v2 = package(dir.path(), "2.0", good, 1000, &rogue);
    upload_signed(&c, &v2);
    command(&c, dev, r#"{"install":[{"name":"sensor","version":"2.0"}]}"#);
    let s = status_is(&c, dev, "sensor.v2.0.tar.gz:", 30);
    assert!(s.contains("signature"), "{s}");
    assert_eq!(current(&agent_dir), "1.0");

    // Not on the hub: refused at once, not retried without end.
    let start = Instant::now();
    command(&c, dev, r#"{"install":[{"name":"sensor.v3.0.tar.gz"}]}"#);
    let s = status_is(&c, dev, "sensor.v3.0.tar.gz:", 30);
    assert!(s.contains("404"), "{s}");
    assert!(start.elapsed() < Duration::from_secs(10), "a 404 is not retried");

    // Not a command.
    command(&c, dev, "install everything");
    let s = status_is(&c, dev, "engine_fetch is not a command", 30);
    assert!(s.len() < 300, "{s}");

    // An update that crash-loops is rolled back; 1.0 runs again.
    let v4 = package(dir.path(), "4.0", "#!/bin/sh\necho broken\nexit 1\n", 1000, &key);
    upload_signed(&c, &v4);
    command(&c, dev, r#"{"install":[{"name":"sensor.v4.0.tar.gz"}]}"#);
    let s = status_is(&c, dev, "sensor.v4.0.tar.gz:", 60);
    assert!(s.contains("rolled back to 1.0"), "{s}");
    assert_eq!(current(&agent_dir), "1.0");
    wait_for("sensor 1.0 running again", 20, || {
        let s = sensor_report(&c, dev);
        s["version"] == "1.0" && s["status"] == "RUNNING"
    });

    // Removal.
    command(&c, dev, r#"{"remove":[{"name":"sensor"}]}"#);
    status_is(&c, dev, "removed sensor", 30);
    assert!(!agent_dir.join("state/apps/sensor/current").exists());
    assert!(!agent_dir.join("state/state/engine_fetch").exists(), "no command left pending");
}

/// `gwe.vVERSION.tar.gz` holding `bin` as the agent binary, signed with `key`.
fn agent_package(dir: &Path, version: &str, bin: &Path, key: &Path) -> PathBuf {
    let src = dir.join(format!("agent-{version}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("install.sh"), "#!/bin/sh\necho new agent $GWE_VERSION\n").unwrap();
    std::fs::copy(bin, src.join("gwe")).unwrap();
    // A smaller package; a failure only makes it bigger.
    let _ = Command::new("strip").arg(src.join("gwe")).status();
    Command::new("chmod").arg("755").arg(src.join("gwe")).arg(src.join("install.sh")).status().unwrap();
    let pkg = dir.join(format!("gwe.v{version}.tar.gz"));
    assert!(Command::new("tar").arg("czf").arg(&pkg).arg("-C").arg(&src).arg(".").status().unwrap().success());
    gwe(&["pkg", "sign", pkg.to_str().unwrap(), "--key", key.to_str().unwrap()]);
    pkg
}

fn engine_version(c: &Client, dev: i64) -> String {
    let r: serde_json::Value = serde_json::from_str(&dataport(c, dev, "engine_report")).unwrap_or_default();
    r["engine_version"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_agent_updates_itself_and_rolls_back_a_broken_one() {
    let Setup { dir, hub, c, dev, key, public } = setup();
    let agent_dir = dir.path().join("agent");
    let _agent = Agent::start(
        &agent_dir,
        &hub.url,
        &format!("report_interval_secs = 1\n[ota]\ntrusted_keys = [\"{public}\"]\nself_update_deadline_secs = 8\n"),
    );
    let builtin = env!("CARGO_PKG_VERSION");
    wait_for("the built-in agent's report", 20, || engine_version(&c, dev) == builtin);

    // A good new agent: installed, restarted into, confirmed healthy, reporting its version.
    let good = agent_package(dir.path(), "0.2.0", agent_bin(), &key);
    upload_signed(&c, &good);
    command(&c, dev, r#"{"install":[{"name":"gwe.v0.2.0.tar.gz"}]}"#);
    status_is(&c, dev, "agent 0.2.0 running and confirmed healthy", 60);
    wait_for("engine_version 0.2.0", 20, || engine_version(&c, dev) == "0.2.0");
    let gwe_dir = agent_dir.join("state/apps/gwe");
    assert!(!gwe_dir.join("trial").exists() && !gwe_dir.join("boots").exists());

    // A new agent that starts but never becomes healthy: stopped at the deadline, rolled back.
    let hangs = dir.path().join("hangs.sh");
    std::fs::write(
        &hangs,
        "#!/bin/sh\nfor a; do [ \"$a\" = --version ] && { echo gwe 0.3.0; exit 0; }; done\nexec sleep 600\n",
    )
    .unwrap();
    let pkg = agent_package(dir.path(), "0.3.0", &hangs, &key);
    upload_signed(&c, &pkg);
    let start = Instant::now();
    command(&c, dev, r#"{"install":[{"name":"gwe.v0.3.0.tar.gz"}]}"#);
    let s = status_is(&c, dev, "agent 0.3.0 did not confirm itself healthy within 8 s; rolled back to 0.2.0", 90);
    assert!(start.elapsed() >= Duration::from_secs(8), "{s}");
    wait_for("engine_version 0.2.0 again", 20, || engine_version(&c, dev) == "0.2.0");

    // A new agent that crashes at once: given up after three starts.
    let crashes = dir.path().join("crashes.sh");
    std::fs::write(
        &crashes,
        "#!/bin/sh\nfor a; do [ \"$a\" = --version ] && { echo gwe 0.4.0; exit 0; }; done\nexit 1\n",
    )
    .unwrap();
    let pkg = agent_package(dir.path(), "0.4.0", &crashes, &key);
    upload_signed(&c, &pkg);
    command(&c, dev, r#"{"install":[{"name":"gwe.v0.4.0.tar.gz"}]}"#);
    status_is(&c, dev, "agent 0.4.0 did not confirm itself in 3 starts; rolled back to 0.2.0", 60);
    wait_for("engine_version 0.2.0 once more", 20, || engine_version(&c, dev) == "0.2.0");
    assert_eq!(std::fs::read_link(gwe_dir.join("current")).unwrap().to_str(), Some("0.2.0"));
    assert!(!gwe_dir.join("0.3.0").exists() && !gwe_dir.join("0.4.0").exists(), "failed versions are deleted");
}

/// Waits until the latest fetch_status contains `text`.
fn status_says(c: &Client, dev: i64, text: &str, secs: u64) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let last = dataport(c, dev, "fetch_status");
        if last.contains(text) {
            return last;
        }
        assert!(Instant::now() < until, "fetch_status never said {text:?}; last: {last:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Release metadata for `pkg`: `gwe pkg sign --vendor --model` as an operator runs it.
fn sign_release(pkg: &Path, key: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["pkg", "sign", pkg.to_str().unwrap(), "--key", key.to_str().unwrap()];
    args.extend(["--vendor", VENDOR.0, "--model", VENDOR.1]);
    args.extend(extra);
    gwe(&args);
    PathBuf::from(format!("{}.meta", pkg.display()))
}

/// An offline root key and a keys document it signed that trusts `key`, uploaded to the hub.
struct Trust {
    root: PathBuf,
    root_public: String,
    keys: PathBuf,
    /// `key`'s public half.
    pubfile: String,
}

fn trust(dir: &Path, c: &Client, key: &Path) -> Trust {
    let root = dir.join("root.key");
    let root_public = gwe(&["pkg", "keygen", root.to_str().unwrap()]);
    let keys = dir.join("keys.json");
    let pubfile = format!("{}.pub", key.display());
    gwe(&["pkg", "keys", "--root-key", root.to_str().unwrap(), "--add", &pubfile, "--out", keys.to_str().unwrap()]);
    upload(c, &keys);
    Trust { root, root_public, keys, pubfile }
}

#[test]
fn release_metadata_from_the_hub_binds_size_version_and_keys() {
    let Setup { dir, hub, c, dev, key, public: _ } = setup();
    // The keys document lives on the hub beside the packages; the firmware has the root key only.
    let Trust { root, root_public, keys, pubfile } = trust(dir.path(), &c, &key);
    let good = "#!/bin/sh\necho running\nexec sleep 300\n";
    let v1 = package(dir.path(), "1.0", good, 2000, &key);
    upload(&c, &v1);
    upload(&c, &sign_release(&v1, &key, &[]));
    let relay = Relay::start(hub.port);
    let agent_dir = dir.path().join("agent");
    let _agent = Agent::start(
        &agent_dir,
        &format!("http://localhost:{}", relay.port),
        &format!("[ota]\nroot_keys = [\"{root_public}\"]\ninstall_timeout_secs = 20\n"),
    );
    wait_for("activation", 20, || agent_dir.join("state/state/cloud_token").exists());
    command(&c, dev, r#"{"install":[{"name":"sensor.v1.0.tar.gz"}]}"#);
    status_is(&c, dev, "installed sensor 1.0", 60);
    assert!(agent_dir.join("state/ota/keys.json").exists(), "the hub's keys document was adopted");

    // Endless data: the hub offers more bytes than were signed. Refused before the
    // download: the agent fetches no more than the signed size.
    let v2 = package(dir.path(), "2.0", good, 2000, &key);
    let meta2 = sign_release(&v2, &key, &[]);
    let signed = std::fs::metadata(&v2).unwrap().len();
    let mut big = std::fs::read(&v2).unwrap();
    big.resize(big.len() + 5_000_000, 0);
    std::fs::write(&v2, &big).unwrap();
    upload(&c, &v2);
    upload(&c, &meta2);
    relay.take();
    command(&c, dev, r#"{"install":[{"name":"sensor","version":"2.0"}]}"#);
    let s = status_is(&c, dev, "sensor.v2.0.tar.gz:", 30);
    assert!(s.contains(&format!("the hub offers {} bytes; the release metadata signed {signed}", big.len())), "{s}");
    assert!(relay.take().1 < 100_000, "the oversized package was not downloaded");
    assert_eq!(current(&agent_dir), "1.0");

    // A downgrade: refused; the operator's signed rollback goes through.
    let v09 = package(dir.path(), "0.9", good, 2000, &key);
    upload(&c, &v09);
    upload(&c, &sign_release(&v09, &key, &[]));
    command(&c, dev, r#"{"install":[{"name":"sensor","version":"0.9"}]}"#);
    let s = status_is(&c, dev, "sensor.v0.9.tar.gz:", 30);
    assert!(s.contains("version 0.9 is older than the running 1.0"), "{s}");
    assert_eq!(current(&agent_dir), "1.0");

    // No metadata on the hub: refused before the package is downloaded.
    let v4 = package(dir.path(), "4.0", good, 500_000, &key);
    upload(&c, &v4);
    relay.take();
    command(&c, dev, r#"{"install":[{"name":"sensor.v4.0.tar.gz"}]}"#);
    let s = status_is(&c, dev, "sensor.v4.0.tar.gz:", 30);
    assert!(s.contains("no release metadata"), "{s}");
    assert!(relay.take().1 < 100_000, "the package was not downloaded");

    // Garbage metadata: refused with the reason, nothing downloaded.
    let v3 = package(dir.path(), "3.0", good, 2000, &key);
    upload(&c, &v3);
    let garbage = dir.path().join("garbage/sensor.v3.0.tar.gz.meta");
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, "not json at all").unwrap();
    upload(&c, &garbage);
    command(&c, dev, r#"{"install":[{"name":"sensor.v3.0.tar.gz"}]}"#);
    let s = status_is(&c, dev, "sensor.v3.0.tar.gz:", 30);
    assert!(s.contains("malformed metadata"), "{s}");

    // Rotation through the hub: keys document 2 trusts a new key and revokes the old one.
    let key2 = dir.path().join("release2.key");
    gwe(&["pkg", "keygen", key2.to_str().unwrap()]);
    let k2 = format!("{}.pub", key2.display());
    gwe(&[
        "pkg",
        "keys",
        "--root-key",
        root.to_str().unwrap(),
        "--from",
        keys.to_str().unwrap(),
        "--add",
        &k2,
        "--revoke",
        &pubfile,
        "--out",
        keys.to_str().unwrap(),
    ]);
    upload(&c, &keys);
    upload(&c, &sign_release(&v3, &key, &[])); // the revoked key, properly signed
    command(&c, dev, r#"{"install":[{"name":"sensor.v3.0.tar.gz"}]}"#);
    let s = status_says(&c, dev, "which the keys document revokes", 30);
    assert!(s.starts_with("sensor.v3.0.tar.gz: "), "{s}");
    assert_eq!(current(&agent_dir), "1.0");
    upload(&c, &sign_release(&v3, &key2, &[]));
    command(&c, dev, r#"{"install":[{"name":"sensor.v3.0.tar.gz"}]}"#);
    status_is(&c, dev, "installed sensor 3.0", 60);
    assert_eq!(current(&agent_dir), "3.0");
}

/// An agent under `dir/agent` that takes OS bundles through `rauc` (its reboot a no-op),
/// reaching the hub at `port`, with `ota` added to its `[ota]`; activated.
fn os_agent(dir: &Path, port: u16, rauc: &Path, ota: &str) -> (Agent, PathBuf) {
    let agent_dir = dir.join("agent");
    let agent = Agent::start(
        &agent_dir,
        &format!("http://localhost:{port}"),
        &format!("[ota]\n{ota}os_updates = true\nrauc = \"{}\"\nreboot_command = [\"true\"]\n", rauc.display()),
    );
    wait_for("activation", 20, || agent_dir.join("state/state/cloud_token").exists());
    (agent, agent_dir)
}

/// A stand-in `rauc` with RAUC's answers (docs/os-updates.md): the running system is
/// compatible "c1" in slot A; every bundle's manifest says c1, version 2. Installs are
/// written to `installs`.
fn fake_rauc(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let prog = dir.join("rauc");
    let status = r#"{"compatible":"c1","booted":"A","boot_primary":"rootfs.1","slots":[{"rootfs.0":{"bootname":"A"}},{"rootfs.1":{"bootname":"B"}}]}"#;
    let script = format!(
        "#!/bin/sh\ncase \"$1 $2\" in\n  'status --output-format=json'|'status --detailed') echo '{status}' ;;\n  'info --output-format=json') echo '{{\"compatible\":\"c1\",\"version\":\"2\"}}' ;;\n  'install '*) echo \"$2\" >> {log}; echo '100% Installing done.' ;;\n  *) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n",
        log = dir.join("installs").display()
    );
    std::fs::write(&prog, script).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    prog
}

#[test]
fn os_bundles_are_checked_against_release_metadata_before_their_bytes_are_spent() {
    let Setup { dir, hub, c, dev, key, public: _ } = setup();
    let Trust { root_public, .. } = trust(dir.path(), &c, &key);
    let bundles = dir.path().join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    let bundle = |name: &str| {
        let p = bundles.join(name);
        let mut b = vec![0u8; 2_000_000];
        getrandom::fill(&mut b).unwrap();
        std::fs::write(&p, b).unwrap();
        p
    };
    let relay = Relay::start(hub.port);
    let (_agent, agent_dir) =
        os_agent(dir.path(), relay.port, &fake_rauc(dir.path()), &format!("root_keys = [\"{root_public}\"]\n"));
    let installs = || std::fs::read_to_string(dir.path().join("installs")).unwrap_or_default();

    // Signed for another board: refused from its metadata, before the download.
    let other = bundle("gw-os.v3.raucb");
    upload(&c, &other);
    upload(&c, &sign_release(&other, &key, &["--compatible", "another-board"]));
    relay.take();
    command(&c, dev, r#"{"os":{"name":"gw-os.v3.raucb"}}"#);
    let s = status_is(&c, dev, "gw-os.v3.raucb:", 30);
    assert!(s.contains(r#"signed for images compatible with "another-board"; this gateway's is "c1""#), "{s}");
    let sent = relay.take().1;
    assert!(sent < 100_000, "{sent} bytes went to the gateway for a bundle it refused");

    // The metadata of a bundle must name its compatible string: `gwe pkg sign` says so.
    let out = Command::new(agent_bin())
        .args(["pkg", "sign", other.to_str().unwrap(), "--key", key.to_str().unwrap(), "--vendor", "acme"])
        .args(["--model", "gw1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("names its compatible string"), "{out:?}");

    // No metadata, on a gateway with root keys: refused, nothing downloaded.
    let bare = bundle("gw-os.v4.raucb");
    upload(&c, &bare);
    command(&c, dev, r#"{"os":{"name":"gw-os.v4.raucb"}}"#);
    let s = status_is(&c, dev, "gw-os.v4.raucb:", 30);
    assert!(s.contains("no release metadata"), "{s}");
    assert!(relay.take().1 < 100_000, "the bundle was not downloaded");

    // Changed on the hub after it was signed (same size): downloaded, refused by its
    // SHA-256, RAUC never given it, the file gone.
    let changed = bundle("gw-os.v5.raucb");
    let meta = sign_release(&changed, &key, &["--compatible", "c1"]);
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[1_000_000] ^= 1;
    std::fs::write(&changed, &bytes).unwrap();
    upload(&c, &changed);
    upload(&c, &meta);
    command(&c, dev, r#"{"os":{"name":"gw-os.v5.raucb"}}"#);
    let s = status_is(&c, dev, "gw-os.v5.raucb:", 30);
    assert!(s.contains("the file's SHA-256 is not the signed one"), "{s}");
    assert!(relay.take().1 >= 2_000_000, "it was downloaded");
    assert_eq!(installs(), "", "RAUC was given a bundle that is not the signed one");
    assert!(!agent_dir.join("state/state/downloads/gw-os.v5.raucb").exists());

    // Signed for this board: downloaded, checked, handed to RAUC.
    let good = bundle("gw-os.v2.raucb");
    upload(&c, &good);
    upload(&c, &sign_release(&good, &key, &["--compatible", "c1"]));
    command(&c, dev, r#"{"os":{"name":"gw-os.v2.raucb","reboot":"manual"}}"#);
    status_is(&c, dev, "installed c1 2 into slot B", 30);
    assert!(installs().trim_end().ends_with("downloads/gw-os.v2.raucb"), "{}", installs());
}

/// A stand-in `rauc` that streams as RAUC does (curl's Range requests to the URL it is
/// given, the first for bytes 0-3): `info` and `install` each fetch the first four bytes,
/// `install` then bytes 1,000,000-1,099,999 into `streamed`, and tries a path next to the
/// bundle's into `probe`.
fn streaming_rauc(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let prog = dir.join("rauc");
    let status = r#"{"compatible":"c1","booted":"A","boot_primary":"rootfs.1","slots":[{"rootfs.0":{"bootname":"A"}},{"rootfs.1":{"bootname":"B"}}]}"#;
    let d = dir.display();
    let script = format!(
        "#!/bin/sh\nurl=$3; [ \"$1\" = install ] && url=$2\n\
         case \"$1 $2\" in\n  'status --output-format=json'|'status --detailed') echo '{status}' ;;\n  \
         'info --output-format=json') curl -sf -r 0-3 \"$url\" >/dev/null && echo '{{\"compatible\":\"c1\",\"version\":\"2\"}}' ;;\n  \
         'install '*) echo \"$url\" > {d}/url; curl -sf -r 0-3 \"$url\" >/dev/null || exit 1; \
         curl -sf -r 1000000-1099999 \"$url\" > {d}/streamed || exit 1; \
         curl -s -o /dev/null -w '%{{http_code}}' \"${{url%/*}}/other.raucb\" > {d}/probe; echo '100% Installing done.' ;;\n  \
         *) echo \"unexpected: $*\" >&2; exit 1 ;;\nesac\n"
    );
    std::fs::write(&prog, script).unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    prog
}

#[test]
fn an_os_bundle_streams_through_the_agent_with_no_credential_given_to_rauc() {
    let Setup { dir, hub, c, dev, key: _, public: _ } = setup();
    let bundle = dir.path().join("gw-os.v2.raucb");
    let mut bytes = vec![0u8; 3_000_000];
    getrandom::fill(&mut bytes).unwrap();
    std::fs::write(&bundle, &bytes).unwrap();
    upload(&c, &bundle);
    let relay = Relay::start(hub.port);
    let (_agent, agent_dir) = os_agent(dir.path(), relay.port, &streaming_rauc(dir.path()), "allow_unsigned = true\n");
    let token = std::fs::read_to_string(agent_dir.join("state/state/cloud_token")).unwrap();
    relay.take();
    command(&c, dev, r#"{"os":{"name":"gw-os.v2.raucb","stream":true,"reboot":"manual"}}"#);
    status_is(&c, dev, "installed c1 2 into slot B", 30);
    // RAUC read what it asked for, through the agent, from the hub; nothing was downloaded.
    let streamed = std::fs::read(dir.path().join("streamed")).unwrap();
    assert!(streamed == bytes[1_000_000..1_100_000], "the range RAUC read is not the bundle's");
    let sent = relay.take().1;
    assert!((100_000..500_000).contains(&sent), "{sent} bytes went to the gateway for a 100 kB range");
    assert!(!agent_dir.join("state/state/downloads/gw-os.v2.raucb").exists());
    // RAUC was given a loopback URL with a one-time path: no token, nothing else served.
    let url = std::fs::read_to_string(dir.path().join("url")).unwrap();
    assert!(url.starts_with("http://127.0.0.1:") && url.trim_end().ends_with("/gw-os.v2.raucb"), "{url}");
    assert!(!url.contains(token.trim()), "the device token is on RAUC's command line");
    assert_eq!(std::fs::read_to_string(dir.path().join("probe")).unwrap(), "404");
    // After the install the relay is gone.
    let after = Command::new("curl").args(["-s", "-o", "/dev/null", "-r", "0-3", url.trim()]).status().unwrap();
    assert!(!after.success(), "the relay still answers after the install");
}
