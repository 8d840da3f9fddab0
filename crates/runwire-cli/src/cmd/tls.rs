//! `runwire tls`: certificates for trying TLS locally (spec §17, `RW-SEC-3`).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

/// TLS helpers.
#[derive(Debug, Subcommand)]
pub(crate) enum TlsCommand {
    /// Write a throwaway certificate authority and a server certificate signed by it
    /// (`ca.pem`, `cert.pem`, `key.pem`), for development and tests: serve with
    /// `runwire serve --tls-cert cert.pem --tls-key key.pem`, trust with `--ca-cert ca.pem`.
    /// Not for production: use certificates from your CA or ACME there.
    DevCert(DevCertArgs),
}

/// Arguments of `runwire tls dev-cert`.
#[derive(Debug, Args)]
pub(crate) struct DevCertArgs {
    /// Directory to write the three files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A DNS name or IP address the server certificate is valid for (repeatable).
    #[arg(long = "name", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
    names: Vec<String>,
    /// Days the certificates stay valid.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

/// Runs `runwire tls`.
pub(crate) fn run(cmd: TlsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TlsCommand::DevCert(a) => dev_cert(&a),
    }
}

fn dev_cert(args: &DevCertArgs) -> anyhow::Result<ExitCode> {
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let certs = runwire_server::dev_certificates(&names, args.days)
        .map_err(|e| anyhow::anyhow!("making the certificates: {e}"))?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let files = [
        ("ca.pem", &certs.ca_pem),
        ("cert.pem", &certs.cert_pem),
        ("key.pem", &certs.key_pem),
    ];
    for (name, _) in &files {
        let path = args.out.join(name);
        if path.exists() && !args.force {
            bail!("{}: exists; pass --force to replace it", path.display());
        }
    }
    for (name, text) in &files {
        let path = args.out.join(name);
        write_private(&path, text, *name == "key.pem")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {dir}/ca.pem, cert.pem, key.pem (valid {days} days for {names})\n  \
         serve: runwire serve --tls-cert {dir}/cert.pem --tls-key {dir}/key.pem\n  \
         trust: --ca-cert {dir}/ca.pem (watch, publish, conform)",
        dir = args.out.display(),
        days = args.days,
        names = args.names.join(", "),
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `text`; a private key is readable by its owner only.
fn write_private(path: &std::path::Path, text: &str, private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    use std::io::Write;
    options.open(path)?.write_all(text.as_bytes())
}
