//! Apache Kafka 4.x as one local process in KRaft combined mode (broker and controller in one node).
//!
//! The jars come from Maven Central (`integration/kafka/pom.xml`, fetched by `scripts/setup` into
//! `.deps/kafka/libs`) and run on the machine's Java 17. The harness writes `server.properties`, formats the
//! storage once (`kafka.tools.StorageTool format`) and starts `kafka.Kafka`; `stop`/`start` keep the
//! same ports and log directory, so records survive a broker restart. Topics are created with rdkafka's
//! admin API. This module does not produce or consume application records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;

use crate::process::{log_tail, port_open, ProcessSlot, ServiceProcess};
use crate::StackError;

/// A running (or stopped, restartable) single-node Kafka. Dropping it kills the process.
#[derive(Debug)]
pub struct Kafka {
    /// Its folder: `server.properties`, `log4j2.properties`, `data/`, `kafka.log`.
    dir: PathBuf,
    /// The client (PLAINTEXT) listener port.
    port: u16,
    /// The KRaft controller listener port.
    controller_port: u16,
    /// The Java launcher.
    java: PathBuf,
    /// The broker's jars.
    libs: PathBuf,
    /// How long the broker may take to answer a metadata request.
    startup_timeout: Duration,
    /// The running process, `None` while stopped.
    process: ProcessSlot,
}

impl Kafka {
    /// Writes the configuration, formats the storage and starts the broker.
    pub(crate) async fn create(
        parent: &Path,
        java: PathBuf,
        libs: PathBuf,
        port: u16,
        controller_port: u16,
        startup_timeout: Duration,
    ) -> Result<Self, StackError> {
        let dir = parent.join("kafka");
        let io = |what: &str| {
            let what = what.to_string();
            move |source| StackError::Io { what, source }
        };
        std::fs::create_dir_all(dir.join("data")).map_err(io("create the kafka folder"))?;
        std::fs::write(
            dir.join("server.properties"),
            server_properties(&dir, port, controller_port),
        )
        .map_err(io("write server.properties"))?;
        std::fs::write(dir.join("log4j2.properties"), LOG4J2_PROPERTIES)
            .map_err(io("write log4j2.properties"))?;
        let kafka = Self {
            dir,
            port,
            controller_port,
            java,
            libs,
            startup_timeout,
            process: ProcessSlot::default(),
        };
        kafka.format_storage()?;
        kafka.start().await?;
        Ok(kafka)
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The controller port (KRaft quorum), for completeness in `stack up`'s output.
    pub fn controller_port(&self) -> u16 {
        self.controller_port
    }

    /// The broker's console log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the broker runs, stopped, or exited by itself (then with its status).
    pub fn state(&self) -> String {
        self.process.state()
    }

    /// Starts the broker (after `create` or `stop`) and waits until it answers a metadata request.
    pub async fn start(&self) -> Result<(), StackError> {
        if self.process.is_running() {
            return Ok(());
        }
        let process = ServiceProcess::spawn(
            "kafka",
            &self.java,
            &self.java_args(
                "kafka.Kafka",
                &[self.dir.join("server.properties").display().to_string()],
            ),
            &self.log_path(),
            &[],
        )?;
        self.process.put(process);
        self.wait_ready().await
    }

    /// Stops the broker cleanly (SIGTERM, controlled shutdown; SIGKILL after 30 s). Its data stays.
    pub fn stop(&self) {
        self.process.stop(libc::SIGTERM, Duration::from_secs(30));
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        self.process.stop(libc::SIGKILL, Duration::from_secs(5));
    }

    /// Creates a topic (replication factor 1) and waits until every partition has a leader.
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), StackError> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| self.kafka_error("create an admin client", e))?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = admin
            .create_topics([&topic], &options)
            .await
            .map_err(|e| self.kafka_error("create a topic", e))?;
        for result in results {
            if let Err((topic, code)) = result {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(StackError::Kafka {
                        what: format!("create topic {topic}"),
                        message: code.to_string(),
                        log: self.log_path(),
                    });
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.topic_has_leaders(name, partitions).await;
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StackError::Kafka {
                    what: format!("wait for the partitions of topic {name} to get a leader"),
                    message: "no leader after 30 s".into(),
                    log: self.log_path(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client configuration pointing at this broker.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers());
        config
    }

    fn kafka_error(&self, what: &str, e: rdkafka::error::KafkaError) -> StackError {
        StackError::Kafka {
            what: what.into(),
            message: e.to_string(),
            log: self.log_path(),
        }
    }

    async fn topic_has_leaders(&self, name: &str, partitions: i32) -> bool {
        let config = self.client_config();
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let Ok(producer) = config.create::<BaseProducer>() else {
                return false;
            };
            let Ok(metadata) = producer
                .client()
                .fetch_metadata(Some(&name), Duration::from_secs(2))
            else {
                return false;
            };
            metadata.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        })
        .await
        .unwrap_or(false)
    }

    fn java_args(&self, main_class: &str, rest: &[String]) -> Vec<String> {
        // As kafka-server-start.sh does, KAFKA_HEAP_OPTS and KAFKA_JVM_PERFORMANCE_OPTS replace the
        // defaults (benchmarks compare JVM settings with them).
        let from_env = |name: &str, default: &str| -> Vec<String> {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_string())
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let mut args = from_env("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS);
        args.extend(from_env(
            "KAFKA_JVM_PERFORMANCE_OPTS",
            DEFAULT_JVM_PERFORMANCE_OPTS,
        ));
        args.extend([
            "-Djava.awt.headless=true".to_string(),
            format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ),
            "-cp".to_string(),
            format!("{}/*", self.libs.display()),
            main_class.to_string(),
        ]);
        args.extend_from_slice(rest);
        args
    }

    fn format_storage(&self) -> Result<(), StackError> {
        let cluster_id = random_cluster_id();
        let log = self.dir.join("format.log");
        let output = std::process::Command::new(&self.java)
            .args(self.java_args(
                "kafka.tools.StorageTool",
                &[
                    "format".into(),
                    "--ignore-formatted".into(),
                    // One `--cluster-id=ID` argument: an id may start with '-' and must not read as an option.
                    format!("--cluster-id={cluster_id}"),
                    "-c".into(),
                    self.dir.join("server.properties").display().to_string(),
                ],
            ))
            .output()
            .map_err(|source| StackError::Io {
                what: format!("run {} (Kafka StorageTool)", self.java.display()),
                source,
            })?;
        std::fs::write(
            &log,
            [output.stdout.as_slice(), output.stderr.as_slice()].concat(),
        )
        .ok();
        if output.status.success() {
            Ok(())
        } else {
            Err(StackError::Exited {
                service: "kafka storage format".into(),
                status: output.status.to_string(),
                tail: log_tail(&log, 1500),
                log,
            })
        }
    }

    async fn wait_ready(&self) -> Result<(), StackError> {
        let started = Instant::now();
        loop {
            self.process.check_alive()?;
            if port_open(self.port) && self.answers_metadata().await {
                return Ok(());
            }
            if started.elapsed() > self.startup_timeout {
                self.process.stop(libc::SIGKILL, Duration::from_secs(5));
                return Err(StackError::Timeout {
                    service: "kafka".into(),
                    waited: self.startup_timeout,
                    log: self.log_path(),
                    tail: log_tail(&self.log_path(), 1500),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn answers_metadata(&self) -> bool {
        let config = self.client_config();
        tokio::task::spawn_blocking(move || {
            config
                .create::<BaseProducer>()
                .ok()
                .and_then(|p| p.client().fetch_metadata(None, Duration::from_secs(2)).ok())
                .map(|m| !m.brokers().is_empty())
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

/// A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what `kafka-storage random-uuid` prints).
fn random_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 16] = rand::random();
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = String::new();
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

fn server_properties(dir: &Path, port: u16, controller_port: u16) -> String {
    format!(
        "# Written by the squeal integration harness: one node, broker and controller, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=9223372036854775807
# Latency on a small shared machine (squeal's bench_live measured these; see squeal/README.md):
# the log cleaner's dedupe buffer is a 128 MiB heap array by default, which in a 512 MiB heap keeps
# G1 running concurrent cycles; compacting the few small internal topics needs far less.
log.cleaner.dedupe.buffer.size=8388608
# Fewer threads than cores' worth of defaults (3 network, 8 I/O): one node, a few clients.
num.network.threads=1
num.io.threads=2
",
        data = dir.join("data").display()
    )
}

/// The broker's heap (`KAFKA_HEAP_OPTS` replaces it): fixed, so it never resizes under load.
const DEFAULT_HEAP_OPTS: &str = "-Xms512m -Xmx512m";

/// The broker's GC flags (`KAFKA_JVM_PERFORMANCE_OPTS` replaces them): G1 with short young
/// pauses, and the heap's pages touched at start so no page fault lands in a measured pause.
const DEFAULT_JVM_PERFORMANCE_OPTS: &str =
    "-XX:+UseG1GC -XX:MaxGCPauseMillis=5 -XX:+AlwaysPreTouch";

const LOG4J2_PROPERTIES: &str = "status = error
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
";
