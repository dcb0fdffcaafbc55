//! Command line: `gwe [--config PATH] COMMAND`. Parsing only; the work lives in the modules.

use std::path::PathBuf;

use lexopt::prelude::*;

use crate::config::DEFAULT_PATH;

pub const USAGE: &str = "\
usage: gwe [--config PATH] COMMAND

commands:
  run [--foreground|--daemon]   run the agent (foreground logs to stderr, daemon to syslog)
  queue stats [--json]          figures of the queue (read-only, safe while the agent runs)
  queue dump [--limit N]        print the queued records
  ctl status [NAME] [--json]    state of the apps (talks to the running agent)
  ctl start|stop|restart NAME   control one app; waits until it is RUNNING or STOPPED
  ctl tail NAME [BYTES]         the end of an app's log
  app list                      installed app versions (talks to the running agent)
  app install FILE|DIR          install or update from NAME.vVERSION.tar.gz (+ .sig), or the
                                newest package of each app in DIR (a USB stick, say)
  app remove|rollback NAME      remove an app, or go back to its previous version
  pkg keygen PATH               make a signing key (PATH, 0600) and its public key (PATH.pub)
  pkg sign FILE --key PATH --vendor V --model M [--arch A] [--compatible C]
           [--valid-days N] [--allow-downgrade]
                                sign a release: writes FILE.meta (name, version, size, digest
                                and target, signed); without --vendor/--model an old-style
                                FILE.sig (digest only)
  pkg build DIR|FILE [--out DIR] [--key PATH [sign options]]
                                make NAME.vVERSION.tar.gz from DIR/build.json (and sign it)
  pkg keys --root-key PATH [--from FILE] [--add PUB]... [--revoke PUB]... [--valid-days N]
           --out FILE           the keys document: release keys the root key vouches for
  os status                     the operating system's slots and the last update (RAUC)
  os install BUNDLE|URL [--no-reboot]
                                install a RAUC bundle into the other slot, then reboot into
                                it; the agent checks the new system and keeps it or falls back
  check-config                  read the config file and report problems
  check                         check the data partition (queue, apps, state files); read-only
  identity                      this gateway's serial and public key as the hub imports them
                                (vendor,model,serial,key); makes the key at the first call

options:
  --config PATH   config file (default /etc/gwe/gwe.toml)
  --version       print the version
";

#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        daemon: bool,
    },
    QueueStats {
        json: bool,
    },
    QueueDump {
        limit: Option<u64>,
    },
    CheckConfig,
    /// A read-only check of the data partition.
    Check,
    /// A request for the running agent's control socket.
    Ctl {
        request: String,
        json: bool,
    },
    PkgKeygen {
        path: PathBuf,
    },
    PkgSign {
        file: PathBuf,
        key: PathBuf,
        sign: SignOpts,
    },
    PkgBuild {
        build: PathBuf,
        out: PathBuf,
        key: Option<PathBuf>,
        sign: SignOpts,
    },
    PkgKeys {
        root_key: PathBuf,
        from: Option<PathBuf>,
        add: Vec<String>,
        revoke: Vec<String>,
        valid_days: u64,
        out: PathBuf,
    },
    OsStatus,
    /// The gateway's own key, as a line of the hub's import.
    Identity,
    OsInstall {
        bundle: String,
        reboot: bool,
    },
    Version,
    Help,
}

/// What release metadata says besides the package's own name, version, size and digest.
/// Without a vendor and a model, signing writes an old-style `.sig`.
#[derive(Debug, PartialEq, Eq, Default)]
pub struct SignOpts {
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub arch: Option<String>,
    pub compatible: Option<String>,
    pub valid_days: Option<u64>,
    pub allow_downgrade: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Cli {
    pub config: PathBuf,
    pub command: Command,
}

pub fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Cli, lexopt::Error> {
    let mut p = lexopt::Parser::from_args(args);
    let mut config = PathBuf::from(DEFAULT_PATH);
    let mut words: Vec<String> = Vec::new();
    let (mut daemon, mut json, mut limit, mut key, mut out) = (false, false, None, None, None);
    let mut sign = SignOpts::default();
    let mut no_reboot = false;
    let (mut root_key, mut from, mut add, mut revoke) = (None, None, Vec::new(), Vec::new());
    while let Some(arg) = p.next()? {
        match arg {
            Long("config") | Short('c') => config = p.value()?.into(),
            Long("daemon") => daemon = true,
            Long("foreground") => daemon = false,
            Long("json") => json = true,
            Long("limit") => limit = Some(p.value()?.parse()?),
            Long("key") => key = Some(PathBuf::from(p.value()?)),
            Long("out") => out = Some(PathBuf::from(p.value()?)),
            Long("vendor") => sign.vendor = Some(p.value()?.string()?),
            Long("model") => sign.model = Some(p.value()?.string()?),
            Long("arch") => sign.arch = Some(p.value()?.string()?),
            Long("compatible") => sign.compatible = Some(p.value()?.string()?),
            Long("valid-days") => sign.valid_days = Some(p.value()?.parse()?),
            Long("allow-downgrade") => sign.allow_downgrade = true,
            Long("no-reboot") => no_reboot = true,
            Long("root-key") => root_key = Some(PathBuf::from(p.value()?)),
            Long("from") => from = Some(PathBuf::from(p.value()?)),
            Long("add") => add.push(p.value()?.string()?),
            Long("revoke") => revoke.push(p.value()?.string()?),
            Long("version") | Short('V') => return Ok(Cli { config, command: Command::Version }),
            Long("help") | Short('h') => return Ok(Cli { config, command: Command::Help }),
            Value(v) => words.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        ["run"] => Command::Run { daemon },
        ["queue", "stats"] => Command::QueueStats { json },
        ["queue", "dump"] => Command::QueueDump { limit },
        ["check-config"] => Command::CheckConfig,
        ["check"] => Command::Check,
        ["os", "status"] => Command::OsStatus,
        ["identity"] => Command::Identity,
        ["os", "install", bundle] => Command::OsInstall { bundle: bundle.to_string(), reboot: !no_reboot },
        ["app", "list"] => Command::Ctl { request: "app list".into(), json },
        ["app", "install", file] => {
            // The agent resolves the path, so send it absolute.
            let file = std::path::absolute(file).map_err(|e| lexopt::Error::Custom(e.to_string().into()))?;
            Command::Ctl { request: format!("app install {}", file.display()), json }
        }
        ["app", verb @ ("remove" | "rollback"), name] => Command::Ctl { request: format!("app {verb} {name}"), json },
        ["pkg", "build", build] => {
            Command::PkgBuild { build: build.into(), out: out.unwrap_or_else(|| ".".into()), key, sign }
        }
        ["pkg", "keygen", path] => Command::PkgKeygen { path: path.into() },
        ["pkg", "sign", file] => match key {
            Some(key) => Command::PkgSign { file: file.into(), key, sign },
            None => return Err(lexopt::Error::Custom("pkg sign needs --key PATH".into())),
        },
        ["pkg", "keys"] => match (root_key, out) {
            (Some(root_key), Some(out)) => {
                Command::PkgKeys { root_key, from, add, revoke, valid_days: sign.valid_days.unwrap_or(365), out }
            }
            _ => return Err(lexopt::Error::Custom("pkg keys needs --root-key PATH and --out FILE".into())),
        },
        ["ctl", "status", rest @ ..] if rest.len() <= 1 => Command::Ctl { request: words[1..].join(" "), json },
        ["ctl", "start" | "stop" | "restart", _name] => Command::Ctl { request: words[1..].join(" "), json },
        ["ctl", "tail", _name] | ["ctl", "tail", _name, _] => Command::Ctl { request: words[1..].join(" "), json },
        ["help"] | [] => Command::Help,
        other => return Err(lexopt::Error::Custom(format!("unknown command: {}", other.join(" ")).into())),
    };
    Ok(Cli { config, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cli, lexopt::Error> {
        parse(s.split_whitespace().map(Into::into))
    }

    #[test]
    fn commands() {
        assert_eq!(p("run --daemon").unwrap().command, Command::Run { daemon: true });
        let c = p("--config /tmp/x.toml queue stats --json").unwrap();
        assert_eq!((c.config, c.command), (PathBuf::from("/tmp/x.toml"), Command::QueueStats { json: true }));
        assert_eq!(p("queue dump --limit 5").unwrap().command, Command::QueueDump { limit: Some(5) });
        assert!(p("queue explode").is_err());
        assert_eq!(p("check").unwrap().command, Command::Check);
        assert_eq!(p("identity").unwrap().command, Command::Identity);
        assert!(p("check everything").is_err());
        assert_eq!(
            p("ctl restart modbus --json").unwrap().command,
            Command::Ctl { request: "restart modbus".into(), json: true }
        );
        assert!(p("ctl start").is_err());
        assert!(p("run --bogus").is_err());
    }
}
