//! The `cache-node` binary: `--help`, the `replay` subcommand, and serving on a port given by flags.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{noreply_sets, poll_for};

const BIN: &str = env!("CARGO_BIN_EXE_cache-node");

#[test]
fn help_explains_every_flag() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "-p, --port",
        "-l, --listen",
        "-m, --memory-limit",
        "-c, --conn-limit",
        "-I, --max-item-size",
        "-t, --threads",
        "--metrics-port",
        "--lease-window-secs",
        "--maintainer-sleep-us",
        "--yield-when-idle",
        "--work-stealing",
        "-U, --udp-port",
        "-u, --user",
        "-P, --pidfile",
        "-b, --listen-backlog",
        "-v, --verbose",
        "replay",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let out = Command::new(BIN).args(["-I", "12x"]).output().unwrap();
    assert!(!out.status.success(), "a bad -I is refused");
    let out = Command::new(BIN)
        .args(["--maintainer-sleep-us", "50"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a maintainer sleep under 100 us is refused"
    );
}

/// What `cache-node replay --trace PATH --capacity 2` prints, asserting it succeeded.
fn replay_at_capacity_2(path: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["replay", "--trace"])
        .arg(path)
        .args(["--capacity", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A gzip text trace of `lines` written as `tiny.trace.gz` in `dir`; returns its path.
fn gzip_trace(dir: &tempfile::TempDir, lines: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join("tiny.trace.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(lines).unwrap();
    gz.finish().unwrap();
    path
}

#[test]
fn replay_prints_hit_rate_with_two_decimals() {
    let dir = tempfile::tempdir().unwrap();
    // 1 2 1 2 1 2 at capacity 2: the first two miss, the other four hit.
    let path = gzip_trace(&dir, b"1\n2\n1\n2\n1\n2\n");
    assert_eq!(replay_at_capacity_2(&path), "hit_rate=66.67\n");
}

/// A capacity far above the trace's length replays as one that holds the whole trace (nothing is
/// evicted either way), and a capacity of 0 is refused: before session 31, 10^12 aborted on the
/// admission sketch's allocation (6 bytes an item), 2^64 - 1 panicked ("capacity overflow") and 0
/// was taken as 1 and reported hits.
#[test]
fn replay_capacity_is_bounded_by_the_trace_and_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    // Three keys, each read twice in a row: at any capacity the second reads hit.
    let path = gzip_trace(&dir, b"1\n1\n2\n2\n3\n3\n");
    let replay = |capacity: &str| {
        Command::new(BIN)
            .args(["replay", "--trace"])
            .arg(&path)
            .args(["--capacity", capacity])
            .output()
            .unwrap()
    };
    for capacity in ["6", "1000000000000", "18446744073709551615"] {
        let out = replay(capacity);
        assert!(
            out.status.success(),
            "--capacity {capacity}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"hit_rate=50.00\n", "--capacity {capacity}");
    }
    let out = replay("0");
    assert_eq!(out.status.code(), Some(2), "--capacity 0 is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--capacity"), "{stderr}");
}

/// `replay` reads the xz formats too, telling them apart by name (`u64` in it: 64-bit keys), and prints
/// the same one line. Each trace is two keys at capacity 2: after their first misses every access hits.
/// Read wrongly the rates differ: the u64 trace's keys share their low half, so without the high half
/// they are one key (83.33), and the u32 trace read as 64-bit keys is three accesses (33.33).
#[test]
fn replay_reads_both_xz_formats() {
    let dir = tempfile::tempdir().unwrap();
    let u64_keys: Vec<u8> = [1u64 << 32 | 7, 2 << 32 | 7]
        .repeat(3)
        .iter()
        .flat_map(|k| k.to_be_bytes())
        .collect();
    let u32_keys: Vec<u8> = [5u32, 5, 5, 5, 6, 6]
        .iter()
        .flat_map(|k| k.to_be_bytes())
        .collect();
    for (name, bytes, hit_rate) in [
        ("tiny-u64.trace.xz", u64_keys, "hit_rate=66.67"),
        ("tiny.trace.xz", u32_keys, "hit_rate=66.67"),
    ] {
        let path = dir.path().join(name);
        let mut xz = xz2::write::XzEncoder::new(std::fs::File::create(&path).unwrap(), 1);
        xz.write_all(&bytes).unwrap();
        xz.finish().unwrap();
        assert_eq!(
            replay_at_capacity_2(&path),
            format!("{hit_rate}\n"),
            "{name}"
        );
    }
}

/// The binary with `args` on a port the OS picks (`-p 0`; the address is in the start-up log), its log
/// on a pipe. RUST_LOG is cleared, so the level is the binary's own: info, or what `-v` makes it.
fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["-p", "0"])
        .args(args)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    command
}

/// Starts the binary with `args` ([`server_command`]); returns it and the address from its start-up line.
fn start(args: &[&str]) -> (KillOnDrop, String) {
    let mut child = KillOnDrop(server_command(args).spawn().unwrap());
    let addr = listening_address(&mut child);
    (child, addr)
}

/// The address from the (first) start-up line on the child's (piped) stderr.
fn listening_address(child: &mut KillOnDrop) -> String {
    listening_addresses(child, 1).remove(0)
}

/// A connection to `addr` that gives up on a reply after 5 s.
fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    s
}

/// How long [`connect`]'s connections wait for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `request` (which ends with `quit`) on a new connection and returns everything the server sent.
fn exchange(addr: &str, request: &[u8]) -> String {
    exchange_within(addr, request, REPLY_TIMEOUT)
}

/// [`exchange`], waiting up to `timeout` for the reply.
fn exchange_within(addr: &str, request: &[u8], timeout: Duration) -> String {
    let mut s = connect(addr);
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn binary_serves_with_memcached_flags() {
    let (_child, addr) = start(&[
        "-t",
        "2",
        "-m",
        "8",
        "--lease-window-secs",
        "5",
        "--maintainer-sleep-us",
        "5000",
    ]);
    let reply = exchange(
        &addr,
        b"set k 0 0 2\r\nhi\r\nget k\r\nstats settings\r\nquit\r\n",
    );
    assert!(
        reply.starts_with("STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n"),
        "{reply}"
    );
    assert!(reply.contains("STAT maxbytes 8388608\r\n"), "{reply}");
    assert!(reply.contains("STAT num_threads 2\r\n"), "{reply}");
    assert!(
        reply.contains("STAT maintainer_sleep_us 5000\r\n"),
        "{reply}"
    );
}

/// `--metrics-port` serves the node's own figures over HTTP from the binary: after a set, a get that hits
/// and one that misses on the cache port, `GET /metrics` on the metrics port (on the listen address)
/// reads exactly those counts. A metrics listener on another node, or on none, fails this.
#[test]
fn metrics_port_serves_the_nodes_figures() {
    // A port that was free a moment ago: the metrics port has no `0` (that means off). Another process
    // may take it first, and the node then refuses to start: try again on another.
    let (_child, metrics_port, addr, metrics_url) = (0..5)
        .find_map(|_| {
            let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let port_arg = metrics_port.to_string();
            let mut child = KillOnDrop(
                server_command(&["--metrics-port", &port_arg])
                    .spawn()
                    .unwrap(),
            );
            // The log is read on a thread of its own, so a start-up line that never comes fails the
            // test after 10 s instead of blocking it on the pipe.
            let stderr = child.0.stderr.take().unwrap();
            let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
            let (mut addr, mut metrics_url) = (None, None);
            while addr.is_none() || metrics_url.is_none() {
                let line = lines.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| {
                    panic!("no start-up line for the cache port and the metrics port: {addr:?} {metrics_url:?}")
                });
                if line.contains("error") {
                    return None;
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    addr = Some(rest.trim().to_string());
                }
                if let Some(rest) = line.split("metrics on ").nth(1) {
                    metrics_url = Some(rest.trim().to_string());
                }
            }
            Some((child, metrics_port, addr, metrics_url))
        })
        .expect("the node started with a free metrics port in 5 attempts");
    let addr = addr.unwrap();
    assert_eq!(
        metrics_url.unwrap(),
        format!("http://127.0.0.1:{metrics_port}/metrics")
    );
    assert_eq!(
        exchange(&addr, b"set k 0 0 2\r\nhi\r\nget k\r\nget nope\r\nquit\r\n"),
        "STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\nEND\r\n"
    );
    let response = exchange(
        &format!("127.0.0.1:{metrics_port}"),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let sample = |name: &str| -> Option<&str> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
    };
    for (name, want) in [
        ("cache_node_cmd_set_total", "1"),
        ("cache_node_cmd_get_total", "2"),
        ("cache_node_get_hits_total", "1"),
        ("cache_node_get_misses_total", "1"),
        ("cache_node_curr_items", "1"),
        ("cache_node_total_connections_total", "1"),
    ] {
        assert_eq!(sample(name), Some(want), "{name}: {body}");
    }
}

/// Without `--maintainer-sleep-us`, the maintainer's busy spacing is 800 us when the threads own their
/// connections (the default; four wake-ups between two 4 ms ticks) and, with `--work-stealing`, 2 ms
/// while the workers fit the cores and 1 ms once they outnumber them (SERVER.md: each kept p99 under
/// memcached's where it was measured).
#[test]
fn the_maintainer_default_follows_the_threading() {
    let cores = std::thread::available_parallelism().unwrap().get();
    for (threads, work_stealing, expect_us) in [
        (cores, false, 800),
        (1, false, 800),
        (cores, true, 2000),
        (cores + 1, true, 1000),
    ] {
        let threads = threads.to_string();
        let mut args = vec!["-t", &threads];
        if work_stealing {
            args.push("--work-stealing");
        }
        let (_server, addr) = start(&args);
        let reply = exchange(&addr, b"stats settings\r\nquit\r\n");
        assert!(
            reply.contains(&format!("STAT maintainer_sleep_us {expect_us}\r\n")),
            "{args:?} on {cores} cores: {reply}"
        );
    }
}

/// `-t N` starts N connection threads that each own the connections handed to them (memcached's model),
/// and `--work-stealing` serves every connection on N workers of one runtime instead: read from the
/// process's thread names (cut to 15 bytes by the kernel) and `stats settings`, with a request served
/// either way.
#[test]
fn threads_own_their_connections_unless_work_stealing() {
    for (args, connection_threads, workers) in [
        (&["-t", "3"][..], 3, 0),
        (&["-t", "3", "--work-stealing"][..], 0, 3),
    ] {
        let (server, reply) = settings_of_a_serving_node(args);
        assert!(
            reply.contains(&format!("STAT connection_threads {connection_threads}\r\n")),
            "{args:?}: {reply}"
        );
        // A new thread names itself once it runs, so a thread that has not been scheduled yet still
        // carries the process's name: read until the names settle, for at most five seconds.
        poll_for(Duration::from_secs(5), || {
            let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", server.0.id()))
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
                .collect();
            let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
            let counted = (count("cache-node-conn"), count("cache-node-work"));
            (counted == (connection_threads, workers))
                .then_some(())
                .ok_or_else(|| {
                    format!(
                        "{args:?}: expected {connection_threads} connection threads and {workers} \
                         workers, threads {names:?}"
                    )
                })
        });
    }
}

/// `--yield-when-idle` reaches the runtime's settings: off unless asked for, and reported in
/// `stats settings`. (Its effect on the tail is a scheduling matter, measured by `mcbench`.)
#[test]
fn yield_when_idle_is_off_unless_asked_for() {
    for (args, expect) in [(&[][..], "no"), (&["--yield-when-idle"][..], "yes")] {
        let (_server, reply) = settings_of_a_serving_node(args);
        assert!(
            reply.contains(&format!("STAT yield_when_idle {expect}\r\n")),
            "{args:?}: {reply}"
        );
    }
}

/// Starts the binary with `args`, asserts that it serves a set and a get, and returns it with its `stats
/// settings` reply.
fn settings_of_a_serving_node(args: &[&str]) -> (KillOnDrop, String) {
    let (server, addr) = start(args);
    let reply = exchange(
        &addr,
        b"stats settings\r\nset k 0 0 1\r\nv\r\nget k\r\nquit\r\n",
    );
    assert!(
        reply.ends_with("END\r\nSTORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n"),
        "{args:?}: {reply}"
    );
    (server, reply)
}

/// `-l` takes memcached's forms (SERVER.md, "Running"): a list, host names (every address bound), IPv6 in
/// brackets or bare, an entry's own port. One node serves them all: a value set through one address is
/// read through the others. Before `-l` took these forms, each of them stopped the start with "bad listen
/// address".
#[test]
fn listens_on_every_address_in_memcacheds_forms() {
    let cases: &[(&str, &[&str])] = &[
        ("localhost,[::1]", &["127.0.0.1:", "[::1]:"]),
        ("127.0.0.1:0;::1", &["127.0.0.1:", "[::1]:"]),
    ];
    for (listen, expect) in cases {
        let mut child = KillOnDrop(server_command(&["-l", listen]).spawn().unwrap());
        let addrs = listening_addresses(&mut child, expect.len());
        for (addr, prefix) in addrs.iter().zip(expect.iter()) {
            assert!(addr.starts_with(prefix), "-l {listen}: {addrs:?}");
        }
        assert_eq!(
            exchange(&addrs[0], b"set k 0 0 2\r\nhi\r\nquit\r\n"),
            "STORED\r\n"
        );
        for addr in &addrs {
            assert_eq!(
                exchange(addr, b"get k\r\nquit\r\n"),
                "VALUE k 0 2\r\nhi\r\nEND\r\n",
                "-l {listen}: {addr}"
            );
        }
    }
}

/// The addresses of the first `n` start-up lines on the child's (piped) stderr (among its first 20
/// lines).
fn listening_addresses(child: &mut KillOnDrop, n: usize) -> Vec<String> {
    let stderr = child.0.stderr.take().unwrap();
    let mut addrs = Vec::new();
    for line in BufReader::new(stderr).lines().take(20) {
        let Ok(line) = line else { break };
        if let Some(rest) = line.split("listening on ").nth(1) {
            addrs.push(rest.trim().to_string());
            if addrs.len() == n {
                return addrs;
            }
        }
    }
    panic!("expected {n} listening addresses, found {addrs:?}")
}

/// A temporary directory whose parents the `-u` user can pass through: in /tmp, not under the test
/// run's own TMPDIR (`scripts/test` makes that one, mode 0700, as root), where `nobody` could reach
/// no pid file whatever the directory's own mode.
fn dir_the_server_user_reaches() -> tempfile::TempDir {
    tempfile::tempdir_in("/tmp").unwrap()
}

/// The exit status and stderr of a server expected to refuse to start (`what` names the setting
/// in the failure); fails if it is still running after 10 s.
fn refused_start(child: &mut KillOnDrop, what: &str) -> (std::process::ExitStatus, String) {
    let status = poll_for(Duration::from_secs(10), || {
        child
            .0
            .try_wait()
            .unwrap()
            .ok_or_else(|| format!("{what}: started instead of being refused"))
    });
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The flags a memcached deployment passes besides the sizes (Debian's memcached.conf: `-u memcache -P
/// FILE`; container images: `-U 0`, `-v`) start cache-node as they start memcached: -U 0 is accepted, -P
/// writes the pid, -b sets the listen backlog, -vv logs each connection, and -u, when root, gives up root
/// (user, group, supplementary groups) before serving; without root it is ignored with a warning. -P's
/// file is written as that user, in a directory it may write (Debian gives the memcache user
/// /run/memcached; here a sticky world-writable one, as /tmp), and goes at a clean stop. Before
/// session 34 it was written as root before giving root up: in a sticky directory the server then
/// could not remove its own pid file, which was left behind.
#[test]
fn memcached_deployment_flags() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_the_server_user_reaches();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let pidfile = dir.path().join("cache-node.pid");
    let pidfile_arg = pidfile.to_str().unwrap();
    let mut child = KillOnDrop(
        server_command(&[
            "-U",
            "0",
            "-b",
            "7",
            "-vv",
            "-u",
            "nobody",
            "-P",
            pidfile_arg,
        ])
        .spawn()
        .unwrap(),
    );
    let pid = child.0.id();
    let stderr = child.0.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let next_line_with = |needle: &str| -> String {
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    let addr = next_line_with("listening on ")
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let status = |field: &str| proc_status(pid, field);
    if running_as_root() {
        next_line_with("running as nobody");
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let nobody: Vec<&str> = passwd
            .lines()
            .find(|l| l.starts_with("nobody:"))
            .expect("a nobody user")
            .split(':')
            .collect();
        let (uid, gid) = (nobody[2], nobody[3]);
        assert_eq!(status("Uid"), format!("{uid}\t{uid}\t{uid}\t{uid}"));
        assert_eq!(status("Gid"), format!("{gid}\t{gid}\t{gid}\t{gid}"));
        assert_eq!(status("Groups"), "", "no supplementary groups left");
    } else {
        next_line_with("-u nobody ignored: not started as root");
    }
    let port = addr.rsplit(':').next().unwrap();
    let ss = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) shows the listen backlog");
    let listening = String::from_utf8(ss.stdout).unwrap();
    let backlog = listening.split_whitespace().nth(2);
    assert_eq!(backlog, Some("7"), "ss: {listening:?}");
    let mut s = connect(&addr);
    s.write_all(b"set k 0 0 2\r\nhi\r\nget k\r\nquit\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "STORED\r\nVALUE k 0 2\r\nhi\r\nEND\r\n");
    let local = s.local_addr().unwrap().to_string();
    next_line_with(&format!("new connection from {local}"));
    next_line_with(&format!("connection from {local} closed"));
    // Written before the server answered anyone.
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        format!("{pid}\n")
    );
    // SAFETY: signals a child of this test by its pid.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!pidfile.exists(), "the pid file is removed at a clean stop");
}

/// A pid file the server's user cannot write stops the start with a clear error and leaves nothing
/// behind: as root with `-u nobody`, a root-owned directory (before session 34 the file was
/// written there as root, then left behind at the stop); otherwise a read-only directory.
/// (memcached logs that it could not write it and runs on; cache-node, as for any other bad start-up
/// setting, refuses to start.)
#[test]
fn a_pid_file_the_user_cannot_write_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_the_server_user_reaches();
    let (mode, args) = if running_as_root() {
        (0o755, vec!["-u", "nobody"])
    } else {
        (0o555, vec![])
    };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    let pidfile = dir.path().join("cache-node.pid");
    let mut args = args;
    args.extend(["-P", pidfile.to_str().unwrap()]);
    let mut child = KillOnDrop(server_command(&args).spawn().unwrap());
    let (status, stderr) = refused_start(&mut child, "-P in a directory it cannot write");
    assert!(!status.success(), "started: {stderr}");
    assert!(
        stderr.contains(&format!("cannot write the pid file {}", pidfile.display())),
        "{stderr}"
    );
    assert!(!pidfile.exists(), "nothing left behind");
}

/// A server whose stderr is gone (the supervisor's pipe closed) keeps serving and logging nothing, and
/// still stops cleanly on SIGTERM, removing its pid file. Before, the first log line after the pipe closed
/// (here -vv's line for a new connection) panicked in the log subscriber's fallback `eprintln!`: the
/// accept loop died with it, and the process exited 101 with its pid file left behind.
#[test]
fn a_closed_stderr_does_not_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("cache-node.pid");
    let pidfile_arg = pidfile.to_str().unwrap();
    let mut child = KillOnDrop(server_command(&["-vv", "-P", pidfile_arg]).spawn().unwrap());
    // Reads the start-up line, then drops the pipe's read end.
    let addr = listening_address(&mut child);
    for _ in 0..3 {
        let reply = exchange(&addr, b"version\r\nquit\r\n");
        assert!(reply.starts_with("VERSION "), "{reply:?}");
    }
    assert!(pidfile.exists());
    // SAFETY: signals a child of this test by its pid.
    assert_eq!(
        unsafe { libc::kill(child.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!pidfile.exists(), "the pid file is removed at a clean stop");
}

/// As memcached 1.6: a SIGHUP (the terminal that started the server closing) leaves it serving with
/// its items, and SIGUSR1 stops it cleanly, pid file removed. Before session 31 both killed it by
/// their default action (exit by signal, the cache lost, the pid file left behind).
#[test]
fn sighup_is_survived_and_sigusr1_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("cache-node.pid");
    let mut child = KillOnDrop(
        server_command(&["-P", pidfile.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    let addr = listening_address(&mut child);
    assert_eq!(
        exchange(&addr, b"set k 0 0 2\r\nhi\r\nquit\r\n"),
        "STORED\r\n"
    );
    let signal = |sig| {
        // SAFETY: signals a child of this test by its pid.
        assert_eq!(unsafe { libc::kill(child.0.id() as libc::pid_t, sig) }, 0);
    };
    signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        exchange(&addr, b"get k\r\nquit\r\n"),
        "VALUE k 0 2\r\nhi\r\nEND\r\n",
        "serving with its items after SIGHUP"
    );
    signal(libc::SIGUSR1);
    let exit = child.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!pidfile.exists(), "the pid file is removed at a clean stop");
}

/// Stops the server even when an assertion fails first, so no test leaves a process behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server set up wrongly stops at start with one `error:` line naming the problem, as memcached does
/// (`-t 0`: "Number of threads must be greater than 0"), instead of starting with a silently changed
/// setting (before: `-m 0` ran with 1 MB, `-t 0` with one thread, `--lease-window-secs 0` with 1) or
/// one that fails later (`-c 0` refused every client; a `-c` above the open-files limit left the
/// connections past it waiting in the listen backlog; `-I 32m -m 64` answered every value above 16 MB
/// "object too large"; `-m 4` every 1 MB value under a long key). Without the start-up check of -I
/// against -m, the three "does not fit" cases start, and this test fails on the first of them.
#[test]
fn bad_setups_are_refused_at_start_with_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["-m", "0"], "--memory-limit"),
        (&["-t", "0"], "--threads"),
        (&["-c", "0"], "--conn-limit"),
        (&["--lease-window-secs", "0"], "--lease-window-secs"),
        (&["--shards", "0"], "--shards"),
        (&["-I", "16m"], "16777215 bytes"),
        (&["-m", "4"], "does not fit in -m 4 MB"),
        (&["-I", "4m", "-m", "16"], "does not fit in -m 16 MB"),
        (&["-I", "15m", "-m", "32"], "does not fit in -m 32 MB"),
        (&["-l", "999.1.1.1"], "bad listen address"),
        (&["-l", "[::1"], "closing ']'"),
        // Before, -l "" started a server that listened nowhere.
        (&["-l", ""], "no address given"),
        (&["-l", "127.0.0.1:http"], "invalid port number \"http\""),
        // TEST-NET-1 (RFC 5737): no host has it, so it cannot be bound.
        (&["-l", "192.0.2.1"], "cannot listen on \"192.0.2.1\""),
        (&["-p", &busy_port], "cannot listen on 127.0.0.1:"),
        // More open files than Linux allows any process (fs.nr_open: 2^20 by default, below 2^31 at most).
        (
            &["-c", "4000000000"],
            "with -t 4 needs 4000000096 open files",
        ),
        (&["-U", "11211"], "serves TCP only"),
        (&["-b", "0"], "--listen-backlog"),
    ];
    // -u is acted on only by root (anyone else has no identity to give up and is warned instead).
    let as_root: &[(&[&str], &str)] = &[(
        &["-u", "no-such-user-here"],
        "cannot find the user no-such-user-here",
    )];
    let cases: Vec<_> = if running_as_root() {
        cases.iter().chain(as_root).collect()
    } else {
        cases.iter().collect()
    };
    for (args, expect) in cases {
        let port: &[&str] = if args.contains(&"-p") {
            &[]
        } else {
            &["-p", "0"]
        };
        let mut child = KillOnDrop(
            Command::new(BIN)
                .args(port)
                .args(*args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let (status, err) = refused_start(&mut child, &format!("{args:?}"));
        assert!(!status.success(), "{args:?} exited with success: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(expect),
            "{args:?}: expected an error line with {expect:?}, got {err:?}"
        );
    }
}

/// The start-up check is exact, not a margin: the smallest -m it accepts for a 4 MiB -I (17 MB; the test
/// above shows 16 refused) holds a 4 MiB value under a 250-byte key, the largest request the parser lets
/// through.
#[test]
fn the_smallest_memory_accepted_for_an_item_size_holds_that_item() {
    let (_child, addr) = start(&["-I", "4m", "-m", "17"]);
    let key = "k".repeat(250);
    let value = vec![b'v'; 4 << 20];
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("set {key} 7 0 {}\r\n", value.len()).as_bytes())
        .unwrap();
    s.write_all(&value).unwrap();
    s.write_all(format!("\r\nmg {key} s f\r\nquit\r\n").as_bytes())
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, format!("STORED\r\nHD s{} f7\r\n", value.len()));
}

/// A memory figure (kB) of process `pid` from /proc: `VmRSS` (resident now) or `VmHWM` (the peak).
#[cfg(target_os = "linux")]
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    proc_status(pid, field)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A field of process `pid`'s `/proc/<pid>/status`, without its name and surrounding blanks.
fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// One `get` naming a 1 MB value 200 times asks for a 200 MB reply. The server sends it in batches of
/// about 1 MiB as the client reads, as memcached sends from the items themselves: while the client
/// reads nothing the server's peak memory stays under 64 MB (measured: 14 MB; memcached 1.6.18: 16 MB),
/// and the client then gets the whole reply. Before, the connection built the reply whole first: 200
/// MB here, 3.2 GB for four such clients with 2,000 keys each, 8 GB for one 16 KiB line of one-letter
/// keys; with that code this test fails on the peak.
#[cfg(target_os = "linux")]
#[test]
fn a_multi_get_of_large_values_is_streamed_not_built_in_memory() {
    let (child, addr) = start(&["-m", "64"]);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let value = vec![b'v'; 1_000_000];
    s.write_all(b"set a 0 0 1000000\r\n").unwrap();
    s.write_all(&value).unwrap();
    s.write_all(b"\r\n").unwrap();
    let mut stored = [0u8; 8];
    s.read_exact(&mut stored).unwrap();
    assert_eq!(&stored, b"STORED\r\n");
    let copies = 200;
    s.write_all(format!("get{}\r\nmn\r\n", " a".repeat(copies)).as_bytes())
        .unwrap();
    // The old code needed well under a second to build the whole reply; give it time to show.
    std::thread::sleep(Duration::from_millis(1500));
    let peak_mb = proc_status_kb(child.0.id(), "VmHWM") / 1024;
    assert!(
        peak_mb < 64,
        "peak RSS {peak_mb} MB while the client read nothing of a {copies} MB reply"
    );
    let mut reply = Vec::new();
    let mut reader = BufReader::with_capacity(1 << 20, s);
    for _ in 0..copies {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        assert_eq!(header, "VALUE a 0 1000000\r\n");
        reply.resize(1_000_002, 0);
        reader.read_exact(&mut reply).unwrap();
        assert!(reply[..1_000_000] == value[..] && reply.ends_with(b"\r\n"));
    }
    let mut tail = [0u8; 9];
    reader.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"END\r\nMN\r\n");
}

/// A client that sends requests and stops reading holds one batch of replies on its connection, not its
/// whole backlog: 300 connections that each send 5,000 `get`s of a 1,000-byte value (5 MB of replies, more
/// than the kernel's socket buffers take) and read nothing cost under 256 KiB of resident memory apiece
/// (measured with `tools/conn_memory.py 500 3 --stalled 1000 5000`: see SERVER.md). With replies batched
/// up to 1 MiB this was 1.44 MB each, and this test fails.
#[cfg(target_os = "linux")]
#[test]
fn clients_that_stop_reading_hold_one_small_batch_each() {
    raise_open_files_limit();
    let (child, addr) = start(&["-m", "64", "-c", "1000"]);
    let mut setup = TcpStream::connect(&addr).unwrap();
    setup.write_all(b"set k 0 0 1000\r\n").unwrap();
    setup.write_all(&[b'v'; 1000]).unwrap();
    setup.write_all(b"\r\n").unwrap();
    let mut stored = [0u8; 8];
    setup.read_exact(&mut stored).unwrap();
    assert_eq!(&stored, b"STORED\r\n");
    std::thread::sleep(Duration::from_millis(200));
    let before_kb = proc_status_kb(child.0.id(), "VmRSS");
    let connections = 300;
    let gets = b"get k\r\n".repeat(5000);
    let open: Vec<TcpStream> = (0..connections)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(&gets).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let held_kb = proc_status_kb(child.0.id(), "VmRSS");
    let per_connection = held_kb.saturating_sub(before_kb) * 1024 / connections;
    assert!(
        per_connection < 256 * 1024,
        "{per_connection} bytes per connection that stopped reading ({before_kb} kB before, {held_kb} kB with {connections})"
    );
    // The server itself is not stuck: a client that reads is answered. Not at once here: this unoptimised
    // build is still working through the 1.5M gets the others sent (0.6-1.5 s after the sleep on a quiet
    // machine, over 5 s on a loaded one; a release build answers in 1 ms, as memcached does), so this
    // waits up to 60 s.
    assert_eq!(
        exchange_within(&addr, b"mn\r\nquit\r\n", Duration::from_secs(60)),
        "MN\r\n"
    );
    drop(open);
}

/// Large values arriving on many connections at once leave no heap behind once they are stored: two
/// bursts of 200 connections, each setting three 1 MB values into `-m 64`, leave the server under 85 MB
/// (measured: 75 MB in 3 of 3 runs; memcached 1.6.18: 70 MB). Each value is read into a buffer of its
/// size. glibc's malloc took those from mappings of their own only until the first was freed, then raised
/// its threshold and served the later ones from heap arenas whose freed pages stay resident, beside a
/// store that had meanwhile filled its budget (found by session 32's memory audit). Without the fixed
/// threshold (`main.rs`, `keep_large_buffers_out_of_the_heap`) this test fails: 100-198 MB in 4 of 4 runs.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn concurrent_large_sets_leave_no_heap_behind() {
    let (child, addr) = start(&["-m", "64", "-t", "2"]);
    let value = vec![b'v'; 1_000_000];
    let mut replies = Vec::new();
    for burst in 0..2 {
        replies.extend(std::thread::scope(|scope| {
            let workers: Vec<_> = (0..200)
                .map(|i| {
                    let (addr, value) = (&addr, &value);
                    scope.spawn(move || set_large_values(addr, &format!("b{burst}_{i}"), value, 3))
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let stored = replies.iter().filter(|r| *r == "STORED").count();
    assert!(
        replies
            .iter()
            .all(|r| r == "STORED" || r == "SERVER_ERROR out of memory storing object"),
        "{replies:?}"
    );
    assert!(stored >= 600, "most sets are stored: {stored} of 1,200");
    std::thread::sleep(Duration::from_secs(1));
    let rss_kb = proc_status_kb(child.0.id(), "VmRSS");
    assert!(
        rss_kb < 85 * 1024,
        "{rss_kb} kB resident after 1,200 sets of 1 MB into -m 64 ({stored} stored)"
    );
}

/// Sets `count` keys `{prefix}_{n}` to `value` on a connection of its own, one after another, and returns
/// the reply lines.
fn set_large_values(addr: &str, prefix: &str, value: &[u8], count: usize) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    (0..count)
        .map(|n| {
            s.write_all(format!("set {prefix}_{n} 0 0 {}\r\n", value.len()).as_bytes())
                .unwrap();
            s.write_all(value).unwrap();
            s.write_all(b"\r\n").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            line.trim_end().to_string()
        })
        .collect()
}

/// Buffers that grew for one large value or reply are given back when the connection goes quiet: 200
/// connections that each stored a 1 MB value, read a 2 MB multi-get and appended to a 1 MB value (text
/// and meta), one after another, then stay open and idle, leave the server under 48 MB (measured with a
/// text append: 18 MB; memcached 1.6.18: 12 MB). When each connection kept its grown read and write buffers this was 585 MB,
/// and with only the append copy kept 243 MB; either way this test fails.
#[cfg(target_os = "linux")]
#[test]
fn idle_connections_give_back_buffers_grown_for_large_values() {
    let (child, addr) = start(&["-m", "64"]);
    let value = vec![b'v'; 1_000_000];
    let mut setup = TcpStream::connect(&addr).unwrap();
    for key in ["k0", "k1", "k2"] {
        setup
            .write_all(format!("set {key} 0 0 1000000\r\n").as_bytes())
            .unwrap();
        setup.write_all(&value).unwrap();
        setup.write_all(b"\r\n").unwrap();
        let mut stored = [0u8; 8];
        setup.read_exact(&mut stored).unwrap();
        assert_eq!(&stored, b"STORED\r\n");
    }
    let mut open = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("set k{} 0 0 1000000\r\n", i % 2).as_bytes())
            .unwrap();
        s.write_all(&value).unwrap();
        // And the append and meta-append copy buffer, grown to k2's size.
        s.write_all(b"\r\nget k0 k1\r\nappend k2 0 0 1\r\na\r\nms k2 1 MA\r\nb\r\n")
            .unwrap();
        let want = 8 + 2 * (b"VALUE k0 0 1000000\r\n".len() + 1_000_002) + 5 + 8 + 4;
        let mut reply = vec![0u8; want];
        s.read_exact(&mut reply).unwrap();
        assert!(
            reply.starts_with(b"STORED\r\nVALUE k0 0 1000000\r\n")
                && reply.ends_with(b"END\r\nSTORED\r\nHD\r\n")
        );
        open.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_kb = proc_status_kb(child.0.id(), "VmRSS");
    assert!(
        rss_kb / 1024 < 48,
        "{} MB resident with 200 idle connections",
        rss_kb / 1024
    );
}

/// Values still arriving are held within `-m`, as memcached holds them in the item it allocates first.
/// 200 connections each start a 1 MB `set` and send half of it; with `-m 32` the server stays under 64 MB
/// (measured: 28 MB; memcached 1.6.18: 41 MB). Before, each connection buffered its half outside the
/// budget: 107 MB here, and `-c` x `-I` at worst; with that code this test fails on the resident size.
/// Sets the store cannot make room for get memcached's `SERVER_ERROR out of memory storing object` (none
/// with `noreply`; always for `ms`), and the rest of their data block is swallowed, so the same connection
/// answers its next request; the others are stored once complete, and the room is given back.
#[cfg(target_os = "linux")]
#[test]
fn values_still_arriving_are_held_within_the_memory_limit() {
    let (child, addr) = start(&["-m", "32"]);
    let half = vec![b'h'; 500_000];
    let mut open = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("set k{i} 0 0 1000000\r\n").as_bytes())
            .unwrap();
        s.write_all(&half).unwrap();
        open.push(s);
    }
    // The halves fit in the sockets' buffers, so the writes above return before the server has read
    // them: wait until it has.
    poll_for(Duration::from_secs(20), || {
        let read = stat(&addr, "bytes_read");
        (read >= 200 * half.len() as u64)
            .then_some(())
            .ok_or_else(|| format!("the server did not read the halves: {read} bytes read"))
    });
    let rss_kb = proc_status_kb(child.0.id(), "VmRSS");
    assert!(
        rss_kb / 1024 < 64,
        "{} MB resident with 200 half-sent 1 MB values and -m 32",
        rss_kb / 1024
    );

    // Every shard's room is held now: a new large set is refused at once, silently with noreply.
    let mut late = TcpStream::connect(&addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    late.write_all(b"set late 0 0 1000000 noreply\r\n").unwrap();
    late.write_all(&half).unwrap();
    late.write_all(&half).unwrap();
    late.write_all(b"\r\nms late2 1000000 T0\r\n").unwrap();
    late.write_all(&half).unwrap();
    let mut refused = vec![0u8; OUT_OF_MEMORY.len()];
    late.read_exact(&mut refused).unwrap();
    assert_eq!(&refused[..], OUT_OF_MEMORY);
    late.write_all(&half).unwrap();
    late.write_all(b"\r\nget late late2\r\n").unwrap();
    let mut end = [0u8; 5];
    late.read_exact(&mut end).unwrap();
    assert_eq!(&end, b"END\r\n", "refused values were not stored");

    let (mut stored, mut out_of_memory) = (0, 0);
    for (i, s) in open.iter_mut().enumerate() {
        s.write_all(&half).unwrap();
        s.write_all(format!("\r\nget k{i}\r\n").as_bytes()).unwrap();
        let mut first = [0u8; 8];
        s.read_exact(&mut first).unwrap();
        if &first == b"STORED\r\n" {
            let header = format!("VALUE k{i} 0 1000000\r\n");
            let mut reply = vec![0u8; header.len() + 1_000_002 + 5];
            s.read_exact(&mut reply).unwrap();
            assert!(reply.starts_with(header.as_bytes()) && reply.ends_with(b"\r\nEND\r\n"));
            assert!(reply[header.len()..header.len() + 1_000_000]
                .iter()
                .all(|&b| b == b'h'));
            stored += 1;
        } else {
            let mut rest = vec![0u8; OUT_OF_MEMORY.len() - 8 + 5];
            s.read_exact(&mut rest).unwrap();
            assert_eq!(
                [&first[..], &rest[..]].concat(),
                [OUT_OF_MEMORY, b"END\r\n"].concat()
            );
            out_of_memory += 1;
        }
    }
    assert!(
        stored >= 8 && out_of_memory >= 100,
        "{stored} stored, {out_of_memory} refused"
    );
    let mut stats = TcpStream::connect(&addr).unwrap();
    stats.write_all(b"stats\r\n").unwrap();
    let mut text = String::new();
    BufReader::new(stats)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| l != "END")
        .for_each(|l| text.push_str(&(l + "\n")));
    assert!(text.contains("STAT reserved_bytes 0\n"), "{text}");
}

const OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory storing object\r\n";

/// A `stats` figure, read over a new connection.
fn stat(addr: &str, name: &str) -> u64 {
    let text = exchange(addr, b"stats\r\nquit\r\n");
    let prefix = format!("STAT {name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

/// A write flood over TCP stays within `-m`: four connections send 160 MB of `noreply` sets of 100 B to
/// 10 KB into `-m 16`, ten times the budget, while a fifth samples `stats`. `bytes` never exceeds
/// `limit_maxbytes` (peak 16,774,902 of 16,777,216), the node evicts (about 71,000 items), and its
/// resident size ends under the budget plus 16 MB (measured 24.4 MB). With `-m 1024`, where nothing
/// needs evicting, the same flood leaves 195 MB resident and the last check fails.
#[cfg(target_os = "linux")]
#[test]
fn a_write_flood_stays_within_the_memory_limit() {
    let (child, addr) = start(&["-m", "16"]);
    let limit = stat(&addr, "limit_maxbytes");
    assert_eq!(limit, 16 << 20);
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).unwrap();
                let mut next = common::xorshift(w + 1);
                let mut sent = 0usize;
                let mut batch = Vec::new();
                let mut i = 0u64;
                while sent < 40 << 20 {
                    // Log-uniform sizes, 100 B to 10 KB.
                    let len = (100.0 * 100f64.powf((next() % 1000) as f64 / 1000.0)) as usize;
                    batch.extend_from_slice(
                        format!("set w{w}k{i} 0 0 {len} noreply\r\n").as_bytes(),
                    );
                    batch.resize(batch.len() + len, b'v');
                    batch.extend_from_slice(b"\r\n");
                    sent += len;
                    i += 1;
                    if batch.len() > 256 << 10 {
                        s.write_all(&batch).unwrap();
                        batch.clear();
                    }
                }
                batch.extend_from_slice(b"mn\r\n");
                s.write_all(&batch).unwrap();
                let mut done = [0u8; 4];
                s.read_exact(&mut done).unwrap();
                assert_eq!(
                    &done, b"MN\r\n",
                    "writer {w}: the connection answers after its flood"
                );
            })
        })
        .collect();
    let mut peak = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        peak = peak.max(stat(&addr, "bytes"));
        std::thread::sleep(Duration::from_millis(20));
    }
    for w in writers {
        w.join().unwrap();
    }
    assert!(
        peak <= limit,
        "bytes reached {peak} during the flood, over limit_maxbytes {limit}"
    );
    assert!(
        stat(&addr, "evictions") > 0,
        "a flood ten times the budget evicts"
    );
    let rss_kb = proc_status_kb(child.0.id(), "VmRSS");
    assert!(
        rss_kb / 1024 < 16 + 16,
        "{} MB resident after 160 MB of sets into -m 16",
        rss_kb / 1024
    );
}

/// Room for a large value is held as its bytes arrive, not from its first line: 70 clients that send
/// `set bN 0 0 1000000` and nothing more evict none of 40,000 stored items of 1 KB with `-m 64`, as with
/// memcached 1.6.18. Each value is stored once the rest of it comes. When the whole value's room was held
/// from the line on, the 70 lines evicted 31,248 of the 40,000 and kept them out, and this test fails.
#[cfg(target_os = "linux")]
#[test]
fn a_value_line_without_its_data_evicts_nothing() {
    let (_child, addr) = start(&["-m", "64"]);
    let items = 40_000;
    let mut fill = noreply_sets("item", items, &[b'i'; 1000]);
    fill.extend_from_slice(b"quit\r\n");
    assert_eq!(exchange(&addr, &fill), "");
    assert_eq!(stat(&addr, "curr_items"), items as u64, "the items fit");
    let mut stalled: Vec<TcpStream> = (0..70)
        .map(|i| {
            let mut s = connect(&addr);
            s.write_all(format!("set b{i} 0 0 1000000\r\n").as_bytes())
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stat(&addr, "evictions"),
        0,
        "lines without data evicted items"
    );
    assert_eq!(stat(&addr, "curr_items"), items as u64);
    // Three of them send their values after all: stored, evicting what a 1 MB item needs.
    let value = vec![b'b'; 1_000_000];
    for s in &mut stalled[..3] {
        s.write_all(&value).unwrap();
        s.write_all(b"\r\n").unwrap();
        let mut reply = [0u8; 8];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"STORED\r\n");
    }
    assert_eq!(
        stat(&addr, "curr_items"),
        (items - stat(&addr, "evictions") as usize + 3) as u64
    );
}

/// `-c` connections can be open at once even when the server is started under a lower open-files limit
/// (1024 is a common default; 256 here): it raises its own limit, as memcached does. 600 connections with
/// `-c 1000` are all served. Without the raise, the connections past about 250 wait in the listen backlog
/// (accept fails with EMFILE) and this test fails on the first of them.
#[cfg(target_os = "linux")]
#[test]
fn connections_up_to_the_limit_are_served_under_a_low_open_files_limit() {
    let mut child = start_under_open_files_limit(&["-c", "1000"], 256);
    let addr = listening_address(&mut child);
    let _open = connect_and_ask_version(&addr, 600);
}

/// The raise counts the descriptors of `-t` threads too: each connection thread runs its own runtime
/// (an epoll, an eventfd, a timer). With `-c 300 -t 64` under a limit of 256, all 300 connections are
/// answered and the next one is refused with memcached's line. With the fixed allowance of 64 before
/// session 31 the server raised its limit to 364 while holding about 268 descriptors idle, and this
/// test failed at about the 96th connection (it got no reply).
#[cfg(target_os = "linux")]
#[test]
fn the_open_files_raise_counts_every_thread() {
    raise_open_files_limit();
    let mut child = start_under_open_files_limit(&["-c", "300", "-t", "64"], 256);
    let addr = listening_address(&mut child);
    let _open = connect_and_ask_version(&addr, 300);
    let mut over = connect(&addr);
    let mut reply = String::new();
    over.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ERROR Too many open connections\r\n");
}

/// The server with `args`, started under a soft open-files limit of `soft` (hard 4096).
#[cfg(target_os = "linux")]
fn start_under_open_files_limit(args: &[&str], soft: libc::rlim_t) -> KillOnDrop {
    use std::os::unix::process::CommandExt;
    let mut command = server_command(args);
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: 4096,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    KillOnDrop(command.spawn().unwrap())
}

/// Opens `n` connections to `addr`, each answered `version`, and keeps them open.
fn connect_and_ask_version(addr: &str, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for i in 0..n {
        let mut s = connect(addr);
        s.write_all(b"version\r\n").unwrap();
        let mut reply = [0u8; 8];
        s.read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("connection {i} got no reply: {e}"));
        assert_eq!(&reply, b"VERSION ");
        open.push(s);
    }
    open
}

/// Raises this process's open-files limit to its hard limit: the client side of a test with thousands
/// of connections needs a descriptor per connection too.
#[cfg(target_os = "linux")]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// An idle connection holds no buffers: they are taken from a per-thread list when it has something to
/// read and handed back once its replies are out. 2,000 connections, idle and then after one `set` and
/// one `get` each, cost under 4 KiB of resident memory apiece (measured with `tools/conn_memory.py`: 1.58
/// KB idle, 1.70 KB after a request; memcached 1.6.18: 0.64 and 1.19 KB). When each connection kept its
/// 16 KiB read and write buffers from the start this was 9.6 KB, and this test fails.
#[cfg(target_os = "linux")]
#[test]
fn idle_connections_hold_no_buffers() {
    raise_open_files_limit();
    let connections = 2000;
    let (child, addr) = start(&["-c", "4000"]);
    let before_kb = proc_status_kb(child.0.id(), "VmRSS");
    let mut open: Vec<TcpStream> = (0..connections)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // Measured once the server has taken every connection (and the one asking).
    poll_for(Duration::from_secs(20), || {
        let taken = stat(&addr, "curr_connections");
        (taken > connections)
            .then_some(())
            .ok_or_else(|| format!("the server did not take every connection: {taken} open"))
    });
    let idle_kb = proc_status_kb(child.0.id(), "VmRSS");
    for (i, s) in open.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(format!("set k{i} 0 0 5\r\nhello\r\nget k{i}\r\n").as_bytes())
            .unwrap();
    }
    for (i, s) in open.iter_mut().enumerate() {
        let want = format!("STORED\r\nVALUE k{i} 0 5\r\nhello\r\nEND\r\n");
        let mut reply = vec![0u8; want.len()];
        s.read_exact(&mut reply).unwrap();
        assert_eq!(reply, want.as_bytes());
    }
    std::thread::sleep(Duration::from_millis(300));
    let used_kb = proc_status_kb(child.0.id(), "VmRSS");
    for (state, kb) in [("idle", idle_kb), ("after a request each", used_kb)] {
        let per_connection = kb.saturating_sub(before_kb) * 1024 / connections;
        assert!(
            per_connection < 4096,
            "{per_connection} bytes per connection, {state} ({before_kb} kB before, {kb} kB with {connections})"
        );
    }
}

/// The load generator's cache-aside mode (`mcload --read-through --sizes MIN:MAX`, what `mcbench
/// --read-through-sizes` runs): every request a get, a miss followed by a set of the key's own size.
/// With 300 keys in 64 MiB and one connection (two could both miss a key before either sets it)
/// each key misses at most once, the keys it set hold values of sizes that differ and lie in the
/// range, and a range upside down is refused.
#[test]
fn mcload_reads_through_with_sizes_per_key() {
    const MCLOAD: &str = env!("CARGO_BIN_EXE_mcload");
    let (_child, addr) = start(&["-m", "64"]);
    let out = Command::new(MCLOAD)
        .args([
            "--addr",
            &addr,
            "--connections",
            "1",
            "--threads",
            "1",
            "--keys",
            "300",
        ])
        .args(["--read-through", "--sizes", "100:2000"])
        .args(["--warmup-secs", "0", "--duration-secs", "0.5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("errors"), 0, "{line}");
    assert!(field("misses") > 0 && field("misses") <= 300, "{line}");
    assert!(field("hits") > field("misses"), "{line}");
    // mcload's keys: "key:" padded with zeros to 32 bytes, then the index.
    let mut request = Vec::new();
    for i in 0..20 {
        request.extend_from_slice(format!("get key:{i:0>28}\r\n").as_bytes());
    }
    request.extend_from_slice(b"quit\r\n");
    let reply = exchange(&addr, &request);
    let sizes: Vec<usize> = reply
        .lines()
        .filter_map(|l| l.strip_prefix("VALUE ")?.split(' ').nth(2)?.parse().ok())
        .collect();
    assert!(sizes.len() >= 15, "{reply}");
    assert!(sizes.iter().all(|s| (100..=2000).contains(s)), "{sizes:?}");
    assert!(sizes.iter().any(|&s| s != sizes[0]), "{sizes:?}");
    let refused = Command::new(MCLOAD)
        .args(["--addr", &addr, "--read-through", "--sizes", "2000:100"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("MIN <= MAX"));
}
