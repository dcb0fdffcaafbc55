//! `gwe pkg build DIR`: makes `NAME.vVERSION.tar.gz` from a build file, the original's JSON
//! (`docs/ota-format.md`, "Making and signing a package"):
//!
//! ```json
//! {"name": "sensor", "version": "1.4.2", "includes": ["install.sh", "supervisor.conf", "bin/"],
//!  "excludes": ["*.pyc", "tests"], "pre_build_cmds": ["make"], "post_build_cmds": []}
//! ```
//! Commands run with `/bin/sh -c` in the build directory; `post_build_cmds` see the package
//! path in `GWE_PACKAGE`. Entries are sorted and carry no build-machine owner or time, so
//! the same sources give the same package bytes.

use std::fmt;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Deserialize;

use super::package::PackageName;

pub const BUILD_FILE: &str = "build.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildFile {
    pub name: String,
    pub version: String,
    #[serde(default = "everything")]
    pub includes: Vec<String>,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub pre_build_cmds: Vec<String>,
    #[serde(default)]
    pub post_build_cmds: Vec<String>,
}

fn everything() -> Vec<String> {
    vec![".".into()]
}

/// Why a package could not be built; each names the file, entry or command.
#[derive(Debug)]
pub enum BuildError {
    BuildFile(PathBuf, String),
    /// An include or exclude that is absolute or leaves the directory.
    BadPath(String),
    Missing(String),
    /// `install.sh` is missing or does not start with `#!/bin/sh`.
    InstallScript(String),
    Command(String, String),
    Io(String, std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BuildFile(p, e) => write!(f, "build file {}: {e}", p.display()),
            Self::BadPath(p) => write!(f, "{p:?} must be a relative path inside the build directory"),
            Self::Missing(p) => write!(f, "include {p:?} does not exist"),
            Self::InstallScript(why) => write!(f, "install.sh {why}"),
            Self::Command(c, why) => write!(f, "build command {c:?} {why}"),
            Self::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for BuildError {}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let what = what.into();
    move |e| BuildError::Io(what, e)
}

fn run_all(cmds: &[String], dir: &Path, env: &[(&str, &Path)]) -> Result<(), BuildError> {
    for c in cmds {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(c).current_dir(dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let st = cmd.status().map_err(|e| BuildError::Command(c.clone(), format!("could not run: {e}")))?;
        if !st.success() {
            return Err(BuildError::Command(c.clone(), format!("failed ({st})")));
        }
    }
    Ok(())
}

fn relative(p: &str) -> Result<PathBuf, BuildError> {
    let path = Path::new(p);
    if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(BuildError::BadPath(p.to_string()));
    }
    Ok(path.components().filter(|c| matches!(c, Component::Normal(_))).collect())
}

/// Files (and symlinks) under `rel` in `root`, recursively, skipping the excluded.
fn collect(root: &Path, rel: &Path, excl: &[glob::Pattern], out: &mut Vec<PathBuf>) -> Result<(), BuildError> {
    let shown = rel.display().to_string();
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !rel.as_os_str().is_empty() && excl.iter().any(|p| p.matches(&shown) || p.matches(&name)) {
        return Ok(());
    }
    let full = root.join(rel);
    let meta = std::fs::symlink_metadata(&full).map_err(|_| BuildError::Missing(shown.clone()))?;
    if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&full)
            .map_err(io(format!("reading {}", full.display())))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for n in names {
            collect(root, &rel.join(n), excl, out)?;
        }
    } else {
        out.push(rel.to_path_buf());
    }
    Ok(())
}

/// Builds the package described by `build_file` (or `DIR/build.json`) into `out_dir`;
/// returns its path.
pub fn build(build_file: &Path, out_dir: &Path) -> Result<PathBuf, BuildError> {
    let (file, dir) = if build_file.is_dir() {
        (build_file.join(BUILD_FILE), build_file.to_path_buf())
    } else {
        (build_file.to_path_buf(), build_file.parent().unwrap_or(Path::new(".")).to_path_buf())
    };
    let text = std::fs::read_to_string(&file).map_err(|e| BuildError::BuildFile(file.clone(), e.to_string()))?;
    let bf: BuildFile = serde_json::from_str(&text).map_err(|e| BuildError::BuildFile(file.clone(), e.to_string()))?;
    let pkg_name = format!("{}.v{}.tar.gz", bf.name, bf.version);
    PackageName::parse(&pkg_name).map_err(|e| BuildError::BuildFile(file.clone(), e.to_string()))?;
    let mut excl = Vec::new();
    for e in &bf.excludes {
        excl.push(
            glob::Pattern::new(e)
                .map_err(|err| BuildError::BuildFile(file.clone(), format!("exclude {e:?}: {err}")))?,
        );
    }
    run_all(&bf.pre_build_cmds, &dir, &[])?;
    let script = std::fs::read(dir.join("install.sh")).map_err(|_| BuildError::InstallScript("is missing".into()))?;
    if !script.starts_with(b"#!/bin/sh") {
        return Err(BuildError::InstallScript("must start with #!/bin/sh".into()));
    }
    let out_dir = std::path::absolute(out_dir).map_err(io("the output directory"))?;
    let mut files = Vec::new();
    for inc in &bf.includes {
        collect(&dir, &relative(inc)?, &excl, &mut files)?;
    }
    // Never the build file itself or a package this build made before.
    files.retain(|f| dir.join(f) != file && dir.join(f) != out_dir.join(&pkg_name));
    files.sort();
    files.dedup();
    if !files.iter().any(|f| f == Path::new("install.sh")) {
        files.insert(0, "install.sh".into());
    }
    let tmp = out_dir.join(format!(".{pkg_name}.gwe-tmp"));
    let out = out_dir.join(&pkg_name);
    let f = std::fs::File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let mut tar = tar::Builder::new(GzEncoder::new(f, Compression::best()));
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    for rel in &files {
        let full = dir.join(rel);
        if rel == Path::new("install.sh") {
            let mut h = tar::Header::new_gnu();
            h.set_size(script.len() as u64);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mtime(0);
            tar.append_data(&mut h, rel, &script[..]).map_err(io("writing install.sh"))?;
        } else {
            tar.append_path_with_name(&full, rel).map_err(io(format!("adding {}", rel.display())))?;
        }
    }
    let gz = tar.into_inner().map_err(io(format!("writing {}", tmp.display())))?;
    let mut f = gz.finish().map_err(io(format!("writing {}", tmp.display())))?;
    f.flush().and_then(|()| f.sync_all()).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &out).map_err(io(format!("renaming to {}", out.display())))?;
    run_all(&bf.post_build_cmds, &dir, &[("GWE_PACKAGE", &out)])?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::extract::{extract, Limits};

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn builds_what_the_build_file_says() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        write(&src.join("install.sh"), "#!/bin/sh\necho hi\n");
        write(&src.join("supervisor.conf"), "[supervisord]\ncommand=./bin/run\n");
        write(&src.join("bin/run"), "#!/bin/sh\n");
        write(&src.join("bin/cache.pyc"), "x");
        write(&src.join("tests/t.sh"), "x");
        write(
            &src.join("build.json"),
            r#"{"name":"sensor","version":"1.4.2","excludes":["*.pyc","tests"],
                "pre_build_cmds":["echo made > generated.txt"],"post_build_cmds":["cp \"$GWE_PACKAGE\" copy.tgz"]}"#,
        );
        let out = build(&src, d.path()).unwrap();
        assert_eq!(out, d.path().join("sensor.v1.4.2.tar.gz"));
        assert!(src.join("copy.tgz").exists(), "post-build commands see GWE_PACKAGE");
        let x = d.path().join("x");
        extract(&out, &x, Limits::default()).unwrap();
        let mut got: Vec<String> = Vec::new();
        let mut stack = vec![x.clone()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    got.push(e.path().strip_prefix(&x).unwrap().display().to_string());
                }
            }
        }
        got.sort();
        assert_eq!(got, ["bin/run", "generated.txt", "install.sh", "supervisor.conf"]);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(x.join("install.sh")).unwrap().permissions());
        assert_eq!(mode & 0o111, 0o111, "install.sh is executable");
        // The same sources make the same bytes.
        let first = std::fs::read(&out).unwrap();
        std::fs::remove_file(src.join("copy.tgz")).unwrap();
        assert_eq!(std::fs::read(build(&src, d.path()).unwrap()).unwrap(), first);
    }

    #[test]
    fn refusals_name_the_problem() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path();
        write(&src.join("install.sh"), "#!/bin/bash\n");
        let case = |json: &str| {
            write(&src.join("build.json"), json);
            build(src, src).unwrap_err().to_string()
        };
        assert!(case(r#"{"name":"a","version":"1"}"#).contains("#!/bin/sh"));
        write(&src.join("install.sh"), "#!/bin/sh\n");
        assert!(case(r#"{"name":"a/b","version":"1"}"#).contains("build file"));
        assert!(case(r#"{"name":"a","version":"1","includes":["../etc"]}"#).contains("relative path"));
        assert!(case(r#"{"name":"a","version":"1","includes":["nope"]}"#).contains("\"nope\" does not exist"));
        assert!(case(r#"{"name":"a","version":"1","pre_build_cmds":["exit 3"]}"#).contains("\"exit 3\" failed"));
        assert!(case(r#"{"name":"a","version":"1","extra":1}"#).contains("unknown field"));
    }
}
