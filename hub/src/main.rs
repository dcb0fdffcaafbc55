//! `gwe-hub`: the cloud side of Gateway Engine.
//!
//! ```text
//! gwe-hub serve [--listen ADDR] [--db URL] [--tls-cert PEM --tls-key PEM]
//!               [--operator-token-file FILE] [--max-body BYTES]
//!               [--system-name NAME] [--advertise HOST:PORT] [--group NAME]
//!               [--edge-secret-file FILE] [--registry URL --registry-token-file FILE]
//!               [--arrowhead-insecure | --arrowhead-ca PEM] [--arrowhead-ports SR,ORCH,AUTH]
//!               [--device-ca PEM [--device-ca-key PEM] [--device-cert-days N]]
//! gwe-hub device add VENDOR MODEL SN [--db URL]     whitelist a device
//! gwe-hub device enable ID [--db URL]               let it activate (or enroll) again
//! gwe-hub device list [--db URL]
//! gwe-hub device import FILE [--db URL]             pre-authorise gateways' keys (CSV)
//! gwe-hub device keys [--db URL]                    every enrolled key
//! gwe-hub device approve|revoke ID [--db URL]       a key offered with a batch credential;
//!                                                   a device's token, key and certificates
//! gwe-hub batch add NAME [--db URL]                 a batch credential (printed once)
//! gwe-hub operator add NAME [--role R] [--db URL]   a dashboard operator; password on stdin
//! gwe-hub operator passwd NAME [--db URL]           a new password (signs out its sessions)
//! gwe-hub operator role NAME ROLE [--db URL]        viewer, operator or admin (signs out)
//! gwe-hub operator token NAME [--scope read|write] [--days N] [--label TEXT] [--db URL]
//!                                                   an API token of the operator's own
//! gwe-hub operator tokens [--db URL]                every API token (never the secret)
//! gwe-hub operator disable|enable NAME [--db URL]   no sign-in, no token (sessions end)
//! gwe-hub operator revoke ID [--db URL]             an API token stops working
//! ```
//! `--db` is `sqlite:PATH` (default `sqlite:/var/lib/gwe-hub/hub.db`) or `postgres://...`.
//! The hub registers its edge services (`batch`, `ctrlpoll`, `ctrlupdate`, `cmd`) as
//! `--system-name` at `--advertise` in its own service registry, or in the registry of the
//! hub at `--registry` (with that hub's operator token). Hubs of one deployment share
//! `--edge-secret-file` so that each accepts the tokens the orchestrator gave out. The
//! default system name is `gwe-hub-HOST-PORT` (the advertised address), so two hubs never
//! shadow each other. `--arrowhead-insecure` opens the service registry and orchestrator as
//! Arrowhead's insecure mode does (no credentials; a system is who it says it is);
//! `--arrowhead-ca` is Arrowhead's certificate mode (TLS; a client certificate of the local
//! cloud is its holder's identity). `--arrowhead-ports` also serves the service registry,
//! the orchestrator and the authorization system's public key each on its usual port
//! (8443, 8441, 8445). `--device-ca`: a gateway's TLS client certificate issued by this CA,
//! its common name the serial number, identifies it without a token. With `--device-ca-key`
//! the hub also issues such certificates to gateways that enroll their own keys
//! (`POST /gwe/v1/enroll`, valid `--device-cert-days`, default 30; `docs/identity.md`).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use gwe_hub::notify::Notifier;
use gwe_hub::server::PeerKind;
use gwe_hub::service::identity;
use gwe_hub::store::{self, DeviceKey, Role, Scope};
use gwe_hub::{now_ms, server, Hub, Limits};
use lexopt::prelude::*;

/// glibc's malloc took about a third of the request path's user time under load (10,000
/// writes/s over 17,000 connections per process: consolidating its free lists); mimalloc
/// keeps per-thread pages.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: gwe-hub serve [--listen ADDR] [--db URL] [--tls-cert PEM --tls-key PEM] \
[--operator-token-file FILE] [--max-body BYTES]
               [--system-name NAME] [--advertise HOST:PORT] [--group NAME]
               [--edge-secret-file FILE] [--registry URL --registry-token-file FILE]
               [--arrowhead-insecure | --arrowhead-ca PEM] [--arrowhead-ports SR,ORCH,AUTH]
               [--device-ca PEM [--device-ca-key PEM] [--device-cert-days N]]
       gwe-hub device add VENDOR MODEL SN [--db URL]
       gwe-hub device enable ID [--db URL]
       gwe-hub device list [--db URL]
       gwe-hub device import FILE [--db URL]   (lines: vendor,model,serial,public key)
       gwe-hub device keys [--db URL]
       gwe-hub device approve|revoke ID [--db URL]
       gwe-hub batch add NAME [--db URL]
       gwe-hub operator add NAME [--role viewer|operator|admin] [--db URL]   (the password is read from stdin)
       gwe-hub operator passwd NAME [--db URL]
       gwe-hub operator role NAME viewer|operator|admin [--db URL]
       gwe-hub operator token NAME [--scope read|write] [--days N] [--label TEXT] [--db URL]
       gwe-hub operator tokens [--db URL]
       gwe-hub operator disable|enable NAME [--db URL]
       gwe-hub operator revoke ID [--db URL]";

struct Args {
    cmd: Vec<String>,
    listen: SocketAddr,
    db: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    token_file: Option<PathBuf>,
    max_body: usize,
    system_name: Option<String>,
    arrowhead_insecure: bool,
    arrowhead_ca: Option<PathBuf>,
    arrowhead_ports: Option<[u16; 3]>,
    device_ca: Option<PathBuf>,
    device_ca_key: Option<PathBuf>,
    device_cert_days: u64,
    advertise: Option<String>,
    group: Option<String>,
    secret_file: Option<PathBuf>,
    registry: Option<String>,
    registry_token_file: Option<PathBuf>,
    /// `operator add --role`: what the new operator may do (default `admin`, what every
    /// operator could do before roles, so existing set-up scripts keep working).
    role: Option<Role>,
    /// `operator token`: what the token may do (default read), for how many days (default
    /// 90, at most 365), and what it is for.
    scope: Option<Scope>,
    days: Option<i64>,
    label: Option<String>,
}

fn parse() -> Result<Args, lexopt::Error> {
    let mut a = Args {
        cmd: Vec::new(),
        listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        db: "sqlite:/var/lib/gwe-hub/hub.db".into(),
        tls_cert: None,
        tls_key: None,
        token_file: None,
        max_body: Limits::default().max_body,
        system_name: None,
        arrowhead_insecure: false,
        arrowhead_ca: None,
        arrowhead_ports: None,
        device_ca: None,
        device_ca_key: None,
        device_cert_days: 30,
        role: None,
        scope: None,
        days: None,
        label: None,
        advertise: None,
        group: None,
        secret_file: None,
        registry: None,
        registry_token_file: None,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("listen") => a.listen = p.value()?.parse()?,
            Long("db") => a.db = p.value()?.string()?,
            Long("tls-cert") => a.tls_cert = Some(p.value()?.into()),
            Long("tls-key") => a.tls_key = Some(p.value()?.into()),
            Long("operator-token-file") => a.token_file = Some(p.value()?.into()),
            Long("max-body") => a.max_body = p.value()?.parse()?,
            Long("system-name") => a.system_name = Some(p.value()?.string()?),
            Long("arrowhead-insecure") => a.arrowhead_insecure = true,
            Long("arrowhead-ca") => a.arrowhead_ca = Some(p.value()?.into()),
            Long("arrowhead-ports") => {
                let v = p.value()?.string()?;
                let bad = || format!("--arrowhead-ports {v:?}: three ports (registry, orchestrator, authorization)");
                let ports: Vec<u16> = v.split(',').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
                a.arrowhead_ports = Some(<[u16; 3]>::try_from(ports).map_err(|_| bad())?);
            }
            Long("device-ca") => a.device_ca = Some(p.value()?.into()),
            Long("device-ca-key") => a.device_ca_key = Some(p.value()?.into()),
            Long("device-cert-days") => {
                let v = p.value()?.string()?;
                a.device_cert_days = v
                    .parse()
                    .ok()
                    .filter(|d| (1..=825).contains(d))
                    .ok_or_else(|| format!("--device-cert-days {v:?}: a number of days, 1 to 825"))?;
            }
            Long("scope") => {
                let v = p.value()?.string()?;
                a.scope = Some(Scope::parse(&v).ok_or_else(|| format!("--scope {v:?}: read or write"))?);
            }
            Long("days") => {
                let v = p.value()?.string()?;
                let days: i64 = v.parse().map_err(|_| format!("--days {v:?}: a number of days"))?;
                if !(1..=365).contains(&days) {
                    return Err(format!("--days {days}: 1 to 365").into());
                }
                a.days = Some(days);
            }
            Long("label") => a.label = Some(p.value()?.string()?),
            Long("role") => {
                let v = p.value()?.string()?;
                a.role = Some(Role::parse(&v).ok_or_else(|| format!("--role {v:?}: viewer, operator or admin"))?);
            }
            Long("advertise") => a.advertise = Some(p.value()?.string()?),
            Long("group") => a.group = Some(p.value()?.string()?),
            Long("edge-secret-file") => a.secret_file = Some(p.value()?.into()),
            Long("registry") => a.registry = Some(p.value()?.string()?),
            Long("registry-token-file") => a.registry_token_file = Some(p.value()?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Value(v) => a.cmd.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(a)
}

/// Writes `secret` to a new file `path` (0600, synced); an existing file is an error.
fn create_secret(path: &Path, secret: &str) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{secret}").and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The operator token in `path`; a new random one is written (0600) when the file is missing.
fn operator_token(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => return Err(format!("{}: the operator token file is empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let token = gwe_hub::new_token();
    create_secret(path, &token)?;
    log::info!("new operator token written to {}", path.display());
    Ok(token)
}

/// The edge token secret in `path`; a new random one is written (0600) when it is missing.
fn edge_secret(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().as_bytes().to_vec()),
        Ok(_) => return Err(format!("{}: the edge secret must be at least 32 characters", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let secret = format!("{}{}", gwe_hub::new_token(), gwe_hub::new_token());
    create_secret(path, &secret)?;
    Ok(secret.into_bytes())
}

/// Registers this hub's services with the registry of another hub, retrying until it answers.
async fn register_remote(registry: String, token: String, services: Vec<gwe_wire::arrowhead::RegisterRequest>) {
    let url = format!("{}/serviceregistry/register", registry.trim_end_matches('/'));
    let mut wait = std::time::Duration::from_millis(200);
    for s in services {
        loop {
            let (url, token, body) = (url.clone(), token.clone(), serde_json::to_vec(&s).unwrap_or_default());
            let r = tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                let mut resp = agent
                    .post(&url)
                    .header("Authorization", &format!("Bearer {token}"))
                    .header("Content-Type", "application/json")
                    .send(&body[..])
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                if status == 201 {
                    Ok(())
                } else {
                    Err(format!("{status}: {}", text.trim()))
                }
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match r {
                Ok(()) => {
                    log::info!("registered {} at {registry}", s.service_definition);
                    break;
                }
                Err(e) => {
                    log::warn!("registering {} at {registry}: {e}; retrying", s.service_definition);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_secs(30));
                }
            }
        }
    }
}

async fn run(a: Args) -> Result<(), String> {
    let notifier = Arc::new(Notifier::default());
    let cmd: Vec<&str> = a.cmd.iter().map(String::as_str).collect();
    match cmd.as_slice() {
        ["serve"] => {}
        ["device", rest @ ..] => {
            let db = store::open(&a.db, notifier).await?;
            match rest {
                ["add", vendor, model, sn] => {
                    let key = DeviceKey { vendor: vendor.to_string(), model: model.to_string(), sn: sn.to_string() };
                    let d = db.add_device(&key, now_ms()).await.map_err(|e| e.to_string())?;
                    println!("{}", serde_json::to_string(&d).unwrap_or_default());
                }
                ["enable", id] => {
                    let id: i64 = id.parse().map_err(|_| format!("device id {id:?} is not a number"))?;
                    if !db.enable_device(id).await.map_err(|e| e.to_string())? {
                        return Err(format!("no device {id}"));
                    }
                }
                ["list"] => {
                    for d in db.devices().await.map_err(|e| e.to_string())? {
                        println!("{}", serde_json::to_string(&d).unwrap_or_default());
                    }
                }
                ["import", file] => {
                    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
                    let rows = identity::parse_import(&text).map_err(|e| format!("{file}: {e}"))?;
                    let changed = db.import_keys(&rows, now_ms()).await.map_err(|e| e.to_string())?;
                    let targets = gwe_hub::service::audit::targets(rows.iter().map(|(k, _)| k.sn.as_str()));
                    let detail = format!("{} keys pre-authorised, {changed} new or changed", rows.len());
                    cli_audit(&*db, "device.import", &targets, &detail).await?;
                    eprintln!("{file}: {detail}");
                }
                ["keys"] => {
                    for k in db.enrolled_keys().await.map_err(|e| e.to_string())? {
                        let fp = if k.spki.is_empty() { "-".to_string() } else { identity::fingerprint(&k.spki) };
                        println!("{} {} {} {fp} {}", k.device_id, k.state, k.source, k.not_after_ms.unwrap_or(0));
                    }
                }
                [verb @ ("approve" | "revoke"), id] => {
                    let id: i64 = id.parse().map_err(|_| format!("device id {id:?} is not a number"))?;
                    let sn = db.device(id).await.map_err(|e| e.to_string())?.ok_or(format!("no device {id}"))?.sn;
                    let done = if *verb == "approve" {
                        db.approve_key(id, now_ms()).await
                    } else {
                        db.revoke_device(id, now_ms()).await
                    };
                    if !done.map_err(|e| e.to_string())? {
                        return Err(match *verb {
                            "approve" => format!("device {id} ({sn}) has no key waiting for approval"),
                            _ => format!("no device {id}"),
                        });
                    }
                    cli_audit(&*db, &format!("device.{verb}"), &sn, "").await?;
                    eprintln!("device {id} ({sn}): {verb}d");
                }
                _ => return Err(USAGE.into()),
            }
            return Ok(());
        }
        ["batch", "add", name] => {
            if name.is_empty() || name.len() > 64 || name.contains(char::is_whitespace) {
                return Err(format!("batch name {name:?}: 1 to 64 characters, no spaces"));
            }
            let db = store::open(&a.db, notifier).await?;
            let secret = format!("{}{}", identity::BATCH_PREFIX, gwe_hub::new_token());
            if !db.add_batch(name, &gwe_hub::token_hash(&secret), now_ms()).await.map_err(|e| e.to_string())? {
                return Err(format!("there is a batch credential {name} already"));
            }
            cli_audit(&*db, "batch.add", name, "").await?;
            // The only time the secret is shown: the hub keeps its SHA-256.
            println!("{secret}");
            return Ok(());
        }
        ["operator", verb @ ("add" | "passwd"), name] => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password).map_err(|e| format!("reading the password from stdin: {e}"))?;
            let password = password.trim_end_matches(['\r', '\n']);
            gwe_hub::service::auth::check_new_operator(name, password)?;
            let hash = gwe_hub::service::auth::hash_password(password)?;
            let db = store::open(&a.db, notifier).await?;
            let role = a.role.unwrap_or(Role::Admin);
            db.put_operator(name, &hash, role, *verb == "passwd", now_ms()).await.map_err(|e| e.to_string())?;
            let detail = if *verb == "add" { format!("role {role}") } else { String::new() };
            let e = gwe_hub::service::audit::entry("cli", &format!("operator.{verb}"), name, &detail, "");
            db.audit_add(&e).await.map_err(|e| e.to_string())?;
            eprintln!("operator {name}: password set");
            return Ok(());
        }
        ["operator", "token", name] => {
            let db = store::open(&a.db, notifier).await?;
            let token = format!("{}{}", gwe_hub::http::operator::TOKEN_PREFIX, gwe_hub::new_token());
            let now = now_ms();
            let t = store::ApiToken {
                id: 0,
                operator: (*name).to_string(),
                label: a.label.clone().unwrap_or_default(),
                scope: a.scope.unwrap_or(Scope::Read),
                created_ms: now,
                expires_ms: now + a.days.unwrap_or(90) * 86_400_000,
                revoked: false,
            };
            let id = db
                .add_api_token(&t, &gwe_hub::token_hash(&token))
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no operator {name}"))?;
            let detail = format!("token {id}: {}, {} days, {:?}", t.scope, a.days.unwrap_or(90), t.label);
            db.audit_add(&gwe_hub::service::audit::entry("cli", "token.add", name, &detail, ""))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "token {id} of {name} ({}), valid for {} days; it is shown only now:",
                t.scope,
                a.days.unwrap_or(90)
            );
            println!("{token}");
            return Ok(());
        }
        ["operator", "tokens"] => {
            let db = store::open(&a.db, notifier).await?;
            for t in db.api_tokens().await.map_err(|e| e.to_string())? {
                println!("{}", serde_json::to_string(&t).unwrap_or_default());
            }
            return Ok(());
        }
        ["operator", "revoke", id] => {
            let id: i64 = id.parse().map_err(|_| format!("token id {id:?} is not a number"))?;
            let db = store::open(&a.db, notifier).await?;
            if !db.revoke_api_token(id).await.map_err(|e| e.to_string())? {
                return Err(format!("no token {id}"));
            }
            db.audit_add(&gwe_hub::service::audit::entry("cli", "token.revoke", &format!("token {id}"), "", ""))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("token {id}: revoked");
            return Ok(());
        }
        ["operator", verb @ ("disable" | "enable"), name] => {
            let db = store::open(&a.db, notifier).await?;
            if !db.set_disabled(name, *verb == "disable").await.map_err(|e| e.to_string())? {
                return Err(format!("no operator {name}"));
            }
            db.audit_add(&gwe_hub::service::audit::entry("cli", &format!("operator.{verb}"), name, "", ""))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("operator {name}: {verb}d");
            return Ok(());
        }
        ["operator", "role", name, role] => {
            let role = Role::parse(role).ok_or_else(|| format!("role {role:?}: viewer, operator or admin"))?;
            let db = store::open(&a.db, notifier).await?;
            if !db.set_role(name, role).await.map_err(|e| e.to_string())? {
                return Err(format!("no operator {name}"));
            }
            db.audit_add(&gwe_hub::service::audit::entry("cli", "operator.role", name, &format!("role {role}"), ""))
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("operator {name}: {role} (signed out)");
            return Ok(());
        }
        _ => return Err(USAGE.into()),
    }
    let client_cas: Vec<_> = [(&a.arrowhead_ca, PeerKind::Arrowhead), (&a.device_ca, PeerKind::Device)]
        .into_iter()
        .filter_map(|(p, k)| p.clone().map(|p| (p, k)))
        .collect();
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(server::tls(c, k, &client_cas)?),
        (None, None) if client_cas.is_empty() => None,
        (None, None) => return Err("--arrowhead-ca and --device-ca need TLS (--tls-cert, --tls-key)".into()),
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    if a.arrowhead_insecure && a.arrowhead_ca.is_some() {
        return Err("--arrowhead-insecure and --arrowhead-ca are two modes: choose one".into());
    }
    let token = a.token_file.as_deref().map(operator_token).transpose()?;
    let db = store::open(&a.db, notifier.clone()).await?;
    let limits = Limits { max_body: a.max_body, ..Limits::default() };
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.map_err(|e| format!("listening on {}: {e}", a.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (adv_host, adv_port) = match &a.advertise {
        Some(hp) => {
            let (h, p) = hp.rsplit_once(':').ok_or_else(|| format!("--advertise {hp:?} is not HOST:PORT"))?;
            (h.to_string(), p.parse::<u16>().map_err(|_| format!("--advertise {hp:?}: bad port"))?)
        }
        None if addr.ip().is_unspecified() => ("127.0.0.1".to_string(), addr.port()),
        None => (addr.ip().to_string(), addr.port()),
    };
    let name = a.system_name.clone().unwrap_or_else(|| format!("gwe-hub-{}-{adv_port}", adv_host.replace(':', "_")));
    let mut edge = gwe_hub::http::edge::EdgeSettings::standalone(&name, &adv_host, adv_port);
    edge.open_registry = a.arrowhead_insecure;
    edge.tls = tls.is_some();
    edge.certificates = a.arrowhead_ca.is_some();
    edge.public_key = tls.as_ref().map(|t| t.public_key.clone());
    edge.group = a.group.clone();
    if let Some(f) = &a.secret_file {
        edge.secret = edge_secret(f)?;
    }
    let mut hub = Hub::new(db, notifier, limits, token).with_edge(edge);
    match (&a.device_ca, &a.device_ca_key) {
        (Some(ca), Some(key)) => {
            let days = std::time::Duration::from_secs(a.device_cert_days * 86_400);
            hub = hub.with_issuer(identity::DeviceIssuer::load(ca, key, days)?);
        }
        (None, Some(_)) => return Err("--device-ca-key needs --device-ca (the certificate of that key)".into()),
        _ => {}
    }
    let hub = Arc::new(hub);
    match (&a.registry, &a.registry_token_file) {
        (None, _) => gwe_hub::http::registry::register_own(&hub).await?,
        (Some(r), Some(f)) => {
            let t = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            tokio::spawn(register_remote(r.clone(), t.trim().to_string(), hub.edge.services()));
        }
        (Some(_), None) => return Err("--registry needs --registry-token-file".into()),
    }
    gwe_hub::service::rollouts::spawn(hub.clone());
    tokio::spawn(hub.clone().check_tokens());
    // Tests and scripts read this line to learn the port.
    println!("gwe-hub listening on {addr} ({})", if tls.is_some() { "https" } else { "http" });
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        log::info!("stopping");
    };
    let router = gwe_hub::router(hub);
    if let Some(ports) = a.arrowhead_ports {
        // Arrowhead's core systems each on its usual port, each serving its own paths.
        for (port, prefix) in ports.into_iter().zip(["/serviceregistry/", "/orchestrator/", "/authorization/"]) {
            let at = SocketAddr::new(a.listen.ip(), port);
            let l = tokio::net::TcpListener::bind(at).await.map_err(|e| format!("listening on {at}: {e}"))?;
            log::info!("serving {prefix} on {at}");
            let only = router.clone().layer(axum::middleware::from_fn(move |rq, next| only_under(prefix, rq, next)));
            tokio::spawn(server::serve(l, tls.clone(), only, std::future::pending()));
        }
    }
    server::serve(listener, tls, router, shutdown).await.map_err(|e| e.to_string())
}

/// Records a change made on the command line.
async fn cli_audit(db: &dyn store::Store, action: &str, targets: &str, detail: &str) -> Result<(), String> {
    db.audit_add(&gwe_hub::service::audit::entry("cli", action, targets, detail, "")).await.map_err(|e| e.to_string())
}

/// 404 for every path not under `prefix` (a core system's port serves that system only).
async fn only_under(
    prefix: &'static str,
    rq: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if rq.uri().path().starts_with(prefix) {
        next.run(rq).await
    } else {
        (axum::http::StatusCode::NOT_FOUND, format!("this port serves {prefix} only\n")).into_response()
    }
}

/// SQLite allocates with the C library's malloc, not mimalloc. With several hubs sharing a
/// file, a writer's page cache is emptied by every other hub's commit and filled again on
/// its next turn, and glibc gave the freed pages back to the kernel each time (`madvise`)
/// only to take them again (page faults, zeroed pages). Freed memory is kept up to 512 MB,
/// and blocks up to 32 MB come from the heap, not from mappings of their own.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters; called first thing, before threads.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gwe-hub: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            // Request handling runs at nice 5, below the database threads: on a loaded
            // machine a writer preempted inside its transaction (and its lock) kept every
            // other hub process's writes waiting. Under load, write p99 went from
            // 136-300 ms to 93-143 ms with this (six hubs, 10,000 writes/s, 2 cores).
            let _ = gwe_hub::set_thread_nice(5);
        })
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gwe-hub: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gwe-hub: {e}");
            ExitCode::FAILURE
        }
    }
}
