//! `runwire schema`: schema tools.
//!
//! Exit codes of `diff`, `check` and `validate`: 0 = compatible / valid, 1 = breaking
//! changes / invalid input found, 2 = usage or input error (a missing or malformed
//! schema file, an unknown git ref).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use runwire_schema::{
    compat::{self, Contract},
    config::Config,
    generate,
    report::{self, Format, Report},
    rules::{RULES, Severity},
    tree::{self, GitSource, MemSource, SchemaTree},
    validate::Validators,
};

/// Schema subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Write the JSON Schemas of the current protocol types (the same as `cargo xtask schema`).
    Gen {
        /// Output directory; the version folder (e.g. `v1/`) is created inside it.
        #[arg(long, default_value = "schema")]
        out: PathBuf,
    },
    /// Compare two schema version folders (each with an index.json) in both directions.
    Diff {
        /// The old version folder, e.g. a copy of `schema/v1`.
        old: PathBuf,
        /// The new version folder.
        new: PathBuf,
        #[command(flatten)]
        opts: ReportOpts,
    },
    /// Compare the schemas of the current types with released versions.
    Check {
        /// What to compare with: a version folder, a `schema/` folder (every `v<N>`
        /// inside it), or `git:REF` (every `v<N>` under the schema folder at REF, read
        /// with git). Repeatable. Default: every version folder under `--schema-dir`
        /// other than the one the current types generate.
        #[arg(long, value_name = "DIR|git:REF")]
        against: Vec<String>,
        /// The schema folder of the repository.
        #[arg(long, default_value = "schema")]
        schema_dir: PathBuf,
        /// Use this version folder as "current" instead of generating from the types.
        #[arg(long)]
        current: Option<PathBuf>,
        /// The git repository for `git:REF` (default: the current directory).
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[command(flatten)]
        opts: ReportOpts,
    },
    /// List the compatibility rules.
    Rules {
        /// Output format.
        #[arg(long, value_enum, default_value_t = RulesFormat::Text)]
        format: RulesFormat,
    },
    /// Print the JSON Schema of `diff`/`check --format json` output.
    ReportSchema,
    /// Validate JSON or JSON-lines files of messages, events or HTTP bodies.
    Validate {
        /// Files to validate (JSON lines, one JSON document, or a JSON array); `-` reads
        /// standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Schema version folder name under `--schema-dir` (default: the current major).
        #[arg(long)]
        version: Option<String>,
        /// The schema folder; when the version folder is absent there, the schemas of
        /// the current types are used.
        #[arg(long, default_value = "schema")]
        schema_dir: PathBuf,
        /// Validate every value as this schema (a name from index.json, e.g. `event`,
        /// `client-message`, `http/append-request`); default: detect from each value.
        #[arg(long)]
        kind: Option<String>,
        /// Which contract to validate against.
        #[arg(long, value_enum, default_value_t = ContractArg::Writer)]
        contract: ContractArg,
    },
}

/// Options shared by `diff` and `check`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReportOpts {
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Text)]
    format: FormatArg,
    /// Lowest severity that fails (exit 1); overrides the config file.
    #[arg(long, value_enum)]
    fail_on: Option<FailOn>,
    /// Config file with severity overrides and acknowledged breaks (TOML).
    #[arg(long, env = "RUNWIRE_SCHEMA_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Text,
    Json,
    Junit,
    Github,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOn {
    Error,
    Warning,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum RulesFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ContractArg {
    Writer,
    Reader,
}

pub(crate) fn run(cmd: SchemaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCommand::Gen { out } => {
            let dir = out.join(runwire_protocol::SCHEMA_MAJOR);
            let written = generate::write_dir(&dir, runwire_protocol::SCHEMA_MAJOR)
                .with_context(|| format!("writing schemas to {}", dir.display()))?;
            println!("wrote {} files to {}", written.len(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Diff { old, new, opts } => {
            let o = load_dir(&old)?;
            let n = load_dir(&new)?;
            let findings = compat::compare_trees(&o, &n);
            emit(vec![(o.label, n.label, findings)], &opts)
        }
        SchemaCommand::Check {
            against,
            schema_dir,
            current,
            repo,
            opts,
        } => check(against, &schema_dir, current.as_deref(), &repo, &opts),
        SchemaCommand::Rules { format } => {
            print_rules(format)?;
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::ReportSchema => {
            print!("{}", generate::render(&report::report_schema()));
            Ok(ExitCode::SUCCESS)
        }
        SchemaCommand::Validate {
            files,
            version,
            schema_dir,
            kind,
            contract,
        } => validate(&files, version, &schema_dir, kind, contract),
    }
}

fn load_dir(dir: &Path) -> anyhow::Result<SchemaTree> {
    if !dir.join("index.json").exists() && dir.is_dir() {
        let versions = tree::version_dirs(tree::dir_names(dir)?);
        if !versions.is_empty() {
            bail!(
                "{}: no index.json; pass a version folder such as {}",
                dir.display(),
                dir.join(&versions[0]).display()
            );
        }
    }
    Ok(SchemaTree::from_dir(dir)?)
}

fn current_tree(current: Option<&Path>) -> anyhow::Result<SchemaTree> {
    if let Some(dir) = current {
        return load_dir(dir);
    }
    let major = runwire_protocol::SCHEMA_MAJOR;
    let files = generate::generate_files(major)
        .into_iter()
        .map(|(k, v)| (k, generate::render(&v).into_bytes()))
        .collect();
    let mut src = MemSource {
        name: format!("current types ({major})"),
        files,
    };
    Ok(SchemaTree::load(
        &mut src,
        format!("current types ({major})"),
    )?)
}

fn check(
    against: Vec<String>,
    schema_dir: &Path,
    current: Option<&Path>,
    repo: &Path,
    opts: &ReportOpts,
) -> anyhow::Result<ExitCode> {
    let cur = current_tree(current)?;
    let major = runwire_protocol::SCHEMA_MAJOR;
    let mut olds: Vec<SchemaTree> = Vec::new();
    if against.is_empty() {
        if schema_dir.is_dir() {
            for v in tree::version_dirs(tree::dir_names(schema_dir)?) {
                if v != major {
                    olds.push(load_dir(&schema_dir.join(v))?);
                }
            }
        }
        if olds.is_empty() {
            eprintln!(
                "note: no released version under {} other than {major}; nothing to compare (use --against git:REF to compare with a branch)",
                schema_dir.display()
            );
        }
    }
    for a in &against {
        if let Some(rev) = a.strip_prefix("git:") {
            let prefix = schema_dir.to_string_lossy().trim_matches('/').to_string();
            let versions =
                tree::version_dirs(GitSource::list_dirs(repo, rev, &prefix).or_else(|e| {
                    // Distinguish an unknown ref from a ref without a schema folder.
                    GitSource::open(repo, rev, &prefix)?;
                    Err(e)
                })?);
            if versions.is_empty() {
                bail!("git:{rev}: no version folder (v<N>) under {prefix}/");
            }
            for v in versions {
                let mut src = GitSource::open(repo, rev, &format!("{prefix}/{v}"))?;
                olds.push(SchemaTree::load(
                    &mut src,
                    format!("git:{rev}:{prefix}/{v}"),
                )?);
            }
        } else {
            let dir = PathBuf::from(a);
            if dir.join("index.json").exists() {
                olds.push(load_dir(&dir)?);
            } else {
                let versions = tree::version_dirs(
                    tree::dir_names(&dir).with_context(|| format!("--against {a}"))?,
                );
                if versions.is_empty() {
                    bail!(
                        "{a}: neither a version folder (index.json) nor a folder of v<N> folders"
                    );
                }
                for v in versions {
                    olds.push(load_dir(&dir.join(v))?);
                }
            }
        }
    }
    let comparisons = olds
        .iter()
        .map(|o| {
            (
                o.label.clone(),
                cur.label.clone(),
                compat::compare_trees(o, &cur),
            )
        })
        .collect();
    emit(comparisons, opts)
}

fn emit(
    comparisons: Vec<(String, String, Vec<compat::Finding>)>,
    opts: &ReportOpts,
) -> anyhow::Result<ExitCode> {
    let cfg = match &opts.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let fail_on = opts.fail_on.map(|f| match f {
        FailOn::Error => Severity::Error,
        FailOn::Warning => Severity::Warning,
    });
    let report = Report::build(comparisons, &cfg, fail_on);
    let format = match opts.format {
        FormatArg::Text => Format::Text,
        FormatArg::Json => Format::Json,
        FormatArg::Junit => Format::Junit,
        FormatArg::Github => Format::Github,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(report.render(format).as_bytes())?;
    out.flush()?;
    Ok(if report.compatible {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_rules(format: RulesFormat) -> anyhow::Result<()> {
    match format {
        RulesFormat::Json => {
            let v = serde_json::json!({
                "rules_version": report::RULES_VERSION,
                "rules": RULES,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        RulesFormat::Text => {
            for r in RULES {
                println!("{:<30} D1 {:<7} D2 {:<7} {}", r.id, r.d1, r.d2, r.purpose);
                if !r.refinement.is_empty() {
                    println!("{:<30} refined: {}", "", r.refinement);
                }
                println!("{:<30} example: {}", "", r.example);
            }
        }
    }
    Ok(())
}

fn validate(
    files: &[PathBuf],
    version: Option<String>,
    schema_dir: &Path,
    kind: Option<String>,
    contract: ContractArg,
) -> anyhow::Result<ExitCode> {
    let version = version.unwrap_or_else(|| runwire_protocol::SCHEMA_MAJOR.to_string());
    let dir = schema_dir.join(&version);
    let tree = if dir.join("index.json").exists() {
        load_dir(&dir)?
    } else if version == runwire_protocol::SCHEMA_MAJOR {
        current_tree(None)?
    } else {
        bail!("{}: no such schema version folder", dir.display());
    };
    let contract = match contract {
        ContractArg::Writer => Contract::Writer,
        ContractArg::Reader => Contract::Reader,
    };
    let validators = Validators::new(&tree, contract)?;
    if let Some(k) = &kind {
        validators.check_kind(k).map_err(|e| {
            anyhow::anyhow!("{e}: {}", validators.kinds().collect::<Vec<_>>().join(", "))
        })?;
    }
    let mut total = runwire_schema::validate::Stats::default();
    let mut out = std::io::stdout().lock();
    for f in files {
        let text = if f.as_os_str() == "-" {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                .context("reading standard input")?;
            t
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        };
        let stats = validators.validate_text(&text, kind.as_deref(), |fail| {
            let _ = writeln!(
                out,
                "{}:{}: {}{}: {}",
                f.display(),
                fail.line,
                fail.kind.map(|k| format!("{k} ")).unwrap_or_default(),
                if fail.pointer.is_empty() {
                    "(root)".to_string()
                } else {
                    fail.pointer
                },
                fail.reason
            );
        });
        total.values += stats.values;
        total.invalid += stats.invalid;
    }
    eprintln!(
        "{} value(s) checked, {} invalid ({} schemas {})",
        total.values,
        total.invalid,
        version,
        match contract {
            Contract::Writer => "writer",
            Contract::Reader => "reader",
        }
    );
    Ok(if total.invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
