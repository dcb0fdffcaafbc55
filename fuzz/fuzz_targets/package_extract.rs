//! Arbitrary bytes as an app package: the extractor must refuse or unpack, never panic,
//! and never write outside its destination. Half the inputs are wrapped in gzip here, so
//! the tar reader behind the gzip layer is reached as often as the gzip decoder.
#![no_main]

use std::io::Write;
use std::path::Path;

use gwe::ota::extract::{extract, Limits};
use libfuzzer_sys::fuzz_target;

/// Every path under `dir`, without following symlinks.
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile::Builder::new().prefix("gwe-fuzz").tempdir_in(base).expect("a temp dir");
    let pkg = dir.path().join("app.v1.tar.gz");
    let bytes = if mode & 1 == 1 {
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(rest).expect("in memory");
        z.finish().expect("in memory")
    } else {
        rest.to_vec()
    };
    std::fs::write(&pkg, bytes).expect("writing the input");
    let dest = dir.path().join("out");
    std::fs::create_dir(&dest).expect("the destination");
    let _ = extract(&pkg, &dest, Limits { max_bytes: 1 << 20, max_entries: 64 });
    // Whatever happened, nothing was written beside the package and the destination.
    let mut top: Vec<_> = std::fs::read_dir(dir.path()).expect("listing").flatten().map(|e| e.file_name()).collect();
    top.sort();
    assert_eq!(top, ["app.v1.tar.gz", "out"], "the extractor wrote outside its destination");
    // No symlink it made points outside the destination.
    let mut all = Vec::new();
    walk(&dest, &mut all);
    for p in all {
        if let Ok(target) = std::fs::read_link(&p) {
            let resolved = p.parent().expect("under dest").join(&target);
            let mut depth = 0i32;
            for c in resolved.strip_prefix(&dest).expect("under dest").components() {
                match c {
                    std::path::Component::ParentDir => depth -= 1,
                    std::path::Component::Normal(_) => depth += 1,
                    _ => depth = -100,
                }
                assert!(depth >= 0, "{} -> {} leaves the package", p.display(), target.display());
            }
        }
    }
});
