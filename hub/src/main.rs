//! `gwe-hub`: the cloud side of Gateway Engine.
//!
//! ```text
//! gwe-hub serve [--listen ADDR] [--db URL] [--tls-cert PEM --tls-key PEM]
//!               [--operator-token-file FILE] [--max-body BYTES]
//! gwe-hub device add VENDOR MODEL SN [--db URL]     whitelist a device
//! gwe-hub device enable ID [--db URL]               let it activate again
//! gwe-hub device list [--db URL]
//! ```
//! `--db` is `sqlite:PATH` (default `sqlite:/var/lib/gwe-hub/hub.db`) or `postgres://...`.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use gwe_hub::notify::Notifier;
use gwe_hub::store::{self, DeviceKey};
use gwe_hub::{now_ms, server, Hub, Limits};
use lexopt::prelude::*;

const USAGE: &str = "usage: gwe-hub serve [--listen ADDR] [--db URL] [--tls-cert PEM --tls-key PEM] \
[--operator-token-file FILE] [--max-body BYTES]
       gwe-hub device add VENDOR MODEL SN [--db URL]
       gwe-hub device enable ID [--db URL]
       gwe-hub device list [--db URL]";

struct Args {
    cmd: Vec<String>,
    listen: SocketAddr,
    db: String,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    token_file: Option<PathBuf>,
    max_body: usize,
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

/// The operator token in `path`; a new random one is written (0600) when the file is missing.
fn operator_token(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => return Err(format!("{}: the operator token file is empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let token = gwe_hub::new_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{token}").and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))?;
    log::info!("new operator token written to {}", path.display());
    Ok(token)
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
                _ => return Err(USAGE.into()),
            }
            return Ok(());
        }
        _ => return Err(USAGE.into()),
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    let token = a.token_file.as_deref().map(operator_token).transpose()?;
    let db = store::open(&a.db, notifier.clone()).await?;
    let limits = Limits { max_body: a.max_body, ..Limits::default() };
    let hub = Arc::new(Hub::new(db, notifier, limits, token));
    let listener =
        tokio::net::TcpListener::bind(a.listen).await.map_err(|e| format!("listening on {}: {e}", a.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
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
    server::serve(listener, tls, gwe_hub::router(hub), shutdown).await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gwe-hub: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
