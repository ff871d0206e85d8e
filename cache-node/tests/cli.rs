//! The `cache-node` binary: `--help`, the `replay` subcommand, and serving on a port given by flags.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

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

#[test]
fn replay_prints_hit_rate_with_two_decimals() {
    let dir = std::env::temp_dir().join(format!("cache-node-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.trace.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    // 1 2 1 2 1 2 at capacity 2: the first two miss, the other four hit.
    gz.write_all(b"1\n2\n1\n2\n1\n2\n").unwrap();
    gz.finish().unwrap();
    let out = Command::new(BIN)
        .args(["replay", "--trace"])
        .arg(&path)
        .args(["--capacity", "2"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "hit_rate=66.67"
    );
}

#[test]
fn binary_serves_with_memcached_flags() {
    // Port 0 lets the OS choose; the address is in the startup log.
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["-p", "0", "-t", "2", "-m", "8", "--lease-window-secs", "5"])
            .args(["--maintainer-sleep-us", "5000"])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut addr = None;
    for _ in 0..10 {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.split("listening on ").nth(1) {
            addr = Some(rest.trim().to_string());
            break;
        }
    }
    let addr = addr.expect("startup line with the address");
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"set k 0 0 2\r\nhi\r\nget k\r\nstats settings\r\nquit\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
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

/// Stops the server even when an assertion fails first, so no test leaves a process behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
