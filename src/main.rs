//! `gwe`: the Gateway Engine agent. Thin front end over the library.

use std::process::ExitCode;

use gwe::cli::{self, Command};
use gwe::config::{self, Config};
use gwe::logging::{self, Target};
use gwe::queue;

/// Exit statuses, for init scripts and operators.
#[repr(u8)]
enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
    Config = 3,
    /// `gwe ctl` could not reach the agent.
    Unreachable = 4,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gwe: {e}\n\n{}", cli::USAGE);
            return Exit::Usage.into();
        }
    };
    match cli.command {
        Command::Help => {
            print!("{}", cli::USAGE);
            return Exit::Ok.into();
        }
        Command::PkgKeygen { path } => return report(pkg_keygen(&path)),
        Command::PkgSign { file, key, sign } => return report(pkg_sign(&file, &key, &sign)),
        Command::PkgBuild { build, out, key, sign } => return report(pkg_build(&build, &out, key.as_deref(), &sign)),
        Command::PkgKeys { root_key, from, add, revoke, valid_days, out } => {
            return report(pkg_keys(&root_key, from.as_deref(), &add, &revoke, valid_days, &out))
        }
        Command::Version => {
            println!("gwe {}", env!("CARGO_PKG_VERSION"));
            return Exit::Ok.into();
        }
        _ => {}
    }
    let cfg = match Config::from_file(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gwe: {e}");
            return Exit::Config.into();
        }
    };
    let result = match cli.command {
        Command::Run { daemon } => {
            gwe::agent::lean_malloc();
            gwe::agent::raise_fd_limit();
            let level = config::log_level(&cfg.log.level).unwrap_or(log::LevelFilter::Info);
            logging::init(if daemon { Target::Syslog } else { Target::Stderr }, level);
            let deadline = std::time::Duration::from_secs(cfg.ota.self_update_deadline_secs);
            if let Some(code) = gwe::ota::selfupdate::launch(&cfg.paths.apps_dir(), deadline) {
                return code;
            }
            match gwe::agent::run(&cfg) {
                Ok(gwe::agent::Ended::Restart) => return gwe::ota::selfupdate::restart(),
                Ok(gwe::agent::Ended::Stopped) => Ok(()),
                Err(e) => {
                    log::error!("{e}");
                    eprintln!("gwe: {e}");
                    return if e.is_config() { Exit::Config } else { Exit::Failure }.into();
                }
            }
        }
        Command::QueueStats { json } => queue_stats(&cfg, json),
        Command::QueueDump { limit } => queue_dump(&cfg, limit),
        Command::Ctl { request, json } => {
            return match gwe::ctl::client(&cfg.paths.run_dir, &request, json) {
                gwe::ctl::Outcome::Ok => Exit::Ok,
                gwe::ctl::Outcome::Refused => Exit::Failure,
                gwe::ctl::Outcome::Unreachable => Exit::Unreachable,
            }
            .into();
        }
        Command::CheckConfig => return check_config(&cli.config, &cfg),
        Command::Check => {
            let r = gwe::check::check(&cfg);
            for l in &r.checked {
                println!("ok: {l}");
            }
            for l in &r.notes {
                println!("note: {l}");
            }
            for l in &r.errors {
                println!("error: {l}");
            }
            if r.errors.is_empty() {
                Ok(())
            } else {
                Err(format!("{} problems on the data partition", r.errors.len()))
            }
        }
        Command::OsStatus => os_status(&cfg),
        Command::Identity => show_identity(&cfg),
        Command::OsInstall { bundle, reboot } => os_install(&cfg, &bundle, reboot),
        Command::Help
        | Command::Version
        | Command::PkgKeygen { .. }
        | Command::PkgSign { .. }
        | Command::PkgBuild { .. }
        | Command::PkgKeys { .. } => Ok(()),
    };
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            log::error!("{e}");
            eprintln!("gwe: {e}");
            Exit::Failure.into()
        }
    }
}

use gwe::ota::os::RebootAt;

fn rauc(cfg: &Config) -> gwe::ota::os::Rauc {
    gwe::ota::os::Rauc {
        program: cfg.ota.rauc.clone(),
        state_dir: cfg.paths.secrets_dir(),
        run_dir: cfg.paths.run_dir.clone(),
        sup: None,
    }
}

/// `gwe os status`: RAUC's slots and what gwe last asked of them.
fn os_status(cfg: &Config) -> Result<(), String> {
    let r = rauc(cfg);
    let status = r.status().map_err(|e| e.to_string())?;
    let update = r.state().map_err(|e| e.to_string())?;
    let v = serde_json::json!({ "rauc": status, "update": update, "system": gwe::ota::os::report(&cfg.paths.secrets_dir()) });
    emit(&format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()))
}

/// `gwe os install BUNDLE`: RAUC writes the other slot; then the board restarts into it and
/// the agent there decides whether it is good.
fn os_install(cfg: &Config, bundle: &str, reboot: bool) -> Result<(), String> {
    let r = rauc(cfg);
    let u = r
        .install(bundle, if reboot { RebootAt::Now } else { RebootAt::Manual }, &mut |line| {
            let _ = emit(&format!("{line}\n"));
        })
        .map_err(|e| format!("{bundle}: {e}"))?;
    emit(&format!(
        "installed {} {} into slot {} (running slot {}){}\n",
        u.compatible,
        u.version,
        u.to,
        u.from,
        if reboot { "; rebooting into it" } else { "; it boots at the next restart" }
    ))?;
    if reboot {
        gwe::ota::os::reboot(&cfg.ota.reboot_command, None).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Writes `text` to stdout. A reader that went away (`gwe queue stats | head`) is not an
/// error: the rest is not wanted.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

/// The config file (already read) and the program files: every problem, one a line; exit 3
/// when any is an error.
fn check_config(path: &std::path::Path, cfg: &Config) -> ExitCode {
    let loaded = gwe::supervisor::program::load_dir(&cfg.supervisor.programs_dir, &cfg.paths.log_dir);
    use std::fmt::Write;
    let mut text = String::new();
    // Writing to a String cannot fail.
    for w in &loaded.warnings {
        let _ = writeln!(text, "warning: {w}");
    }
    for e in &loaded.errors {
        let _ = writeln!(text, "error: {e}");
    }
    let n = loaded.programs.len();
    let _ = writeln!(
        text,
        "{}: ok; {}: {n} program{}",
        path.display(),
        cfg.supervisor.programs_dir.display(),
        if n == 1 { "" } else { "s" }
    );
    let _ = emit(&text);
    if loaded.errors.is_empty() {
        Exit::Ok.into()
    } else {
        eprintln!("gwe: {} problem(s) in {}", loaded.errors.len(), cfg.supervisor.programs_dir.display());
        Exit::Config.into()
    }
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            eprintln!("gwe: {e}");
            Exit::Failure.into()
        }
    }
}

/// Writes a new signing key to `path` (0600) and its public key to `path.pub`.
fn pkg_keygen(path: &std::path::Path) -> Result<(), String> {
    let key = gwe::ota::package::generate_key().map_err(|e| e.to_string())?;
    let public = hex::encode(key.public_key().0);
    gwe::fsio::write_atomic_mode(path, format!("{}\n", hex::encode(key.seed())).as_bytes(), 0o600)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    let pub_path = format!("{}.pub", path.display());
    gwe::fsio::write_atomic(std::path::Path::new(&pub_path), format!("{public}\n").as_bytes())
        .map_err(|e| format!("writing {pub_path}: {e}"))?;
    println!("{public}");
    Ok(())
}

fn read_signing_key(key: &std::path::Path) -> Result<gwe::ota::package::SigningKey, String> {
    let text = std::fs::read_to_string(key).map_err(|e| format!("reading {}: {e}", key.display()))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{} is not a signing key (64 hex digits)", key.display()))?;
    gwe::ota::package::SigningKey::from_seed(bytes)
        .ok_or_else(|| format!("{} is not a valid ed25519 key", key.display()))
}

/// Signs a package: release metadata (FILE.meta) when the target is given, else the old
/// FILE.sig.
fn pkg_sign(file: &std::path::Path, key: &std::path::Path, opts: &gwe::cli::SignOpts) -> Result<(), String> {
    use gwe::ota::release;
    let key = read_signing_key(key)?;
    let (vendor, model) = match (&opts.vendor, &opts.model) {
        (Some(v), Some(m)) => (v.clone(), m.clone()),
        (None, None) => {
            if opts.arch.is_some() || opts.compatible.is_some() || opts.valid_days.is_some() || opts.allow_downgrade {
                return Err("release metadata needs --vendor and --model (the target it is signed for)".into());
            }
            eprintln!(
                "gwe: wrote {}.sig, an old-style signature (its digest only: no name, version or target); give --vendor and --model for release metadata",
                file.display()
            );
            return gwe::ota::package::sign(file, &key).map_err(|e| format!("signing {}: {e}", file.display()));
        }
        _ => return Err("give both --vendor and --model".into()),
    };
    let target = release::Target {
        vendor,
        model,
        arch: opts.arch.clone().unwrap_or_else(|| "*".into()),
        compatible: opts.compatible.clone(),
    };
    let valid = opts.valid_days.unwrap_or(365) * 86_400;
    let meta = release::sign_release(file, &key, target, valid, opts.allow_downgrade)?;
    let path = release::meta_path(file);
    gwe::fsio::write_atomic(&path, meta.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn pkg_build(
    build: &std::path::Path,
    out: &std::path::Path,
    key: Option<&std::path::Path>,
    sign: &gwe::cli::SignOpts,
) -> Result<(), String> {
    let pkg = gwe::ota::build::build(build, out).map_err(|e| e.to_string())?;
    if let Some(key) = key {
        pkg_sign(&pkg, key, sign)?;
    }
    println!("{}", pkg.display());
    Ok(())
}

/// Writes a keys document signed by the root key: the previous one's keys (`from`), plus
/// `add`, minus `revoke` (which stay listed as revoked), one version up.
fn pkg_keys(
    root: &std::path::Path,
    from: Option<&std::path::Path>,
    add: &[String],
    revoke: &[String],
    valid_days: u64,
    out: &std::path::Path,
) -> Result<(), String> {
    use gwe::ota::release;
    let root = read_signing_key(root)?;
    let mut keys = match from {
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            release::read_keys_unchecked(&bytes).map_err(|e| format!("{}: {e}", p.display()))?
        }
        None => release::Keys { version: 0, issued: 0, expires: 0, keys: Vec::new(), revoked: Vec::new() },
    };
    let hex_key = |k: &String| -> Result<String, String> {
        let text = std::fs::read_to_string(k).unwrap_or_else(|_| k.clone());
        gwe::ota::package::parse_public_key(&text)
            .map(|p| hex::encode(p.0))
            .ok_or_else(|| format!("{k}: not a public key (64 hex digits, or a .pub file)"))
    };
    for k in add {
        let k = hex_key(k)?;
        if keys.revoked.contains(&k) {
            return Err(format!("{k} was revoked; a revoked key cannot come back"));
        }
        if !keys.keys.contains(&k) {
            keys.keys.push(k);
        }
    }
    for k in revoke {
        let k = hex_key(k)?;
        keys.keys.retain(|x| *x != k);
        if !keys.revoked.contains(&k) {
            keys.revoked.push(k);
        }
    }
    keys.version += 1;
    keys.issued = release::unix_now();
    keys.expires = keys.issued + valid_days * 86_400;
    gwe::fsio::write_atomic(out, release::sign_keys(&keys, &root).as_bytes())
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!(
        "{}: version {}, {} release keys, {} revoked, expires in {valid_days} days",
        out.display(),
        keys.version,
        keys.keys.len(),
        keys.revoked.len()
    );
    Ok(())
}

fn queue_stats(cfg: &Config, json: bool) -> Result<(), String> {
    use std::fmt::Write;
    let dir = cfg.paths.queue_dir();
    let i =
        queue::inspect(&dir, cfg.queue.max_record, |_, _| {}).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    let disk: u64 = i.segments.iter().map(|s| s.1).sum();
    let slowest = i.acks.iter().map(|a| a.1).min().unwrap_or(0);
    let backlog = i.last_seq.map_or(0, |l| l.saturating_sub(slowest.max(i.first_seq.unwrap_or(1) - 1)));
    let mut out = String::new();
    if json {
        let v = serde_json::json!({
            "dir": dir,
            "segments": i.segments.len(),
            "disk_bytes": disk,
            "records": i.records,
            "first_seq": i.first_seq,
            "last_seq": i.last_seq,
            "backlog": backlog,
            "acks": i.acks.iter().map(|(n, s)| (n.clone(), *s)).collect::<std::collections::BTreeMap<_, _>>(),
            "lost_records": i.counters.lost_records,
            "corrupt_segments": i.counters.corrupt_segments,
            "torn_bytes": i.counters.torn_bytes,
            "problems": i.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        });
        let _ = writeln!(out, "{v}");
    } else {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "queue {}", dir.display());
        let _ = writeln!(out, "  segments        {} ({} bytes)", i.segments.len(), disk);
        let _ = match (i.first_seq, i.last_seq) {
            (Some(a), Some(b)) => writeln!(out, "  records         {} (seq {a}..{b})", i.records),
            _ => writeln!(out, "  records         {}", i.records),
        };
        let _ = writeln!(out, "  backlog         {backlog}");
        for (n, s) in &i.acks {
            let _ = writeln!(out, "  acked by {n:<7} {s}");
        }
        let _ = writeln!(out, "  lost records    {}", i.counters.lost_records);
        let _ = writeln!(out, "  corrupt segs    {}", i.counters.corrupt_segments);
        let _ = writeln!(out, "  torn bytes cut  {}", i.counters.torn_bytes);
        for p in &i.problems {
            let _ = writeln!(out, "  problem: {p}");
        }
    }
    emit(&out)
}

fn queue_dump(cfg: &Config, limit: Option<u64>) -> Result<(), String> {
    use std::io::Write;
    let dir = cfg.paths.queue_dir();
    let mut out = std::io::stdout().lock();
    let mut n = 0u64;
    queue::inspect(&dir, cfg.queue.max_record, |seq, payload| {
        if limit.is_some_and(|l| n >= l) {
            return;
        }
        n += 1;
        let _ = match gwe_wire::point::decode(payload) {
            Ok(p) => {
                writeln!(out, "{seq}\t{}\t{}\t{}", p.ts, p.alias, String::from_utf8_lossy(p.value).escape_default())
            }
            Err(_) => writeln!(out, "{seq}\t-\t-\t{}", String::from_utf8_lossy(payload).escape_default()),
        };
    })
    .map_err(|e| format!("reading {}: {e}", dir.display()))?;
    Ok(())
}

/// `gwe identity`: `vendor,model,serial,key` (the gateway's public key, base64 DER), the
/// line a factory collects from each gateway for the hub's import. Makes the key if there
/// is none yet (as the agent does at its first start with `identity = "certificate"`).
fn show_identity(cfg: &Config) -> Result<(), String> {
    let id = gwe::identity::Identity::resolve(&cfg.device, std::path::Path::new("/sys/class/net"))
        .map_err(|e| e.to_string())?;
    let key = gwe::identity::OwnKey::configured(&cfg.cloud.tpm, &cfg.paths.secrets_dir()).map_err(|e| e.to_string())?;
    println!("{},{},{},{}", id.vendor, id.model, id.serial, key.public_b64());
    Ok(())
}
