//! Shared helpers of the squeal benchmarks (examples run on the real stack).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `squeal` binary next to this example's profile directory (build it first:
/// `cargo build --release -p squeal`).
pub fn squeal_binary() -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    let bin = profile_dir.join("squeal");
    if !bin.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release -p squeal` before the benchmark",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// Writes a squeal config.
pub fn write_config(
    path: &Path,
    port: u16,
    brokers: &str,
    topic: &str,
    checkpoint: &Path,
    rules: &str,
    start_from: &str,
) -> std::io::Result<()> {
    std::fs::write(
        path,
        format!(
            r#"
[source]
url = "mysql://root@127.0.0.1:{port}"
password_env = "SQUEAL_BENCH_DB_PASSWORD"
server_id = 4242
start_from = "{start_from}"

[kafka]
brokers = "{brokers}"
topic = "{topic}"

[checkpoint]
path = "{checkpoint}"
interval_ms = 20

[metrics]
address = "127.0.0.1:0"

{rules}
"#,
            checkpoint = checkpoint.display()
        ),
    )
}

/// Starts `squeal run`.
pub fn spawn_squeal(config: &Path, password: &str, log: &Path) -> Result<Child, BoxError> {
    let out = std::fs::File::create(log)?;
    Ok(Command::new(squeal_binary()?)
        .args(["run", "--config"])
        .arg(config)
        .env("SQUEAL_BENCH_DB_PASSWORD", password)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}

/// Peak RSS (VmHWM) of a live process, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The checkpoint position, if any.
pub fn checkpoint_of(path: &Path) -> Option<(String, u64)> {
    squeal::checkpoint::load(path)
        .ok()
        .flatten()
        .map(|p| (p.file, p.pos))
}

/// Median of a sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
