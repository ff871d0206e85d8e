//! Shared pieces of squeal's end-to-end tests: run the real `squeal` binary against a real stack
//! (integration::Stack: MariaDB + Kafka) and read back what it published.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use invalidation::Record;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The env var the test configs name for the database password.
pub const PASSWORD_ENV: &str = "SQUEAL_TEST_DB_PASSWORD";

/// A squeal config for `stack`, writing to `topic`, with `rules` (TOML `[[rules]]` text).
pub fn config_text(
    port: u16,
    brokers: &str,
    topic: &str,
    checkpoint: &Path,
    rules: &str,
    extra_source: &str,
) -> String {
    format!(
        r#"
[source]
url = "mysql://root@127.0.0.1:{port}"
password_env = "{PASSWORD_ENV}"
server_id = 4242
start_from = "earliest"
reconnect_initial_backoff_ms = 50
reconnect_max_backoff_ms = 1000
heartbeat_ms = 500
{extra_source}

[kafka]
brokers = "{brokers}"
topic = "{topic}"

[checkpoint]
path = "{checkpoint}"
interval_ms = 50

[metrics]
address = "127.0.0.1:0"

{rules}
"#,
        checkpoint = checkpoint.display()
    )
}

/// A running `squeal` process; killed on drop.
pub struct Squeal {
    /// The child process.
    pub child: Child,
    /// Its combined stderr/stdout log.
    pub log: PathBuf,
}

impl Squeal {
    /// Starts `squeal run --config config` with the password in the environment.
    pub fn run(config: &Path, password: &str, log: &Path) -> std::io::Result<Squeal> {
        Self::spawn("run", config, password, log)
    }

    /// Starts `squeal <command> --config config`.
    pub fn spawn(
        command: &str,
        config: &Path,
        password: &str,
        log: &Path,
    ) -> std::io::Result<Squeal> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_squeal"))
            .args([command, "--config"])
            .arg(config)
            .env(PASSWORD_ENV, password)
            .env("RUST_LOG", "info,squeal=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Squeal {
            child,
            log: log.to_owned(),
        })
    }

    /// Runs `squeal check --config config` to its end (at most a minute); its exit status and log.
    pub fn check(
        config: &Path,
        password: &str,
        log: &Path,
    ) -> std::io::Result<(ExitStatus, String)> {
        Self::to_end("check", config, password, log)
    }

    /// Runs `squeal run --config config`, which the test expects to stop by itself, to its end (at
    /// most a minute); its exit status and log.
    pub fn run_to_end(
        config: &Path,
        password: &str,
        log: &Path,
    ) -> std::io::Result<(ExitStatus, String)> {
        Self::to_end("run", config, password, log)
    }

    fn to_end(
        command: &str,
        config: &Path,
        password: &str,
        log: &Path,
    ) -> std::io::Result<(ExitStatus, String)> {
        let mut squeal = Self::spawn(command, config, password, log)?;
        let status = squeal.wait_exit(Duration::from_secs(60));
        let text = squeal.log_text();
        let status =
            status.unwrap_or_else(|| panic!("squeal {command} still runs after 60 s:\n{text}"));
        Ok((status, text))
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }

    /// Sends `signal` to squeal unless it has exited. Once a `try_wait` has reaped it, its pid is
    /// free and may already be another test's server (pid_max is 32,768 here): a SIGTERM there
    /// would stop a MariaDB under a test that did nothing wrong. An exited child is only reaped
    /// here, so a pid `try_wait` finds running stays ours until the `kill`.
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own, unreaped child's pid has no memory effects.
            unsafe {
                libc::kill(self.child.id() as i32, signal);
            }
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Peak resident set size in KiB (Linux VmHWM), while running.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Squeal {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reads a topic from the beginning, in order.
pub struct TopicReader {
    consumer: StreamConsumer,
    /// Every record read so far.
    pub records: Vec<Record>,
}

impl TopicReader {
    /// A reader of `topic` from its first offset.
    pub fn new(
        brokers: &str,
        topic: &str,
    ) -> Result<TopicReader, Box<dyn std::error::Error + Send + Sync>> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("squeal-test-{}-{topic}", std::process::id()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(TopicReader {
            consumer,
            records: Vec::new(),
        })
    }

    /// Reads until `done(records)` holds or `timeout` passes; returns whether it held.
    pub async fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(&self.records) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match tokio::time::timeout(left.min(Duration::from_millis(500)), self.consumer.recv())
                .await
            {
                Ok(Ok(msg)) => {
                    let record = Record::from_json(msg.payload().unwrap_or_default())
                        .expect("a valid invalidation record");
                    self.records.push(record);
                }
                Ok(Err(e)) => panic!("consumer error: {e}"),
                Err(_) => {}
            }
        }
        true
    }

    /// Every key read so far.
    pub fn all_keys(&self) -> BTreeSet<String> {
        self.records
            .iter()
            .flat_map(|r| r.keys().map(str::to_owned))
            .collect()
    }
}

/// Cuts what squeal publishes into phases: each ends with a row in a markers table whose rule gives the
/// key `marker:{id}`; once that key is on the topic, everything committed before it has been published.
pub struct Phases {
    /// The topic, read from the start.
    pub reader: TopicReader,
    /// `db.table` of the markers.
    markers: String,
    /// Records of earlier phases (their markers included).
    consumed: usize,
    /// Id of the next marker row.
    next_marker: u32,
}

impl Phases {
    /// Phases over `reader`, with marker rows written to `markers` (`db.table`), ids from 1.
    pub fn new(reader: TopicReader, markers: &str) -> Phases {
        Phases {
            reader,
            markers: markers.to_owned(),
            consumed: 0,
            next_marker: 1,
        }
    }

    /// Writes the next marker and returns the records published since the previous one, and the
    /// marker's own record (its source position is the marker's commit).
    pub async fn end(&mut self, conn: &mut mysql_async::Conn) -> (Vec<Record>, Record) {
        use mysql_async::prelude::Queryable;
        let n = self.next_marker;
        self.next_marker += 1;
        conn.query_drop(format!("INSERT INTO {} VALUES ({n})", self.markers))
            .await
            .expect("marker insert");
        let marker = format!("marker:{n}");
        let seen = self
            .reader
            .read_until(Duration::from_secs(60), |r| has_key(r, &marker))
            .await;
        assert!(seen, "marker {n} never reached the topic");
        let at = self
            .reader
            .records
            .iter()
            .position(|r| r.keys().any(|k| k == marker))
            .expect("marker record");
        let out = self.reader.records[self.consumed..at].to_vec();
        self.consumed = at + 1;
        (out, self.reader.records[at].clone())
    }
}

/// True when some record carries `key`.
pub fn has_key(records: &[Record], key: &str) -> bool {
    records.iter().any(|r| r.keys().any(|k| k == key))
}

/// Polls until `f` holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ledger table the fault tests write to: every committed row must reach the topic.
pub const LEDGER_SETUP: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS squeal_test",
    "CREATE TABLE squeal_test.ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL)",
];

/// The rule for the ledger.
pub const LEDGER_RULES: &str = r#"
[[rules]]
table = "squeal_test.ledger"
keys = ["ledger:{id}"]
"#;

/// One scenario's squeal files, in a temporary folder: the config for a stack and topic, the
/// checkpoint it names, and the log the process writes.
pub struct Scenario {
    /// The folder; removed when the scenario is dropped.
    pub dir: tempfile::TempDir,
    /// `squeal.toml`.
    pub config: PathBuf,
    /// The checkpoint file the config names.
    pub checkpoint: PathBuf,
    /// Where `Squeal::run` is told to log.
    pub log: PathBuf,
    /// What the config is written from, kept for `write_config`.
    port: u16,
    brokers: String,
    topic: String,
    rules: String,
}

impl Scenario {
    /// Creates `topic` (with `partitions`) on `stack` and writes a config with `rules`.
    pub async fn new(
        stack: &integration::Stack,
        topic: &str,
        partitions: i32,
        rules: &str,
    ) -> Result<Scenario, Box<dyn std::error::Error + Send + Sync>> {
        stack.create_topic(topic, partitions).await?;
        Ok(Scenario::written(
            stack.primary().port(),
            stack.kafka().brokers(),
            topic,
            rules,
        )?)
    }

    /// A config for the database on `port` whose Kafka is unreachable (`127.0.0.1:1`), for runs and
    /// checks that stop before anything is published.
    pub fn offline(port: u16, rules: &str) -> std::io::Result<Scenario> {
        Scenario::written(port, "127.0.0.1:1".to_string(), "t", rules)
    }

    /// The files in a new temporary folder, with the config written for these settings.
    fn written(port: u16, brokers: String, topic: &str, rules: &str) -> std::io::Result<Scenario> {
        let dir = tempfile::tempdir()?;
        let scenario = Scenario {
            config: dir.path().join("squeal.toml"),
            checkpoint: dir.path().join("cp.json"),
            log: dir.path().join("squeal.log"),
            dir,
            port,
            brokers,
            topic: topic.to_string(),
            rules: rules.to_string(),
        };
        scenario.write_config("")?;
        Ok(scenario)
    }

    /// The config text with `from` replaced by `to` (a setting `write_config` cannot override).
    pub fn edit_config(&self, from: &str, to: &str) -> std::io::Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        assert!(text.contains(from), "{from:?} is not in the config");
        std::fs::write(&self.config, text.replace(from, to))
    }

    /// The ledger table on `stack`'s primary, and a scenario ruling it.
    pub async fn ledger(
        stack: &integration::Stack,
        topic: &str,
        partitions: i32,
    ) -> Result<Scenario, Box<dyn std::error::Error + Send + Sync>> {
        for sql in LEDGER_SETUP {
            stack.primary().execute(sql).await?;
        }
        Scenario::new(stack, topic, partitions, LEDGER_RULES).await
    }

    /// Rewrites the config with `extra_source` lines in its `[source]` table.
    pub fn write_config(&self, extra_source: &str) -> std::io::Result<()> {
        std::fs::write(
            &self.config,
            config_text(
                self.port,
                &self.brokers,
                &self.topic,
                &self.checkpoint,
                &self.rules,
                extra_source,
            ),
        )
    }
}

/// Writes small transactions (1–3 rows) to the ledger until `stop` is set; errors (a server
/// restarting) are waited out. Returns the number of statements that reported success.
pub fn spawn_ledger_writer(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pause: Duration,
) -> tokio::task::JoinHandle<u64> {
    use mysql_async::prelude::Queryable;
    tokio::spawn(async move {
        let mut ok = 0u64;
        let mut n = 0u64;
        let mut conn: Option<mysql_async::Conn> = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            if conn.is_none() {
                conn = mysql_async::Conn::from_url(url.as_str()).await.ok();
                if conn.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let rows = 1 + n % 3;
            let values: Vec<String> = (0..rows).map(|i| format!("({})", n * 10 + i)).collect();
            let sql = format!(
                "INSERT INTO squeal_test.ledger (v) VALUES {}",
                values.join(",")
            );
            match conn.as_mut().unwrap().query_drop(sql).await {
                Ok(()) => ok += 1,
                Err(_) => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            tokio::time::sleep(pause).await;
        }
        ok
    })
}

/// Keys the ledger's committed rows must have produced, from the primary's own table.
pub async fn ledger_keys(
    primary: &integration::MariaDb,
) -> Result<BTreeSet<String>, integration::StackError> {
    let rows = primary.query("SELECT id FROM squeal_test.ledger").await?;
    Ok(rows
        .into_iter()
        .map(|r| format!("ledger:{}", r[0].clone().unwrap_or_default()))
        .collect())
}

/// Reads the topic until every expected key was seen (or `timeout`); returns the missing ones.
pub async fn missing_after(
    reader: &mut TopicReader,
    expected: &BTreeSet<String>,
    timeout: Duration,
) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut scanned = 0;
    let deadline = Instant::now() + timeout;
    loop {
        for r in &reader.records[scanned..] {
            seen.extend(r.keys().map(str::to_owned));
        }
        scanned = reader.records.len();
        let missing: Vec<String> = expected.difference(&seen).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        let before = reader.records.len();
        reader
            .read_until(Duration::from_millis(500), |r| r.len() > before)
            .await;
    }
}

/// The checkpoint position, if any.
pub fn checkpoint_of(path: &Path) -> Option<(String, u64)> {
    squeal::checkpoint::load(path)
        .ok()
        .flatten()
        .map(|p| (p.file, p.pos))
}

/// The metrics address squeal logged (`metrics listening address=...`).
pub fn metrics_address(log: &str) -> Option<String> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("metrics listening"))?;
    let at = line.find("address=")? + "address=".len();
    let rest: String = line[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    Some(rest)
}

/// Fetches the Prometheus text from squeal's metrics endpoint.
pub async fn scrape(address: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(address).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut text = String::new();
    s.read_to_string(&mut text).await?;
    Ok(text)
}

/// The value of an unlabelled metric.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The README's key-safety rule, written out here rather than borrowed from squeal, so a test of
/// published keys checks squeal against the documentation: the bytes 0x00–0x20, 0x7F and `%`
/// become `%XX`.
pub fn key_safe(text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        if ch.is_ascii() && (ch as u8 <= 0x20 || ch as u8 == 0x7F || ch == '%') {
            out.push_str(&format!("%{:02X}", ch as u8));
        } else {
            out.push(ch);
        }
    }
    out
}

/// `(file, position)` of `server`'s binlog end (`SHOW MASTER STATUS`).
pub async fn master_position(
    server: &integration::MariaDb,
) -> Result<(String, u64), integration::StackError> {
    let row = server.query("SHOW MASTER STATUS").await?.remove(0);
    let file = row[0].clone().unwrap_or_default();
    let pos = row[1].clone().unwrap_or_default().parse().unwrap_or(0);
    Ok((file, pos))
}

/// Inserts ledger rows `ids` (see [`LEDGER_SETUP`]) one statement, and so one transaction, each.
pub async fn insert_ledger_ids(
    primary: &integration::MariaDb,
    ids: impl IntoIterator<Item = u32>,
) -> Result<(), integration::StackError> {
    for id in ids {
        primary
            .execute(&format!(
                "INSERT INTO squeal_test.ledger (id, v) VALUES ({id}, 1)"
            ))
            .await?;
    }
    Ok(())
}

/// The keys [`LEDGER_RULES`] give ledger rows `ids`.
pub fn ledger_keys_of(ids: impl IntoIterator<Item = u32>) -> BTreeSet<String> {
    ids.into_iter().map(|i| format!("ledger:{i}")).collect()
}
