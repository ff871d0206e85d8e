//! Real-service harness for squeal's end-to-end tests and demos.
//!
//! [`Stack::start`] starts, as local processes on free loopback ports in a temporary folder:
//! a MariaDB primary configured for the pipeline (row binlog, full images and metadata, annotated row
//! events, GTID strict mode) with the demo schema of `migrations/` applied; one MariaDB replica per
//! remote region following it with real GTID replication (optionally delayed); and Apache Kafka 4.x in
//! KRaft mode. Dropping the stack stops every process it started; when the drop happens during a panic
//! (a failed test) the folder with every service log is kept and its path printed.
//!
//! Nothing here is a stand-in: no mock of MariaDB or Kafka exists in this crate. It does not start
//! squeal, cache nodes or invalidators; tests do that on top of a stack.
//!
//! ```no_run
//! # async fn demo() -> Result<(), integration::StackError> {
//! let stack = integration::Stack::start(integration::StackOptions::default().with_replica("eu", 0)).await?;
//! stack.primary().execute("INSERT INTO squeal_demo.users (email, name) VALUES ('a@x', 'A')").await?;
//! println!("{} {}", stack.replica("eu").unwrap().url(), stack.kafka().brokers());
//! # Ok(()) }
//! ```

mod kafka;
mod mariadb;
mod prereq;
mod process;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use kafka::Kafka;
pub use mariadb::MariaDb;
pub use prereq::{repo_root, Prerequisites, SETUP_HINT};
pub use process::free_port;

/// The database the demo schema lives in.
pub const DEMO_DATABASE: &str = "squeal_demo";

/// Everything that can go wrong while starting or driving the stack. Each names the piece and the log.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A program or file the stack needs is not on this machine.
    #[error("missing prerequisite: {piece}. To fix: {hint}")]
    Missing { piece: String, hint: String },
    /// A service process exited while starting.
    #[error("{service} exited during start-up ({status}); read its log: {log}\n--- last lines ---\n{tail}")]
    Exited {
        service: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// A service did not come up in time (it has been killed).
    #[error("{service} did not come up within {waited:?}; read its log: {log}\n--- last lines ---\n{tail}")]
    Timeout {
        service: String,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
    /// A statement failed on a server.
    #[error("{service}: {what}: {message} (server log: {log})")]
    Sql {
        service: String,
        what: String,
        message: String,
        log: PathBuf,
    },
    /// A Kafka admin or client call failed.
    #[error("kafka: {what}: {message} (broker log: {log})")]
    Kafka {
        what: String,
        message: String,
        log: PathBuf,
    },
    /// Replication did not catch up or stopped with an error.
    #[error("replication to {replica}: {message} (replica log: {log})")]
    Replication {
        replica: String,
        message: String,
        log: PathBuf,
    },
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One remote region's replica.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// The region's name ("eu"); the replica is reached with [`Stack::replica`].
    pub region: String,
    /// `MASTER_DELAY` in seconds: how far the replica stays behind, for staleness tests.
    pub delay_secs: u32,
}

/// What [`Stack::start`] starts.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Remote regions, each with its own replica of the primary.
    pub replicas: Vec<ReplicaOptions>,
    /// Start Kafka too (most tests need it; a database-only test can skip the JVM).
    pub kafka: bool,
    /// Apply `migrations/*.sql` to the primary.
    pub apply_migrations: bool,
    /// A fixed port for the primary instead of a free one (tests of the "port in use" error use it).
    pub primary_port: Option<u16>,
    /// How long each MariaDB server may take to accept connections.
    pub mariadb_startup_timeout: Duration,
    /// How long Kafka may take to answer a metadata request.
    pub kafka_startup_timeout: Duration,
    /// Extra `mariadbd` options for the primary (e.g. `--lower-case-table-names=1`), kept across
    /// restarts.
    pub primary_options: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            replicas: Vec::new(),
            kafka: true,
            apply_migrations: true,
            primary_port: None,
            mariadb_startup_timeout: Duration::from_secs(60),
            kafka_startup_timeout: Duration::from_secs(120),
            primary_options: Vec::new(),
        }
    }
}

impl StackOptions {
    /// Adds a replica for `region`, `delay_secs` behind the primary.
    pub fn with_replica(mut self, region: &str, delay_secs: u32) -> Self {
        self.replicas.push(ReplicaOptions {
            region: region.to_string(),
            delay_secs,
        });
        self
    }

    /// Without Kafka.
    pub fn without_kafka(mut self) -> Self {
        self.kafka = false;
        self
    }

    /// The primary runs with this extra `mariadbd` option, e.g. `--lower-case-table-names=1`.
    pub fn with_primary_option(mut self, option: &str) -> Self {
        self.primary_options.push(option.to_owned());
        self
    }
}

/// The running services. Dropping it stops them all.
#[derive(Debug)]
pub struct Stack {
    // Field order is drop order: services stop before their folder is removed.
    /// The primary every write goes to and squeal reads the binlog of.
    primary: MariaDb,
    /// Replicas by region name.
    replicas: Vec<(String, MariaDb)>,
    /// The broker, when asked for.
    kafka: Option<Kafka>,
    /// The folder holding every data directory and log; removed on drop unless kept.
    dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// Starts the services in `options`; on any failure, stops what did start and returns why.
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        let (mariadbd, install_db) = Prerequisites::find_mariadb()?;
        let kafka_prereq = if options.kafka {
            let p = Prerequisites::find()?;
            Some((p.java, p.kafka_libs))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("squeal-stack-")
            .tempdir()
            .map_err(|source| StackError::Io {
                what: "create the stack folder".into(),
                source,
            })?;
        let result = Self::start_in(&dir, &options, mariadbd, install_db, kafka_prereq).await;
        match result {
            Ok((primary, replicas, kafka)) => Ok(Self {
                primary,
                replicas,
                kafka,
                dir: Some(dir),
            }),
            Err(error) => {
                // Keep the logs the error names.
                let kept = dir.keep();
                tracing::warn!(folder = %kept.display(), "stack failed to start; logs kept");
                Err(error)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    async fn start_in(
        dir: &tempfile::TempDir,
        options: &StackOptions,
        mariadbd: PathBuf,
        install_db: PathBuf,
        kafka_prereq: Option<(PathBuf, PathBuf)>,
    ) -> Result<(MariaDb, Vec<(String, MariaDb)>, Option<Kafka>), StackError> {
        let started = Instant::now();
        let template = {
            let (install_db, mariadbd) = (install_db.clone(), mariadbd.clone());
            tokio::task::spawn_blocking(move || mariadb::template(&install_db, &mariadbd))
                .await
                .expect("template task")?
        };
        let password = random_password();
        let primary_config = mariadb::MariaDbConfig {
            name: "primary".into(),
            server_id: 1,
            port: match options.primary_port {
                Some(port) => port,
                None => free_port()?,
            },
            startup_timeout: options.mariadb_startup_timeout,
            extra_options: options.primary_options.clone(),
        };
        let kafka_future = async {
            match &kafka_prereq {
                Some((java, libs)) => Kafka::create(
                    dir.path(),
                    java.clone(),
                    libs.clone(),
                    free_port()?,
                    free_port()?,
                    options.kafka_startup_timeout,
                )
                .await
                .map(Some),
                None => Ok(None),
            }
        };
        let primary_future = async {
            let primary = MariaDb::create(
                primary_config,
                dir.path(),
                &template,
                mariadbd.clone(),
                password.clone(),
            )
            .await?;
            prepare_primary(&primary, options.apply_migrations).await?;
            Ok::<_, StackError>(primary)
        };
        let (primary, kafka) = tokio::join!(primary_future, kafka_future);
        let (primary, kafka) = (primary?, kafka?);
        let mut replicas = Vec::new();
        for (i, replica) in options.replicas.iter().enumerate() {
            let config = mariadb::MariaDbConfig {
                name: format!("replica-{}", replica.region),
                server_id: 100 + i as u32,
                port: free_port()?,
                startup_timeout: options.mariadb_startup_timeout,
                extra_options: Vec::new(),
            };
            let server = MariaDb::create(
                config,
                dir.path(),
                &template,
                mariadbd.clone(),
                password.clone(),
            )
            .await?;
            follow(&server, &primary, replica.delay_secs).await?;
            replicas.push((replica.region.clone(), server));
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "stack up"
        );
        Ok((primary, replicas, kafka))
    }

    /// The primary.
    pub fn primary(&self) -> &MariaDb {
        &self.primary
    }

    /// The replica of `region`, if started.
    pub fn replica(&self, region: &str) -> Option<&MariaDb> {
        self.replicas
            .iter()
            .find(|(r, _)| r == region)
            .map(|(_, s)| s)
    }

    /// Every replica with its region.
    pub fn replicas(&self) -> impl Iterator<Item = (&str, &MariaDb)> {
        self.replicas.iter().map(|(r, s)| (r.as_str(), s))
    }

    /// The broker. Panics when the stack was started without Kafka.
    pub fn kafka(&self) -> &Kafka {
        self.kafka
            .as_ref()
            .expect("this stack was started without Kafka")
    }

    /// Creates a topic on the broker.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), StackError> {
        self.kafka().create_topic(name, partitions).await
    }

    /// The folder holding the data directories and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// Each service's state, and the end of each MariaDB error log (where a crash, a shutdown or a
    /// killed connection is told) and of the broker's log if it exited: printed when a test fails.
    pub fn report(&self) -> String {
        let mut text = String::new();
        let servers =
            std::iter::once(&self.primary).chain(self.replicas.iter().map(|(_, server)| server));
        for server in servers {
            text += &format!(
                "stack: mariadb {} {}; the end of {}:\n{}\n",
                server.name(),
                server.state(),
                server.error_log().display(),
                process::log_tail(&server.error_log(), 3000)
            );
        }
        if let Some(kafka) = &self.kafka {
            let state = kafka.state();
            text += &format!("stack: kafka {state}\n");
            if state.starts_with("exited") {
                text += &process::log_tail(&kafka.log_path(), 3000);
            }
        }
        text
    }

    /// Keeps the folder (data and logs) after the stack is dropped, and returns its path.
    pub fn keep_logs(&mut self) -> PathBuf {
        let path = self.dir();
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        path
    }

    /// Waits until the replica of `region` has applied everything the primary has written so far.
    pub async fn wait_replica_caught_up(
        &self,
        region: &str,
        timeout: Duration,
    ) -> Result<(), StackError> {
        let replica = self
            .replica(region)
            .ok_or_else(|| StackError::Replication {
                replica: region.into(),
                message: "no such replica in this stack".into(),
                log: PathBuf::new(),
            })?;
        let pos = self.primary.query("SELECT @@gtid_binlog_pos").await?;
        let pos = pos
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default();
        let waited = replica
            .query(&format!(
                "SELECT MASTER_GTID_WAIT('{}', {})",
                mariadb::escape(&pos),
                timeout.as_secs_f64()
            ))
            .await?;
        match waited
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .as_deref()
        {
            Some("0") => Ok(()),
            other => Err(StackError::Replication {
                replica: region.into(),
                message: format!(
                    "did not reach GTID {pos} within {timeout:?} (MASTER_GTID_WAIT gave {other:?})"
                ),
                log: replica.error_log(),
            }),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SQUEAL_KEEP_STACK").is_some() {
            let path = self.keep_logs();
            eprintln!("stack: service logs and data kept in {}", path.display());
        }
        if std::thread::panicking() {
            // The folder does not outlive a CI machine; what the test printed does.
            eprintln!("{}", self.report());
        }
    }
}

/// Creates the replication account and applies the demo schema.
async fn prepare_primary(primary: &MariaDb, apply_migrations: bool) -> Result<(), StackError> {
    // The replication account is created outside the binlog: replicas have their own.
    let pw = mariadb::escape(primary.password());
    primary
        .execute(&format!(
            "SET sql_log_bin=0; \
             CREATE USER IF NOT EXISTS 'repl'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
             GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'; SET sql_log_bin=1"
        ))
        .await?;
    if apply_migrations {
        for (name, sql) in migrations()? {
            primary.execute(&sql).await.map_err(|e| match e {
                StackError::Sql {
                    service,
                    message,
                    log,
                    ..
                } => StackError::Sql {
                    service,
                    what: format!("apply migrations/{name}"),
                    message,
                    log,
                },
                other => other,
            })?;
        }
    }
    Ok(())
}

/// The files of `migrations/`, sorted by name.
pub fn migrations() -> Result<Vec<(String, String)>, StackError> {
    let dir = repo_root().join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|source| StackError::Io {
            what: format!("read {}", dir.display()),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            std::fs::read_to_string(&path)
                .map(|sql| (name, sql))
                .map_err(|source| StackError::Io {
                    what: format!("read {}", path.display()),
                    source,
                })
        })
        .collect()
}

/// Points `replica` at `primary` with GTID replication from the beginning and starts it.
async fn follow(replica: &MariaDb, primary: &MariaDb, delay_secs: u32) -> Result<(), StackError> {
    let pw = mariadb::escape(primary.password());
    replica
        .execute(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='repl', \
             MASTER_PASSWORD='{pw}', MASTER_USE_GTID=slave_pos, MASTER_DELAY={delay_secs}, \
             MASTER_CONNECT_RETRY=1; START SLAVE",
            primary.port()
        ))
        .await?;
    // Wait until both replication threads run, or report the replica's own error.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut conn = replica.connect().await?;
        let status: Option<mysql_async::Row> =
            mysql_async::prelude::Queryable::query_first(&mut conn, "SHOW SLAVE STATUS")
                .await
                .map_err(|e| replica.sql_error("SHOW SLAVE STATUS", e))?;
        conn.disconnect().await.ok();
        let field = |row: &mysql_async::Row, name: &str| -> String {
            row.get_opt::<Option<String>, _>(name)
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_default()
        };
        if let Some(row) = status {
            let io = field(&row, "Slave_IO_Running");
            let sql = field(&row, "Slave_SQL_Running");
            if io == "Yes" && sql == "Yes" {
                return Ok(());
            }
            let error = [field(&row, "Last_IO_Error"), field(&row, "Last_SQL_Error")].join(" ");
            if Instant::now() > deadline {
                return Err(StackError::Replication {
                    replica: replica.server_id().to_string(),
                    message: format!("threads IO={io} SQL={sql}: {}", error.trim()),
                    log: replica.error_log(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A password for the stack's root and replication accounts: 24 alphanumerics.
fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}
