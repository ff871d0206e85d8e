//! A MariaDB server (Debian's `mariadbd`) run as a local process on a loopback port.
//!
//! The primary is configured for the pipeline (row-based binlog with full images and metadata, annotated
//! row events, GTID strict mode); a replica follows it with real GTID replication and an optional
//! `MASTER_DELAY`. Data directories are copied from one `mariadb-install-db` template per machine, so a
//! stack starts in seconds. Durability is relaxed (`sync_binlog=0`, `innodb_flush_log_at_trx_commit=2`):
//! these servers exist for tests and demos on a shared machine, and are stopped cleanly before a restart.
//! This module does not apply the demo schema; `stack` does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::process::{log_tail, ProcessSlot, ServiceProcess};
use crate::StackError;

/// How one MariaDB server is set up.
#[derive(Debug, Clone)]
pub struct MariaDbConfig {
    /// Name in messages and folder name, e.g. "primary" or "replica-eu".
    pub name: String,
    /// The replication server id, unique in the topology.
    pub server_id: u32,
    /// The loopback port to listen on.
    pub port: u16,
    /// How long the server may take to accept connections.
    pub startup_timeout: Duration,
    /// Options added after the standard ones (a later option overrides an earlier one).
    pub extra_options: Vec<String>,
}

/// A running (or stopped, restartable) MariaDB server. Dropping it kills the process.
#[derive(Debug)]
pub struct MariaDb {
    /// What it was started with; reused by `start` after `stop`.
    config: MariaDbConfig,
    /// Its folder: `data/`, `tmp/` (its `--tmpdir`), `error.log`, the socket and the pid file.
    dir: PathBuf,
    /// The root password over TCP (random per stack; never logged by the harness).
    password: String,
    /// The server binary.
    mariadbd: PathBuf,
    /// The running process, `None` while stopped.
    process: ProcessSlot,
}

impl MariaDb {
    /// Creates the data directory from the template and starts the server.
    pub(crate) async fn create(
        config: MariaDbConfig,
        parent: &Path,
        template: &Path,
        mariadbd: PathBuf,
        password: String,
    ) -> Result<Self, StackError> {
        let dir = parent.join(&config.name);
        copy_dir(template, &dir.join("data"))?;
        let server = Self {
            config,
            dir,
            password,
            mariadbd,
            process: ProcessSlot::default(),
        };
        server.start().await?;
        // The template's root has no password: give it one, outside the binlog so replicas do not
        // replay it over their own.
        let mut conn = server.connect_with("").await?;
        let pw = escape(&server.password);
        conn.query_drop(format!(
            "SET sql_log_bin=0; \
             ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
             ALTER USER 'root'@'localhost' IDENTIFIED BY '{pw}'; \
             FLUSH PRIVILEGES; SET sql_log_bin=1"
        ))
        .await
        .map_err(|e| server.sql_error("set the root password", e))?;
        conn.disconnect().await.ok();
        Ok(server)
    }

    /// Starts the server process (after `create` or `stop`) and waits until it accepts connections.
    pub async fn start(&self) -> Result<(), StackError> {
        if self.process.is_running() {
            return Ok(());
        }
        let log = self.dir.join("mariadbd.log");
        let tmpdir = self.tmp_dir();
        std::fs::create_dir_all(&tmpdir).map_err(|source| StackError::Io {
            what: format!("create {}", tmpdir.display()),
            source,
        })?;
        let process = ServiceProcess::spawn(
            &format!("mariadb {}", self.config.name),
            &self.mariadbd,
            &self.args(),
            &log,
            &[],
        )?;
        self.process.put(process);
        self.wait_ready().await
    }

    /// Stops the server cleanly (SIGTERM, then SIGKILL after 60 s). The data directory stays.
    pub fn stop(&self) {
        self.process.stop(libc::SIGTERM, Duration::from_secs(60));
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        self.process.stop(libc::SIGKILL, Duration::from_secs(5));
    }

    /// `stop` then `start`, on the same port and data directory.
    pub async fn restart(&self) -> Result<(), StackError> {
        self.stop();
        self.start().await
    }

    /// `mysql://root:PASSWORD@127.0.0.1:PORT` (no database selected).
    pub fn url(&self) -> String {
        format!(
            "mysql://root:{}@127.0.0.1:{}",
            self.password, self.config.port
        )
    }

    /// The root password (for tests that build their own URLs or check that it is never logged).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// Its name in messages ("primary", "replica-eu").
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The replication server id.
    pub fn server_id(&self) -> u32 {
        self.config.server_id
    }

    /// The data directory (binlogs live here as `binlog.NNNNNN`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's own folder for temporary tables and files (`--tmpdir`).
    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// The server's error log.
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the server runs, stopped, or exited by itself (then with its status).
    pub fn state(&self) -> String {
        self.process.state()
    }

    /// A new connection as root.
    pub async fn connect(&self) -> Result<mysql_async::Conn, StackError> {
        self.connect_with(&self.password).await
    }

    /// Runs statements (several separated by `;` are fine) as root and discards results.
    pub async fn execute(&self, sql: &str) -> Result<(), StackError> {
        let mut conn = self.connect().await?;
        conn.query_drop(sql)
            .await
            .map_err(|e| self.sql_error(sql, e))?;
        conn.disconnect().await.ok();
        Ok(())
    }

    /// Runs one query as root and returns its rows as optional strings.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, StackError> {
        let mut conn = self.connect().await?;
        let rows: Vec<mysql_async::Row> =
            conn.query(sql).await.map_err(|e| self.sql_error(sql, e))?;
        conn.disconnect().await.ok();
        Ok(rows
            .into_iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| match row.as_ref(i) {
                        Some(mysql_async::Value::NULL) | None => None,
                        Some(mysql_async::Value::Bytes(b)) => {
                            Some(String::from_utf8_lossy(b).into_owned())
                        }
                        Some(v) => Some(v.as_sql(true).trim_matches('\'').to_string()),
                    })
                    .collect()
            })
            .collect())
    }

    /// Wraps a server error with the statement's purpose and the log to read.
    pub(crate) fn sql_error(&self, what: &str, source: mysql_async::Error) -> StackError {
        StackError::Sql {
            service: format!("mariadb {}", self.config.name),
            what: what.chars().take(200).collect(),
            message: source.to_string(),
            log: self.error_log(),
        }
    }

    async fn connect_with(&self, password: &str) -> Result<mysql_async::Conn, StackError> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.config.port)
            .user(Some("root"))
            .pass(Some(password))
            .prefer_socket(false);
        // A connection never hangs the harness: a server that does not answer in time is an error.
        match tokio::time::timeout(Duration::from_secs(30), mysql_async::Conn::new(opts)).await {
            Ok(result) => result.map_err(|e| self.sql_error("connect as root", e)),
            Err(_) => Err(StackError::Sql {
                service: format!("mariadb {}", self.config.name),
                what: "connect as root".into(),
                message: "no answer within 30 s".into(),
                log: self.error_log(),
            }),
        }
    }

    fn args(&self) -> Vec<String> {
        let d = self.dir.display();
        let c = &self.config;
        let mut args: Vec<String> = vec![
            "--no-defaults".into(),
            format!("--datadir={d}/data"),
            format!("--socket={d}/mysqld.sock"),
            format!("--pid-file={d}/mysqld.pid"),
            format!("--log-error={d}/error.log"),
            // Its own: at start-up mariadbd deletes every `#sql*` file in its tmpdir, whoever's it
            // is. In a shared TMPDIR a server starting removed the files of another's internal
            // temporary table between their creation and opening, and 10.11 then crashes (signal 11
            // in ha_maria::drop_table, from an information_schema query of `squeal check`).
            format!("--tmpdir={}", self.tmp_dir().display()),
            format!("--port={}", c.port),
            "--bind-address=127.0.0.1".into(),
            "--user=root".into(),
            "--skip-name-resolve".into(),
            format!("--server-id={}", c.server_id),
            format!("--log-bin={d}/data/binlog"),
            "--log-slave-updates=ON".into(),
            "--binlog-format=ROW".into(),
            "--binlog-row-image=FULL".into(),
            "--binlog-row-metadata=FULL".into(),
            "--binlog-annotate-row-events=ON".into(),
            "--gtid-strict-mode=ON".into(),
            "--sync-binlog=0".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--innodb-buffer-pool-size=128M".into(),
            "--max-connections=500".into(),
            "--max-allowed-packet=64M".into(),
        ];
        if c.name != "primary" {
            args.push("--read-only=ON".into());
        }
        args.extend(c.extra_options.iter().cloned());
        args
    }

    async fn wait_ready(&self) -> Result<(), StackError> {
        let started = Instant::now();
        let timeout = self.config.startup_timeout;
        loop {
            if let Err(exited) = self.process.check_alive() {
                // mariadbd writes its reasons (a port in use, a bad option) to the error log.
                return Err(match exited {
                    StackError::Exited {
                        service, status, ..
                    } => StackError::Exited {
                        service,
                        status,
                        log: self.error_log(),
                        tail: log_tail(&self.error_log(), 1500),
                    },
                    other => other,
                });
            }
            let port = self.config.port;
            if tokio::task::spawn_blocking(move || greets(port))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if started.elapsed() > timeout {
                self.process.stop(libc::SIGKILL, Duration::from_secs(5));
                return Err(StackError::Timeout {
                    service: format!("mariadb {}", self.config.name),
                    waited: timeout,
                    log: self.error_log(),
                    tail: log_tail(&self.error_log(), 1500),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// True when whatever listens on 127.0.0.1:`port` sends a MySQL protocol-10 greeting. A bare TCP
/// connect is not enough: another program holding the port would look like a server that never answers.
fn greets(port: u16) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
    else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    let mut header = [0u8; 5];
    // 3-byte length, 1-byte sequence id, then the protocol version of the handshake packet.
    stream.read_exact(&mut header).is_ok() && header[4] == 10
}

/// Quotes a value for a single-quoted SQL string literal.
pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''")
}

/// Makes (once per machine and MariaDB version) a fresh data directory to copy from.
pub(crate) fn template(install_db: &Path, mariadbd: &Path) -> Result<PathBuf, StackError> {
    let version = std::process::Command::new(mariadbd)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let tag: u64 = version.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    // SAFETY: getuid has no failure mode.
    let uid = unsafe { libc::getuid() };
    let root = std::env::temp_dir().join(format!("squeal-mariadb-template-{uid}-{tag:016x}"));
    if root.join("complete").exists() {
        return Ok(root.join("data"));
    }
    // One builder at a time, in this process (tests run in parallel threads) and across processes
    // (an exclusive lock file): concurrent bootstraps in one TMPDIR fail at random.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _in_process = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let lock_path = std::env::temp_dir().join(format!("squeal-mariadb-template-{uid}.lock"));
    let lock_file = std::fs::File::create(&lock_path).map_err(|source| StackError::Io {
        what: format!("create {}", lock_path.display()),
        source,
    })?;
    // SAFETY: flock(2) on a file descriptor we own; released when `lock_file` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock_file), libc::LOCK_EX) } != 0 {
        return Err(StackError::Io {
            what: format!("lock {}", lock_path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    if root.join("complete").exists() {
        return Ok(root.join("data"));
    }
    // Build in a private folder, then rename into place: concurrent test processes never see half a template.
    let building = tempfile::Builder::new()
        .prefix("squeal-mariadb-template-building-")
        .tempdir()
        .map_err(|source| StackError::Io {
            what: "create a temporary folder".into(),
            source,
        })?;
    let log = building.path().join("install.log");
    let output = std::process::Command::new(install_db)
        .arg("--no-defaults")
        .arg(format!(
            "--datadir={}",
            building.path().join("data").display()
        ))
        .arg("--auth-root-authentication-method=normal")
        .arg(format!("--tmpdir={}", building.path().display()))
        .arg("--skip-test-db")
        .arg("--user=root")
        .output()
        .map_err(|source| StackError::Io {
            what: format!("run {}", install_db.display()),
            source,
        })?;
    std::fs::write(
        &log,
        [output.stdout.as_slice(), output.stderr.as_slice()].concat(),
    )
    .ok();
    if !output.status.success() {
        let kept = building.keep();
        return Err(StackError::Exited {
            service: "mariadb-install-db".into(),
            status: output.status.to_string(),
            log: kept.join("install.log"),
            tail: String::from_utf8_lossy(&output.stderr)
                .chars()
                .take(1500)
                .collect(),
        });
    }
    std::fs::write(building.path().join("complete"), version).ok();
    let built = building.keep();
    if std::fs::rename(&built, &root).is_err() {
        // Another process won the race; use its template.
        std::fs::remove_dir_all(&built).ok();
    }
    Ok(root.join("data"))
}

/// Recursive copy of a data directory (regular files and folders only).
fn copy_dir(from: &Path, to: &Path) -> Result<(), StackError> {
    let io = |what: String| move |source| StackError::Io { what, source };
    std::fs::create_dir_all(to).map_err(io(format!("create {}", to.display())))?;
    for entry in std::fs::read_dir(from).map_err(io(format!("read {}", from.display())))? {
        let entry = entry.map_err(io(format!("read {}", from.display())))?;
        let target = to.join(entry.file_name());
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(io(format!("copy to {}", target.display())))?;
        }
    }
    Ok(())
}
