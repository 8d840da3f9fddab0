//! Schema trees: a version folder (`schema/v1/`) with its `index.json` manifest, read
//! from a directory, from a git ref (with `git cat-file`, no clone), or from memory.

use std::{
    collections::BTreeMap,
    fmt,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who writes a schema's messages and who reads them (the `direction` of an
/// `index.json` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// The server writes; clients and producers read (server messages, events, HTTP
    /// responses).
    ServerToClient,
    /// Clients and producers write; the server reads (client messages, HTTP requests).
    ClientToServer,
}

impl Direction {
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ServerToClient => "server-to-client",
            Direction::ClientToServer => "client-to-server",
        }
    }

    /// (writer party, reader party).
    pub fn parties(self) -> (&'static str, &'static str) {
        match self {
            Direction::ServerToClient => ("server", "client"),
            Direction::ClientToServer => ("client", "server"),
        }
    }
}

/// One entry of `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The schema name, e.g. `server-message` or `events/run.status`.
    pub name: String,
    /// Who writes it.
    pub direction: Direction,
    /// The writer schema file, relative to the version folder.
    pub writer: String,
    /// The reader schema file, relative to the version folder.
    pub reader: String,
}

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The version folder name, e.g. `v1`.
    pub version: String,
    /// Every schema of the version.
    pub schemas: Vec<IndexEntry>,
}

/// A loaded schema tree.
#[derive(Debug, Clone)]
pub struct SchemaTree {
    /// Where it came from (a path, `git:REF:path`, or a label).
    pub label: String,
    /// The manifest.
    pub index: Index,
    /// Parsed schema files by path relative to the version folder.
    pub files: BTreeMap<String, Value>,
}

/// Errors reading a schema tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is missing.
    #[error("{path}: file not found")]
    Missing {
        /// The file.
        path: String,
    },
    /// A file is not valid JSON, or `index.json` has the wrong shape.
    #[error("{path}: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A git command failed (unknown ref, not a repository).
    #[error("git: {0}")]
    Git(String),
}

/// Somewhere files of a version folder can be read from.
pub trait Source {
    /// Reads one file (path relative to the version folder); `Ok(None)` when absent.
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, TreeError>;
    /// A label for `rel`, used in error messages and reports.
    fn label(&self, rel: &str) -> String;
}

/// A directory on disk.
#[derive(Debug, Clone)]
pub struct DirSource {
    /// The version folder.
    pub dir: PathBuf,
}

impl Source for DirSource {
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let p = self.dir.join(rel);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TreeError::Io {
                path: p.display().to_string(),
                source,
            }),
        }
    }
    fn label(&self, rel: &str) -> String {
        self.dir.join(rel).display().to_string()
    }
}

/// Files held in memory (the output of the generator).
#[derive(Debug, Clone, Default)]
pub struct MemSource {
    /// A label for the whole tree.
    pub name: String,
    /// File contents by relative path.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Source for MemSource {
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, TreeError> {
        Ok(self.files.get(rel).cloned())
    }
    fn label(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name)
    }
}

/// A folder at a git revision, read through one `git cat-file --batch` process.
pub struct GitSource {
    rev: String,
    prefix: String,
    child: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl fmt::Debug for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitSource({}:{})", self.rev, self.prefix)
    }
}

impl GitSource {
    /// Opens `rev:prefix` in the repository that contains `repo_dir`. Fails with a
    /// clear message when the ref does not exist.
    pub fn open(repo_dir: &Path, rev: &str, prefix: &str) -> Result<Self, TreeError> {
        if rev.starts_with('-') || rev.contains(['\n', ' ']) {
            return Err(TreeError::Git(format!("invalid ref {rev:?}")));
        }
        let out = Command::new("git")
            .arg("-C")
            .arg(repo_dir)
            .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .output()
            .map_err(|e| TreeError::Git(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(TreeError::Git(format!(
                "ref {rev:?} does not exist in {} (in a shallow CI clone, fetch it first: git fetch --depth=1 origin {rev})",
                repo_dir.display()
            )));
        }
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut child = Command::new("git")
            .arg("-C")
            .arg(repo_dir)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TreeError::Git(format!("cannot run git cat-file: {e}")))?;
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Self {
            rev: commit,
            prefix: prefix.trim_matches('/').to_string(),
            child,
            stdout,
        })
    }

    /// Lists the sub-folders of `rev:prefix` (e.g. the version folders of `schema/`).
    pub fn list_dirs(repo_dir: &Path, rev: &str, prefix: &str) -> Result<Vec<String>, TreeError> {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo_dir)
            .args(["ls-tree", "--name-only", "-d", "--end-of-options"])
            .arg(format!("{rev}:{}", prefix.trim_matches('/')))
            .output()
            .map_err(|e| TreeError::Git(format!("cannot run git: {e}")))?;
        if !out.status.success() {
            return Err(TreeError::Git(format!(
                "{rev}:{prefix}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}

impl Drop for GitSource {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Source for GitSource {
    fn read(&mut self, rel: &str) -> Result<Option<Vec<u8>>, TreeError> {
        let spec = format!("{}:{}/{}\n", self.rev, self.prefix, rel);
        let err = |e: std::io::Error| TreeError::Git(format!("cat-file: {e}"));
        let stdin = self
            .child
            .stdin
            .as_mut()
            .ok_or_else(|| TreeError::Git("cat-file closed".into()))?;
        stdin.write_all(spec.as_bytes()).map_err(err)?;
        stdin.flush().map_err(err)?;
        let mut header = String::new();
        self.stdout.read_line(&mut header).map_err(err)?;
        if header.trim_end().ends_with(" missing") || header.is_empty() {
            return Ok(None);
        }
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| TreeError::Git(format!("unexpected cat-file header {header:?}")))?;
        if header.split_whitespace().nth(1) != Some("blob") {
            let mut skip = vec![0; size + 1];
            self.stdout.read_exact(&mut skip).map_err(err)?;
            return Ok(None);
        }
        let mut buf = vec![0; size + 1];
        self.stdout.read_exact(&mut buf).map_err(err)?;
        buf.pop();
        Ok(Some(buf))
    }
    fn label(&self, rel: &str) -> String {
        format!(
            "git:{}:{}/{rel}",
            &self.rev[..self.rev.len().min(12)],
            self.prefix
        )
    }
}

impl SchemaTree {
    /// Loads `index.json` and every file it names.
    pub fn load(src: &mut dyn Source, label: impl Into<String>) -> Result<Self, TreeError> {
        let ipath = src.label("index.json");
        let bytes = src.read("index.json")?.ok_or(TreeError::Missing {
            path: ipath.clone(),
        })?;
        let index: Index = serde_json::from_slice(&bytes).map_err(|e| TreeError::Malformed {
            path: ipath.clone(),
            message: e.to_string(),
        })?;
        let mut names = std::collections::BTreeSet::new();
        let mut files = BTreeMap::new();
        for e in &index.schemas {
            if !names.insert(e.name.clone()) {
                return Err(TreeError::Malformed {
                    path: ipath,
                    message: format!("schema {:?} is listed twice", e.name),
                });
            }
            for rel in [&e.writer, &e.reader] {
                if rel.split('/').any(|p| p == ".." || p.is_empty()) || rel.starts_with('/') {
                    return Err(TreeError::Malformed {
                        path: ipath,
                        message: format!("schema file path {rel:?} must stay inside the folder"),
                    });
                }
                if files.contains_key(rel.as_str()) {
                    continue;
                }
                let p = src.label(rel);
                let b = src
                    .read(rel)?
                    .ok_or(TreeError::Missing { path: p.clone() })?;
                let v: Value = serde_json::from_slice(&b).map_err(|e| TreeError::Malformed {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
                if !(v.is_object() || v.is_boolean()) {
                    return Err(TreeError::Malformed {
                        path: p,
                        message: "a schema must be a JSON object or boolean".into(),
                    });
                }
                files.insert(rel.clone(), v);
            }
        }
        Ok(Self {
            label: label.into(),
            index,
            files,
        })
    }

    /// Loads a version folder from disk.
    pub fn from_dir(dir: &Path) -> Result<Self, TreeError> {
        let mut src = DirSource {
            dir: dir.to_path_buf(),
        };
        Self::load(&mut src, dir.display().to_string())
    }

    /// The entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&IndexEntry> {
        self.index.schemas.iter().find(|e| e.name == name)
    }
}

/// Lists the version folders (`v<N>`) of a `schema/` directory, sorted by number.
pub fn version_dirs(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<(u64, String)> = names
        .into_iter()
        .filter_map(|n| {
            let num = n.strip_prefix('v')?.parse::<u64>().ok()?;
            Some((num, n))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Reads a directory's entries as names (for [`version_dirs`]).
pub fn dir_names(dir: &Path) -> Result<Vec<String>, TreeError> {
    let rd = std::fs::read_dir(dir).map_err(|source| TreeError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}
