//! `mcbench`: runs the same `mcload` workload against cache-node and Debian's memcached, side by side in one
//! run, and prints medians and ratios (ours / memcached).
//!
//! Both servers get the same worker threads (`--server-threads`, memcached `-t`), the same memory (`-m`),
//! the same connection limit and a free loopback port, and the same CPU affinity if `--server-cpus` is
//! given. The load generator is the separate `mcload` binary (next to this one), started as a child
//! process per run with the same arguments for both (and `--load-cpus` if given).
//!
//! Each round runs, for every offered load in `--rates` (0 = closed loop at saturation, else a fixed rate
//! in requests per second with latency measured from the intended send time), one run against each
//! server back to back: a pair. Rounds alternate which server goes first (the second of a pair is favoured,
//! so the default number of rounds is even). The summary gives, per load,
//! the median of each figure and the median over pairs of the per-pair ratio ours/memcached (a pair
//! shares the machine's state of the moment, so its ratio is less noisy than a ratio of medians), and in
//! how many pairs our p99 was at or below memcached's.
//!
//! With `--read-through-sizes MIN:MAX` the load is cache-aside instead (`mcload --read-through`): every
//! request a `get`, a miss followed by a `set` of the key's value, sizes log-uniform in MIN..=MAX per
//! key and nothing prepopulated. With more keys than fit in `--memory-mb`, both servers keep moving
//! memory between size classes, and the summary adds each server's hit rate.
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
    /// Rounds (each runs both servers once per offered load). Even, so that each server runs first in
    /// half of the pairs: the second server of a pair often gains a few percent here (SERVER.md).
    #[arg(long, default_value_t = 16)]
    rounds: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 3.0)]
    duration_secs: f64,
    /// Offered loads, comma-separated: 0 = closed loop (saturation), else requests per second (open loop).
    #[arg(long, value_delimiter = ',', default_value = "0,30000,60000")]
    rates: Vec<f64>,
    /// CPUs for both servers (a `taskset -c` list, e.g. "1"); default: no pinning.
    #[arg(long)]
    server_cpus: Option<String>,
    /// CPUs for the load generator (a `taskset -c` list); default: no pinning.
    #[arg(long)]
    load_cpus: Option<String>,
    /// Run a thread in this process that only sleeps this many microseconds in a loop during the measured
    /// rounds (0 = none). An experiment, not a default: on a 250 Hz kernel such periodic wake-ups shorten
    /// how long a woken thread waits for a CPU, which changes saturation p99 for both servers (memcached's
    /// own LRU maintainer thread and cache-node's maintainer do this for each); see SERVER.md.
    #[arg(long, default_value_t = 0)]
    background_wakeup_us: u64,
    /// Extra arguments for cache-node only, space-separated, e.g. "--maintainer-sleep-us 100000" to
    /// measure it with its maintainer waking every 100 ms instead of between the ticks (every 2 ms
    /// with the ticks) under load.
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    ours_args: String,
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
    /// Cache-aside load with value sizes log-uniform in MIN..=MAX bytes per key (`MIN:MAX`), instead
    /// of 90% get / 10% set of `--value-size` values over prepopulated keys.
    #[arg(long)]
    read_through_sizes: Option<String>,
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
    p999_us: f64,
    /// Server CPU time (user + system) per operation, in microseconds: an efficiency figure that a noisy,
    /// shared machine disturbs much less than throughput.
    cpu_us_per_op: f64,
    /// The load generator's own CPU time per operation (it shares the machine's two cores).
    client_cpu_us_per_op: f64,
    /// Fewest and most requests one connection completed: a starved connection shows here.
    conn_ops_min: f64,
    conn_ops_max: f64,
    /// Share of gets that hit, in percent.
    hit_percent: f64,
    /// Requests answered with an error (counted under cache-aside only: a `set` the server refused,
    /// such as memcached's `SERVER_ERROR out of memory storing object`).
    errors: f64,
}

/// A compared figure: its name in the table and how to read it from a run.
type Figure = (&'static str, fn(&Run) -> f64);

/// The figures compared.
const FIGURES: [Figure; 5] = [
    ("throughput (ops/s)", |r| r.ops_per_sec),
    ("p50 latency (us)", |r| r.p50_us),
    ("p99 latency (us)", |r| r.p99_us),
    ("p99.9 latency (us)", |r| r.p999_us),
    ("server CPU per op (us)", |r| r.cpu_us_per_op),
];

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

/// `program` run under `taskset -c cpus` when `cpus` is given, else directly.
fn pinned(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn run_load(
    mcload: &Path,
    args: &Args,
    server: &Server,
    rate: f64,
    prepopulate: bool,
) -> Result<Run, Box<dyn std::error::Error>> {
    let addr = server.addr;
    let cpu_before = cpu_secs(server.child.id());
    let mut cmd = pinned(mcload, args.load_cpus.as_deref());
    cmd.arg("--rate")
        .arg(rate.to_string())
        .arg("--addr")
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
    if let Some(sizes) = &args.read_through_sizes {
        cmd.args(["--read-through", "--sizes", sizes]);
    } else if prepopulate {
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
    // Over prepopulated keys that fit, a miss means a server lost an item it should hold, and an
    // error that a request went wrong. Under cache-aside churn misses are the point, and a refused
    // set is counted and shown: a server's answer, not the bench's failure.
    let churn = args.read_through_sizes.is_some();
    if !churn && (field("errors")? > 0.0 || field("misses")? > 0.0) {
        return Err(format!("load run had errors or misses: {text}").into());
    }
    let (hits, misses) = (field("hits")?, field("misses")?);
    // CPU is measured over warm-up plus measured time; ops over the measured time, scaled to the same span.
    let ops_whole_run = field("ops_per_sec")? * (args.duration_secs + 1.0);
    Ok(Run {
        ops_per_sec: field("ops_per_sec")?,
        p50_us: field("p50_us")?,
        p99_us: field("p99_us")?,
        p999_us: field("p999_us")?,
        cpu_us_per_op: cpu_used * 1e6 / ops_whole_run,
        client_cpu_us_per_op: field("client_cpu_us_per_op")?,
        conn_ops_min: field("conn_ops_min")?,
        conn_ops_max: field("conn_ops_max")?,
        hit_percent: 100.0 * hits / (hits + misses).max(1.0),
        errors: field("errors")?,
    })
}

/// Whether cache-node runs before memcached in `round`: the order alternates, starting with ours.
fn ours_runs_first(round: usize) -> bool {
    round % 2 == 0
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
    // The settings both servers get, in one place so they cannot drift apart.
    let server = |program: &Path, port: u16| {
        let mut cmd = pinned(program, args.server_cpus.as_deref());
        cmd.args(["-p", &port.to_string(), "-l", "127.0.0.1"]);
        cmd.args(["-t", &args.server_threads.to_string()]);
        cmd.args(["-m", &args.memory_mb.to_string(), "-c", "4096"]);
        cmd
    };

    let port = free_port()?;
    let mut cmd = server(&ours_bin, port);
    cmd.args(args.ours_args.split_whitespace());
    let ours = start("cache-node", cmd, port)?;

    let port = free_port()?;
    let mut cmd = server(&args.memcached, port);
    // UDP off: cache-node speaks TCP only.
    cmd.args(["-U", "0"]);
    // memcached refuses to run as root without -u.
    if running_as_root() {
        cmd.args(["-u", "root"]);
    }
    let theirs = start("memcached", cmd, port)?;

    let requests = match &args.read_through_sizes {
        Some(sizes) => format!(
            "cache-aside (get, set on a miss), {}-byte keys, values log-uniform in {} bytes per key, {} keys, none prepopulated, {} MB per server",
            args.key_size,
            sizes.replace(':', ".."),
            args.keys,
            args.memory_mb
        ),
        None => format!(
            "{:.0}% get / {:.0}% set, {}-byte keys, {}-byte values, {} keys prepopulated",
            90.0, 10.0, args.key_size, args.value_size, args.keys
        ),
    };
    println!(
        "workload: {} connections, {} load threads, {requests}, {} s per run, server threads {}, server cpus {}, load cpus {}, background wake-up every {} us (0 = none), cache-node extra args {:?}",
        args.connections,
        args.load_threads,
        args.duration_secs,
        args.server_threads,
        args.server_cpus.as_deref().unwrap_or("any"),
        args.load_cpus.as_deref().unwrap_or("any"),
        args.background_wakeup_us,
        args.ours_args,
    );
    // Prepopulate both (with a short warm run) before the measured rounds.
    for s in [&ours, &theirs] {
        let _ = run_load(
            &mcload,
            &Args {
                duration_secs: 1.0,
                ..args.clone()
            },
            s,
            0.0,
            true,
        )?;
    }
    let stop_wakeups = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wakeups = (args.background_wakeup_us > 0).then(|| {
        let stop = stop_wakeups.clone();
        let period = Duration::from_micros(args.background_wakeup_us);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(period);
            }
        })
    });
    // pairs[rate index] = (ours, memcached) per round.
    let mut pairs: Vec<Vec<(Run, Run)>> = vec![Vec::new(); args.rates.len()];
    for round in 0..args.rounds {
        let ours_first = ours_runs_first(round);
        for (i, &rate) in args.rates.iter().enumerate() {
            let order = if ours_first {
                [&ours, &theirs]
            } else {
                [&theirs, &ours]
            };
            let mut runs = Vec::with_capacity(2);
            for s in order {
                let r = run_load(&mcload, &args, s, rate, false)?;
                println!(
                    "round {round:>2} {:<6} {:<10} ops/s {:>7.0}  p50 {:>5.0}  p99 {:>5.0}  p99.9 {:>6.0} us  cpu/op {:>5.2} us  client cpu/op {:>5.2} us  conn ops {:.0}..{:.0}  hits {:.2}%  errors {:.0}",
                    load_name(rate),
                    s.name,
                    r.ops_per_sec,
                    r.p50_us,
                    r.p99_us,
                    r.p999_us,
                    r.cpu_us_per_op,
                    r.client_cpu_us_per_op,
                    r.conn_ops_min,
                    r.conn_ops_max,
                    r.hit_percent,
                    r.errors
                );
                runs.push(r);
            }
            let (o, m) = if ours_first {
                (runs[0], runs[1])
            } else {
                (runs[1], runs[0])
            };
            pairs[i].push((o, m));
        }
    }
    stop_wakeups.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = wakeups {
        let _ = t.join();
    }
    drop(ours);
    drop(theirs);
    for (rate, pairs) in args.rates.iter().zip(&pairs) {
        println!();
        println!("{}:", load_name_long(*rate));
        println!();
        println!(
            "| {} pairs | cache-node (median) | memcached (median) | ours/memcached (median of per-pair ratios) |",
            pairs.len()
        );
        println!("| --- | ---: | ---: | ---: |");
        // One row: each server's median and the median of the per-pair ratios.
        let row = |name: &str, f: fn(&Run) -> f64, decimals: usize| {
            let ours = median(pairs.iter().map(|(o, _)| f(o)).collect());
            let theirs = median(pairs.iter().map(|(_, m)| f(m)).collect());
            let ratio = median(pairs.iter().map(|(o, m)| f(o) / f(m)).collect());
            println!("| {name} | {ours:.decimals$} | {theirs:.decimals$} | {ratio:.3} |");
        };
        for (name, f) in FIGURES {
            row(name, f, if name.contains("CPU") { 2 } else { 0 });
        }
        if args.read_through_sizes.is_some() {
            row("hit rate (%)", |r| r.hit_percent, 2);
            let ours: f64 = pairs.iter().map(|(o, _)| o.errors).sum();
            let theirs: f64 = pairs.iter().map(|(_, m)| m.errors).sum();
            println!("| errors (all runs) | {ours:.0} | {theirs:.0} | |");
        }
        let p99_wins = pairs.iter().filter(|(o, m)| o.p99_us <= m.p99_us).count();
        println!();
        println!(
            "ours p99 <= memcached p99 in {p99_wins} of {} pairs",
            pairs.len()
        );
        if *rate == 0.0 {
            // The spread of the per-pair ratios, so a median near 1.0 can be told from noise.
            let by_round: Vec<f64> = pairs
                .iter()
                .map(|(o, m)| o.ops_per_sec / m.ops_per_sec)
                .collect();
            let mut ratios = by_round.clone();
            ratios.sort_by(|a, b| a.total_cmp(b));
            let wins = ratios.iter().filter(|r| **r >= 1.0).count();
            // Interpolated between neighbours, so the middle quartile is the median the table shows
            // (the nearest rank gave the upper of the two middle pairs of an even count).
            let at = |q: f64| {
                let position = (ratios.len() - 1) as f64 * q;
                let (below, above) = (position.floor() as usize, position.ceil() as usize);
                ratios[below] + (ratios[above] - ratios[below]) * (position - below as f64)
            };
            println!(
                "ours throughput >= memcached in {wins} of {} pairs; per-pair ratio min {:.3}, quartiles {:.3} {:.3} {:.3}, max {:.3}",
                ratios.len(),
                at(0.0),
                at(0.25),
                at(0.5),
                at(0.75),
                at(1.0)
            );
            // The server that runs second in a pair can be favoured (session 17: about 4% in 40 pairs);
            // rounds alternate the order so it cancels, and this shows how large it was in this run.
            let ratio_where = |ours_first: bool| {
                median(
                    (0..by_round.len())
                        .filter(|&round| ours_runs_first(round) == ours_first)
                        .map(|round| by_round[round])
                        .collect(),
                )
            };
            let geometric_mean =
                (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
            println!(
                "per-pair throughput ratio by order: ours first {:.3}, memcached first {:.3} (medians); geometric mean of all {geometric_mean:.3}",
                ratio_where(true),
                ratio_where(false)
            );
        }
        let client = median(
            pairs
                .iter()
                .flat_map(|(o, m)| [o.client_cpu_us_per_op, m.client_cpu_us_per_op])
                .collect(),
        );
        println!("load generator CPU per op (median): {client:.2} us");
        if *rate > 0.0 {
            // In open loop the offered rate is fixed: a run that fell short means the load generator (or
            // the server) could not keep up, and its latencies are not "at this load".
            let short = pairs
                .iter()
                .flat_map(|(o, m)| [o, m])
                .filter(|r| r.ops_per_sec < 0.98 * rate)
                .count();
            if short > 0 {
                println!("WARNING: {short} runs completed < 98% of the offered {rate:.0} ops/s");
            }
        }
    }
    Ok(())
}

fn load_name(rate: f64) -> String {
    if rate > 0.0 {
        format!("{:.0}k", rate / 1000.0)
    } else {
        "closed".to_string()
    }
}

fn load_name_long(rate: f64) -> String {
    if rate > 0.0 {
        format!("fixed rate {rate:.0} ops/s (open loop; latency from the intended send time)")
    } else {
        "closed loop, saturation (each connection sends when its reply arrives)".to_string()
    }
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
