//! The commands of README.md and docs/*.md are run, so that the documentation cannot
//! drift from the tool.
//!
//! Every shell block is marked either ```` ```sh runnable ```` (run here) or
//! ```` ```sh manual ```` (it needs something CI does not have: a real server of
//! yours, an adapter of yours, hours, a remote). A runnable block runs with `bash -euo
//! pipefail` in a fresh temporary directory that links the repository's data folders
//! (fixtures, examples, features, conformance, schema, spec), with the freshly built
//! `runwire` first on the PATH; it must exit 0 within two minutes. Everything it
//! started is stopped afterwards (its process group).

use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// One shell block of a Markdown file.
#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    runnable: bool,
    code: String,
}

/// Every ```` ```sh ```` block of `path`, or an error naming a block that is marked
/// neither runnable nor manual.
fn blocks(path: &Path, name: &str) -> Result<Vec<Block>, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(b) = &mut open {
            if line.trim_start().starts_with("```") {
                out.push(open.take().unwrap());
            } else {
                b.code.push_str(line);
                b.code.push('\n');
            }
            continue;
        }
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let mark = words.next();
        let runnable = match (lang, mark) {
            ("sh" | "bash" | "shell", Some("runnable")) => true,
            ("sh" | "bash" | "shell", Some("manual")) => false,
            ("sh" | "bash" | "shell", _) => {
                return Err(format!(
                    "{name}:{}: a shell block must be marked `sh runnable` (run by this test) or `sh manual`",
                    i + 1
                ));
            }
            _ => false,
        };
        let block = Block {
            file: name.to_owned(),
            line: i + 1,
            runnable,
            code: String::new(),
        };
        if lang.is_empty() || !["sh", "bash", "shell"].contains(&lang) {
            // Another language: skip to its end.
            open = Some(Block {
                runnable: false,
                ..block
            });
            continue;
        }
        open = Some(block);
    }
    Ok(out)
}

fn all_blocks() -> Vec<Block> {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        let name = f.strip_prefix(&root).unwrap().display().to_string();
        match blocks(&f, &name) {
            Ok(b) => out.extend(b.into_iter().filter(|b| !b.code.is_empty())),
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    out
}

/// Runs one block; `Err` carries what it printed.
fn run(block: &Block) -> Result<(), String> {
    // The examples use the documented default address; another server there would
    // answer in place of the block's own.
    if block.code.contains("7070") && std::net::TcpListener::bind("127.0.0.1:7070").is_err() {
        return Err(format!(
            "{}:{}: 127.0.0.1:7070 is in use; the documented examples need it free",
            block.file, block.line
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("runwire-doc-")
        .tempdir()
        .unwrap();
    let root = repo();
    for d in [
        "fixtures",
        "examples",
        "features",
        "conformance",
        "schema",
        "spec",
        "bench",
    ] {
        std::os::unix::fs::symlink(root.join(d), dir.path().join(d)).unwrap();
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_runwire")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = dir.path().join("block.sh");
    std::fs::write(&script, &block.code).unwrap();
    let out_path = dir.path().join("block.out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail"])
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("RUNWIRE_URL")
        .env_remove("RUNWIRE_HTTP_URL")
        .stdin(Stdio::null())
        .stdout(out_file.try_clone().unwrap())
        .stderr(out_file)
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = child.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Whatever the block left running (a server it forgot to stop) ends here.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let mut printed = String::new();
    std::fs::File::open(&out_path)
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    let where_ = format!("{}:{}", block.file, block.line);
    match status {
        Some(s) if s.success() => {
            let left: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("runwire.db"))
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{where_}: left {left:?} behind\n{printed}"))
            }
        }
        Some(s) => Err(format!(
            "{where_}: {s}\n{}\n--- output:\n{printed}",
            block.code
        )),
        None => Err(format!(
            "{where_}: still running after 120 s\n{}\n--- output:\n{printed}",
            block.code
        )),
    }
}

/// Every runnable block of README.md and docs/ exits 0 against the built binary.
#[test]
fn every_runnable_block_of_the_docs_runs() {
    let blocks = all_blocks();
    let runnable: Vec<&Block> = blocks.iter().filter(|b| b.runnable).collect();
    assert!(
        runnable.iter().any(|b| b.file == "README.md"),
        "the README's end-to-end example is runnable"
    );
    let mut failures = Vec::new();
    for b in &runnable {
        eprintln!("running {}:{}", b.file, b.line);
        if let Err(e) = run(b) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The marker check itself: an unmarked block is refused, marked ones are read.
#[test]
fn an_unmarked_shell_block_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("x.md");
    std::fs::write(&md, "text\n```sh\nls\n```\n").unwrap();
    let e = blocks(&md, "x.md").unwrap_err();
    assert!(e.contains("x.md:2"), "{e}");
    std::fs::write(
        &md,
        "```sh runnable\ntrue\n```\n```json\n{}\n```\n```sh manual\nrm -rf /\n```\n",
    )
    .unwrap();
    let b = blocks(&md, "x.md").unwrap();
    let kinds: Vec<(usize, bool)> = b
        .iter()
        .filter(|b| !b.code.is_empty())
        .map(|b| (b.line, b.runnable))
        .collect();
    assert_eq!(kinds, vec![(1, true), (4, false), (7, false)]);
}

/// `runwire completions SHELL` prints a script for that shell; every `--help` says
/// where the documentation is.
#[test]
fn completions_and_help_links() {
    for (shell, marker) in [
        ("bash", "_runwire()"),
        ("zsh", "#compdef runwire"),
        ("fish", "complete -c runwire"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_runwire"))
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("watch") && script.contains("--tail"),
            "{shell}"
        );
    }
    for args in [
        &["--help"][..],
        &["watch", "--help"],
        &["publish", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_runwire"))
            .args(args)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("Documentation: https://") && help.contains("docs/"),
            "{args:?}: {help}"
        );
    }
}

/// docs/fixtures.md states how many fixtures the library holds.
#[test]
fn the_fixture_count_in_the_docs_is_right() {
    let n = std::fs::read_dir(repo().join("fixtures/client"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    let doc = std::fs::read_to_string(repo().join("docs/fixtures.md")).unwrap();
    assert!(
        doc.contains(&format!("`fixtures/client/` ({n} fixtures)")),
        "docs/fixtures.md must say the library holds {n} fixtures"
    );
}
