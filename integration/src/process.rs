//! Child processes owned by the harness: spawned with their output in a log file, stopped on drop.
//!
//! Every service child is started from one long-lived spawner thread with `PR_SET_PDEATHSIG`, so that
//! it is killed by the kernel even when the test process itself dies without running destructors
//! (a panic with `panic=abort`, a SIGKILL from a CI timeout). The death signal follows the *thread*
//! that forked the child, which is why the spawner thread lives as long as the process.
//! This module does not know what the children are; `mariadb` and `kafka` do.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::StackError;

/// A request to the spawner thread: the command to start and where to send the outcome.
type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The channel to the process-lifetime spawner thread.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("stack-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawn the stack-spawner thread");
        Mutex::new(tx)
    })
}

/// A running service process. Dropping it kills the process (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct ServiceProcess {
    /// Short name used in messages ("mariadb primary", "kafka").
    name: String,
    /// The child; `None` once it has been stopped and reaped.
    child: Option<Child>,
    /// Where stdout and stderr go, named in every error about this process.
    log_path: PathBuf,
}

impl ServiceProcess {
    /// Starts `program` with `args`, appending its stdout and stderr to `log_path`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_path: &Path,
        envs: &[(&str, String)],
    ) -> Result<Self, StackError> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|source| StackError::Io {
                what: format!("open log file {}", log_path.display()),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| StackError::Io {
            what: "duplicate log file handle".into(),
            source,
        })?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        for (key, value) in envs {
            command.env(key, value);
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // Own process group, so a terminal's Ctrl-C goes to the harness, which then stops us in order.
                libc::setpgid(0, 0);
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .expect("spawner lock")
            .send((command, reply_tx))
            .expect("spawner thread alive");
        let child = reply_rx
            .recv()
            .expect("spawner replies")
            .map_err(|source| StackError::Io {
                what: format!("start {name} ({})", program.display()),
                source,
            })?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            log_path: log_path.to_path_buf(),
        })
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Returns an error naming the log when the process has already exited.
    pub fn check_alive(&mut self) -> Result<(), StackError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(StackError::Exited {
                    service: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_path.clone(),
                    tail: log_tail(&self.log_path, 1500),
                });
            }
        }
        Ok(())
    }

    /// Sends `signal`, waits up to `grace` for the exit, then SIGKILLs. Idempotent.
    pub fn stop(&mut self, signal: libc::c_int, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.stop(libc::SIGKILL, Duration::from_secs(5));
    }
}

/// The last `max_bytes` of a log file, for error messages.
pub fn log_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// A loopback port for a service to listen on: free a moment ago (bound, then released), below the
/// kernel's ephemeral range, and not handed out before by this process.
///
/// Port 0 would give a port from the ephemeral range, where every outgoing connection (a test's
/// clients of MariaDB and Kafka, the services' own) also takes its local port: between this call and
/// the service's bind, one could take it, and the service then failed to start ("Address already in
/// use", seen with seven stacks starting at once in one test binary). Below the range only listeners
/// compete, and within this process none is handed the same port twice.
pub fn free_port() -> Result<u16, StackError> {
    use rand::Rng;
    static HANDED_OUT: OnceLock<Mutex<std::collections::HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(Default::default);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.max(10_001));
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(low..high);
        let mut taken = handed_out.lock().expect("port set lock");
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return Ok(port);
        }
    }
    Err(StackError::Io {
        what: format!("find a free loopback port in {low}..{high}"),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

/// True when a TCP connection to 127.0.0.1:`port` succeeds.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The process of a restartable service: empty while the service is stopped.
#[derive(Debug, Default)]
pub struct ProcessSlot(Mutex<Option<ServiceProcess>>);

impl ProcessSlot {
    /// True while a process is in the slot.
    pub fn is_running(&self) -> bool {
        self.0.lock().expect("process slot lock").is_some()
    }

    /// Puts a freshly started process in the slot.
    pub fn put(&self, process: ServiceProcess) {
        *self.0.lock().expect("process slot lock") = Some(process);
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.0
            .lock()
            .expect("process slot lock")
            .as_ref()
            .and_then(ServiceProcess::pid)
    }

    /// Stops the process (`signal`, then SIGKILL after `grace`) and empties the slot. Idempotent.
    pub fn stop(&self, signal: libc::c_int, grace: Duration) {
        if let Some(mut process) = self.0.lock().expect("process slot lock").take() {
            process.stop(signal, grace);
        }
    }

    /// What the slot holds, for a report after a failure: "running (pid N)", "exited by itself
    /// (STATUS)" (the slot is emptied, as `check_alive` does) or "stopped".
    pub fn state(&self) -> String {
        match self.check_alive() {
            Err(StackError::Exited { status, .. }) => format!("exited by itself ({status})"),
            Err(other) => format!("unknown ({other})"),
            Ok(()) => match self.pid() {
                Some(pid) => format!("running (pid {pid})"),
                None => "stopped".into(),
            },
        }
    }

    /// An error (and an empty slot) when the process has exited by itself.
    pub fn check_alive(&self) -> Result<(), StackError> {
        let mut slot = self.0.lock().expect("process slot lock");
        match slot.as_mut().map(ServiceProcess::check_alive) {
            Some(Err(exited)) => {
                *slot = None;
                Err(exited)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports for services come from below the ephemeral range (where outgoing connections take
    /// theirs) and never twice in one process, even while the earlier ones are released.
    #[test]
    fn free_ports_are_distinct_and_below_the_ephemeral_range() {
        let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        let ports: Vec<u16> = (0..300).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "a port handed out twice");
        assert!(ports.iter().all(|&p| p < start), "{ports:?} vs {start}");
    }
}
