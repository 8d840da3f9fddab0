//! Embeds the Gherkin suites (`features/`) and the client fixture library
//! (`fixtures/client/`) into the crate, so an installed `runwire` needs no files.

use std::{fmt::Write as _, path::Path};

fn collect(root: &Path, dir: &Path, ext: &str, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(root, &p, ext, out);
        } else if p.extension().is_some_and(|x| x == ext) {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .replace('\\', "/");
            out.push((
                rel,
                p.canonicalize().unwrap_or(p).to_string_lossy().into_owned(),
            ));
        }
    }
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    // `data/` links to the repository's `features/` and `fixtures/client/` (a
    // packaged crate carries the files themselves).
    let data = Path::new(&manifest).join("data");
    let features = data.join("features");
    let fixtures = data.join("fixtures-client");
    println!("cargo:rerun-if-changed={}", features.display());
    println!(
        "cargo:rerun-if-changed={}",
        features.join("server").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        features.join("client").display()
    );
    println!("cargo:rerun-if-changed={}", fixtures.display());
    let mut feats = Vec::new();
    collect(&features, &features, "feature", &mut feats);
    let mut fixts = Vec::new();
    collect(&fixtures, &fixtures, "json", &mut fixts);
    let mut code = String::new();
    for (name, list) in [("FEATURES", &feats), ("FIXTURES", &fixts)] {
        let _ = writeln!(code, "pub(crate) static {name}: &[(&str, &str)] = &[");
        for (rel, abs) in list {
            println!("cargo:rerun-if-changed={abs}");
            let _ = writeln!(code, "    ({rel:?}, include_str!({abs:?})),");
        }
        let _ = writeln!(code, "];");
    }
    let out = std::env::var("OUT_DIR").unwrap_or_default();
    let _ = std::fs::write(Path::new(&out).join("embedded.rs"), code);
}
