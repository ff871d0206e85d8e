//! `mcbench`: runs the same `mcload` workload against cache-node and Debian's memcached, side by side in one
//! run, and prints medians and ratios (ours / memcached).
//!
//! Both servers get the same worker threads (`--server-threads`, memcached `-t`), the same memory (`-m`) and
//! a free loopback port. Rounds alternate which server goes first, to spread machine noise evenly. The load
//! generator is the separate `mcload` binary (next to this one), started as a child process per run.
//!
//! Build and run: `cargo build --release -p cache-node && target/release/mcbench`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

/// Side-by-side throughput/latency benchmark: cache-node vs memcached.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// memcached binary.
    #[arg(long, default_value = "/usr/bin/memcached")]
    memcached: PathBuf,
    /// Worker threads for both servers.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Memory budget for both servers, MB.
    #[arg(long, default_value_t = 256)]
    memory_mb: usize,
    /// Rounds (each runs both servers once).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 8.0)]
    duration_secs: f64,
    /// Connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Load generator threads.
    #[arg(long, default_value_t = 2)]
    load_threads: usize,
    /// Distinct keys (prepopulated).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Value size.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Key size.
    #[arg(long, default_value_t = 32)]
    key_size: usize,
}

struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("server on {addr} did not come up"))
}

fn start(
    name: &'static str,
    mut cmd: Command,
    port: u16,
) -> Result<Server, Box<dyn std::error::Error>> {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let server = Server { name, child, addr };
    wait_ready(addr)?;
    Ok(server)
}

#[derive(Debug, Clone, Copy)]
struct Run {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    /// Server CPU time (user + system) per operation, in microseconds: an efficiency figure that a noisy,
    /// shared machine disturbs much less than throughput.
    cpu_us_per_op: f64,
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after the ')'.
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(f64::NAN);
    ticks / 100.0
}

fn run_load(
    mcload: &Path,
    args: &Args,
    server: &Server,
    prepopulate: bool,
) -> Result<Run, Box<dyn std::error::Error>> {
    let addr = server.addr;
    let cpu_before = cpu_secs(server.child.id());
    let mut cmd = Command::new(mcload);
    cmd.arg("--addr")
        .arg(addr.to_string())
        .arg("--connections")
        .arg(args.connections.to_string())
        .arg("--threads")
        .arg(args.load_threads.to_string())
        .arg("--duration-secs")
        .arg(args.duration_secs.to_string())
        .arg("--keys")
        .arg(args.keys.to_string())
        .arg("--key-size")
        .arg(args.key_size.to_string())
        .arg("--value-size")
        .arg(args.value_size.to_string());
    if prepopulate {
        cmd.arg("--prepopulate");
    }
    let out = cmd.output()?;
    let cpu_used = cpu_secs(server.child.id()) - cpu_before;
    if !out.status.success() {
        return Err(format!("mcload failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let text = String::from_utf8(out.stdout)?;
    let field = |name: &str| -> Result<f64, Box<dyn std::error::Error>> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .ok_or_else(|| format!("no {name} in {text:?}"))?
            .parse::<f64>()
            .map_err(Into::into)
    };
    if field("errors")? > 0.0 || field("misses")? > 0.0 {
        return Err(format!("load run had errors or misses: {text}").into());
    }
    // CPU is measured over warm-up plus measured time; ops over the measured time, scaled to the same span.
    let ops_whole_run = field("ops_per_sec")? * (args.duration_secs + 1.0);
    Ok(Run {
        ops_per_sec: field("ops_per_sec")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        cpu_us_per_op: cpu_used * 1e6 / ops_whole_run,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let dir = std::env::current_exe()?
        .parent()
        .ok_or("no exe dir")?
        .to_path_buf();
    let ours_bin = dir.join("cache-node");
    let mcload = dir.join("mcload");
    for p in [&ours_bin, &mcload, &args.memcached] {
        if !p.exists() {
            return Err(format!(
                "{} not found (build with cargo build --release -p cache-node)",
                p.display()
            )
            .into());
        }
    }
    let threads = args.server_threads.to_string();
    let memory = args.memory_mb.to_string();

    let port = free_port()?;
    let mut cmd = Command::new(&ours_bin);
    cmd.args([
        "-p",
        &port.to_string(),
        "-l",
        "127.0.0.1",
        "-t",
        &threads,
        "-m",
        &memory,
        "-c",
        "4096",
    ]);
    let ours = start("cache-node", cmd, port)?;

    let port = free_port()?;
    let mut cmd = Command::new(&args.memcached);
    cmd.args([
        "-p",
        &port.to_string(),
        "-l",
        "127.0.0.1",
        "-U",
        "0",
        "-t",
        &threads,
        "-m",
        &memory,
        "-c",
        "4096",
    ]);
    // memcached refuses to run as root without -u.
    if running_as_root() {
        cmd.args(["-u", "root"]);
    }
    let theirs = start("memcached", cmd, port)?;

    println!(
        "workload: {} connections, {:.0}% get / {:.0}% set, {}-byte keys, {}-byte values, {} keys prepopulated, {} s per run, server threads {}",
        args.connections, 90.0, 10.0, args.key_size, args.value_size, args.keys, args.duration_secs, args.server_threads
    );
    let mut results: Vec<(&'static str, Run)> = Vec::new();
    let servers = [&ours, &theirs];
    // Prepopulate both (with a short warm run) before the measured rounds.
    for s in servers {
        let _ = run_load(
            &mcload,
            &Args {
                duration_secs: 1.0,
                ..args.clone()
            },
            s,
            true,
        )?;
    }
    for round in 0..args.rounds {
        let order: Vec<&Server> = if round % 2 == 0 {
            vec![&ours, &theirs]
        } else {
            vec![&theirs, &ours]
        };
        for s in order {
            let r = run_load(&mcload, &args, s, false)?;
            println!(
                "round {round} {:<10} ops/s {:>9.0}  p50 {:>5.0} us  p99 {:>5.0} us  cpu/op {:>5.2} us",
                s.name, r.ops_per_sec, r.p50_us, r.p99_us, r.cpu_us_per_op
            );
            results.push((s.name, r));
        }
    }
    let pick = |name: &str, f: fn(&Run) -> f64| -> f64 {
        median(
            results
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, r)| f(r))
                .collect(),
        )
    };
    let (o_ops, m_ops) = (
        pick("cache-node", |r| r.ops_per_sec),
        pick("memcached", |r| r.ops_per_sec),
    );
    let (o_p50, m_p50) = (
        pick("cache-node", |r| r.p50_us),
        pick("memcached", |r| r.p50_us),
    );
    let (o_p99, m_p99) = (
        pick("cache-node", |r| r.p99_us),
        pick("memcached", |r| r.p99_us),
    );
    println!();
    println!(
        "| median of {} rounds | cache-node | memcached | ours/memcached |",
        args.rounds
    );
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| throughput (ops/s) | {o_ops:.0} | {m_ops:.0} | {:.3} |",
        o_ops / m_ops
    );
    println!(
        "| p50 latency (us) | {o_p50:.0} | {m_p50:.0} | {:.3} |",
        o_p50 / m_p50
    );
    println!(
        "| p99 latency (us) | {o_p99:.0} | {m_p99:.0} | {:.3} |",
        o_p99 / m_p99
    );
    let (o_cpu, m_cpu) = (
        pick("cache-node", |r| r.cpu_us_per_op),
        pick("memcached", |r| r.cpu_us_per_op),
    );
    println!(
        "| server CPU per op (us) | {o_cpu:.2} | {m_cpu:.2} | {:.3} |",
        o_cpu / m_cpu
    );
    drop(ours);
    drop(theirs);
    Ok(())
}

/// Whether we run as root (memcached then needs `-u root`), read from /proc.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
