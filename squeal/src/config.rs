//! squeal's TOML configuration: source, Kafka, checkpoint, metrics, transaction limits and key rules.
//!
//! Unknown fields are errors; every default is a named function; durations are `*_ms`. The database
//! password never lives in a plain `String`: it is a [`Secret`] whose `Debug` and `Display` redact it,
//! read from an environment variable, a file, or (discouraged) the URL, from which it is removed.
//! This module does no I/O beyond reading the config and password files.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A value that must never reach logs or metrics.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that needs it (the connection options).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or shape error (including unknown fields). Only the parser's message and the
    /// position are kept: the parser's own `Display` quotes the offending line of the file, which
    /// may hold a secret (e.g. a misplaced `password = "..."`).
    #[error("invalid config: {}{message}", location(.line_column))]
    Toml {
        /// 1-based line and column of the error in the config text, when the parser knows it.
        line_column: Option<(usize, usize)>,
        /// The parser's message, without the quoted source line.
        message: String,
    },
    /// A semantic error, with the field it concerns.
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn location(line_column: &Option<(usize, usize)>) -> String {
    match line_column {
        Some((line, column)) => format!("config line {line}, column {column}: "),
        None => String::new(),
    }
}

impl ConfigError {
    /// Keeps a TOML error's message and position, and drops the source snippet its `Display` shows.
    fn toml(error: &toml::de::Error, text: &str) -> ConfigError {
        let line_column = error.span().map(|span| {
            let mut start = span.start.min(text.len());
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (line, before[line_start..].chars().count() + 1)
        });
        ConfigError::Toml {
            line_column,
            message: hide_unexpected_value(error.message().trim_end()),
        }
    }
}

/// serde's type errors quote the value found (`invalid type: integer \`123456\`, expected a
/// string`), which may be a secret written without quotes; keep its kind and drop the value.
fn hide_unexpected_value(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        let Some(rest) = message.strip_prefix(prefix) else {
            continue;
        };
        let Some(sep) = rest.rfind(", expected ") else {
            continue;
        };
        let (unexpected, expected) = rest.split_at(sep);
        if let Some(quote) = unexpected.find(['`', '"']) {
            let kind = unexpected[..quote].trim_end();
            return format!("{prefix}{kind} (value not shown){expected}");
        }
    }
    message.to_owned()
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The MySQL/MariaDB server to read the binlog from.
    pub source: SourceConfig,
    /// Where invalidations go.
    pub kafka: KafkaConfig,
    /// Where the acknowledged position is kept.
    pub checkpoint: CheckpointConfig,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Transaction buffering limits.
    #[serde(default)]
    pub transactions: TransactionConfig,
    /// Key rules; a table matched by no rule is skipped.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// Where to start when there is no checkpoint yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The server's current binlog position (`SHOW MASTER STATUS`): only new transactions.
    Current,
    /// The oldest binlog the server still has.
    Earliest,
}

/// How a restart finds its place in the binlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeBy {
    /// The checkpoint's binlog file and position (exact on the server that wrote them).
    Position,
    /// MariaDB: the checkpoint's GTID state (`@slave_connect_state`), so the position survives a
    /// renamed or re-numbered binlog and a switch to another server of the replication topology.
    /// MySQL: the checkpoint's executed GTID set, sent with COM_BINLOG_DUMP_GTID as a replica with
    /// `SOURCE_AUTO_POSITION=1` does.
    Gtid,
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `mysql://user@host:port`; a password in the URL is accepted but moved out into a [`Secret`].
    pub url: String,
    /// Name of an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Path of a file holding the password (trailing newline stripped).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The server id squeal registers with; must differ from every server and replica.
    pub server_id: u32,
    /// Heartbeat period requested from the server, so lag stays true when the server is idle.
    /// 0 asks for none, as `MASTER_HEARTBEAT_PERIOD = 0` does for a MySQL/MariaDB replica (see
    /// [`SourceConfig::heartbeat_period_ns`]).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// First reconnect delay after the server went away; doubles up to `reconnect_max_backoff_ms`.
    #[serde(default = "default_reconnect_initial_backoff_ms")]
    pub reconnect_initial_backoff_ms: u64,
    /// Upper bound of the reconnect delay.
    #[serde(default = "default_reconnect_max_backoff_ms")]
    pub reconnect_max_backoff_ms: u64,
    /// Start position when no checkpoint exists.
    #[serde(default = "default_start_from")]
    pub start_from: StartFrom,
    /// How to resume from a checkpoint.
    #[serde(default = "default_resume")]
    pub resume: ResumeBy,
    /// The password, resolved at load time from env, file or URL. Never deserialized.
    #[serde(skip)]
    pub password: Option<Secret>,
}

/// The longest heartbeat period a server accepts: MySQL's and MariaDB's `MASTER_HEARTBEAT_PERIOD`
/// is at most 4294967 seconds (`slave_max_heartbeat_period`).
pub const MAX_HEARTBEAT_MS: u64 = 4_294_967_000;

impl SourceConfig {
    /// The `@master_heartbeat_period` to send, in nanoseconds; `None` for `heartbeat_ms = 0`, when
    /// squeal sends none and the server sends no heartbeats (its default without the variable).
    /// Until 2026-12-01 0 became 1 ms, a heartbeat a millisecond, the opposite of what a replica's
    /// `MASTER_HEARTBEAT_PERIOD = 0` means.
    pub fn heartbeat_period_ns(&self) -> Option<u64> {
        (self.heartbeat_ms > 0).then(|| self.heartbeat_ms * 1_000_000)
    }
}

/// `[kafka]`. Its `Debug` prints the names of the pass-through properties but not their values,
/// which may be credentials (`sasl.password`, `ssl.key.password`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic invalidations are published to.
    pub topic: String,
    /// Extra librdkafka properties (SASL/TLS etc.) passed through verbatim; they override squeal's
    /// defaults except `enable.idempotence` and `acks`, which squeal requires.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Records handed to the producer but not yet acknowledged; reaching it pauses binlog reading.
    /// As many transaction ends may wait behind them (`publish::tracked_capacity`), then reading
    /// pauses too.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Payload bytes handed to the producer but not yet acknowledged (bounds memory); reaching it
    /// pauses binlog reading too.
    #[serde(default = "default_max_in_flight_bytes")]
    pub max_in_flight_bytes: usize,
    /// Upper bound of one record's JSON size; larger transactions are split into chunks.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Upper bound of keys per record.
    #[serde(default = "default_max_keys_per_record")]
    pub max_keys_per_record: usize,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field(
                "properties",
                &self
                    .properties
                    .keys()
                    .map(|k| (k, "***"))
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("max_keys_per_record", &self.max_keys_per_record)
            .finish()
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// File holding the last position whose records Kafka acknowledged.
    pub path: PathBuf,
    /// Least time between two checkpoint writes (a restart re-publishes at most this much).
    #[serde(default = "default_checkpoint_interval_ms")]
    pub interval_ms: u64,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`GET /metrics`); loopback by default. Port 0 picks one.
    #[serde(default = "default_metrics_address")]
    pub address: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            address: default_metrics_address(),
        }
    }
}

/// `[transactions]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    /// Keys held in memory per transaction before they are spilled to a temporary file.
    #[serde(default = "default_max_buffered_keys")]
    pub max_buffered_keys: usize,
    /// Directory of spill files (default: the system temporary directory).
    #[serde(default)]
    pub spill_dir: Option<PathBuf>,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            max_buffered_keys: default_max_buffered_keys(),
            spill_dir: None,
        }
    }
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `db.table` glob (`*` and `?`), e.g. `shop.users`, `shop.*`, `*`.
    pub table: String,
    /// Key templates over column names, e.g. `user:{id}`; `{{` and `}}` are literal braces.
    pub keys: Vec<String>,
}

fn default_heartbeat_ms() -> u64 {
    1_000
}
fn default_reconnect_initial_backoff_ms() -> u64 {
    100
}
fn default_reconnect_max_backoff_ms() -> u64 {
    10_000
}
fn default_start_from() -> StartFrom {
    StartFrom::Current
}
fn default_resume() -> ResumeBy {
    ResumeBy::Position
}
/// The largest `kafka.max_in_flight`: librdkafka's queue, as squeal sets it, holds no more.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1_000_000;

/// The largest `kafka.max_in_flight_bytes`, 1 TiB.
pub const MAX_IN_FLIGHT_BYTES_LIMIT: usize = 1 << 40;

fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_in_flight_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_max_record_bytes() -> usize {
    invalidation::DEFAULT_MAX_RECORD_BYTES
}
fn default_max_keys_per_record() -> usize {
    1_000
}
fn default_checkpoint_interval_ms() -> u64 {
    200
}
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9187))
}
fn default_max_buffered_keys() -> usize {
    100_000
}

impl Config {
    /// Reads, parses and validates a config file, resolving the password.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, |name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` looks up environment variables (injectable for tests).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::toml(&e, text))?;
        config.resolve_password(env)?;
        config.validate()?;
        Ok(config)
    }

    fn resolve_password(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let source = &mut self.source;
        let (url, url_password) = split_password_from_url(&source.url)?;
        source.url = url;
        let mut found = Vec::new();
        if let Some(p) = url_password {
            found.push(("the URL", Secret::new(p)));
        }
        if let Some(var) = &source.password_env {
            let value = env(var).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "source.password_env names `{var}` but that environment variable is not set"
                ))
            })?;
            found.push(("source.password_env", Secret::new(value)));
        }
        if let Some(file) = &source.password_file {
            let value = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::Invalid(format!(
                    "source.password_file {}: cannot read: {e}",
                    file.display()
                ))
            })?;
            found.push((
                "source.password_file",
                Secret::new(value.trim_end_matches(['\r', '\n'])),
            ));
        }
        if found.len() > 1 {
            let names: Vec<_> = found.iter().map(|(n, _)| *n).collect();
            return Err(ConfigError::Invalid(format!(
                "the password is given more than once ({}); give it once",
                names.join(", ")
            )));
        }
        source.password = found.pop().map(|(_, s)| s);
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.source.server_id == 0 {
            return bad(
                "source.server_id must be non-zero (a replica id unused by any server)".into(),
            );
        }
        if self.source.reconnect_initial_backoff_ms == 0 {
            // The delay doubles from here: 0 stays 0, a reconnect loop hammering the server.
            return bad("source.reconnect_initial_backoff_ms must be at least 1".into());
        }
        if self.source.reconnect_max_backoff_ms < self.source.reconnect_initial_backoff_ms {
            return bad(format!(
                "source.reconnect_max_backoff_ms ({}) must be at least \
                 source.reconnect_initial_backoff_ms ({})",
                self.source.reconnect_max_backoff_ms, self.source.reconnect_initial_backoff_ms
            ));
        }
        if self.source.heartbeat_ms > MAX_HEARTBEAT_MS {
            return bad(format!(
                "source.heartbeat_ms must be at most {MAX_HEARTBEAT_MS} (the server's limit), or 0 \
                 for no heartbeats"
            ));
        }
        if self.kafka.brokers.split(',').all(|b| b.trim().is_empty()) {
            return bad(
                "kafka.brokers must name at least one broker (host:port[,host:port...])".into(),
            );
        }
        if self.kafka.topic.is_empty() {
            return bad("kafka.topic must not be empty".into());
        }
        if self.kafka.max_in_flight == 0 {
            return bad("kafka.max_in_flight must be at least 1".into());
        }
        // librdkafka queues at most queue.buffering.max.messages (squeal sets 1,000,000) anyway;
        // a larger value meant as "unlimited" used to panic at start (a semaphore's bound).
        if self.kafka.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return bad(format!(
                "kafka.max_in_flight must be at most {MAX_IN_FLIGHT_LIMIT} (librdkafka's queue holds no more)"
            ));
        }
        if self.kafka.max_in_flight_bytes < self.kafka.max_record_bytes {
            return bad("kafka.max_in_flight_bytes must be at least kafka.max_record_bytes".into());
        }
        // Counted in KiB in a u32: 4 TiB and its multiples truncated to 0 and panicked at the
        // first record.
        if self.kafka.max_in_flight_bytes > MAX_IN_FLIGHT_BYTES_LIMIT {
            return bad(format!(
                "kafka.max_in_flight_bytes must be at most {MAX_IN_FLIGHT_BYTES_LIMIT} (1 TiB)"
            ));
        }
        if self.kafka.max_keys_per_record == 0 {
            return bad("kafka.max_keys_per_record must be at least 1".into());
        }
        if self.kafka.max_record_bytes < 4096 {
            return bad("kafka.max_record_bytes must be at least 4096".into());
        }
        if self.transactions.max_buffered_keys == 0 {
            return bad("transactions.max_buffered_keys must be at least 1".into());
        }
        // With librdkafka's aliases of the same properties: given both spellings, librdkafka
        // applies whichever comes last, and the properties map has no order.
        for key in [
            "enable.idempotence",
            "acks",
            "request.required.acks",
            "bootstrap.servers",
            "metadata.broker.list",
        ] {
            if self.kafka.properties.contains_key(key) {
                return bad(format!(
                    "kafka.properties.\"{key}\" is set by squeal itself and cannot be overridden"
                ));
            }
        }
        crate::rules::Rules::compile(&self.rules)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    /// Connection options for the source, with the password applied.
    pub fn mysql_opts(&self) -> Result<mysql_async::Opts, ConfigError> {
        let opts = mysql_async::Opts::from_url(&self.source.url)
            .map_err(|e| ConfigError::Invalid(format!("source.url: {e}")))?;
        let builder = mysql_async::OptsBuilder::from_opts(opts)
            .pass(self.source.password.as_ref().map(|s| s.expose().to_owned()))
            .prefer_socket(false);
        Ok(builder.into())
    }
}

/// Splits `mysql://user:pw@host` into (`mysql://user@host`, Some(pw)); the URL never keeps a password.
///
/// The user-info is everything before the LAST `@`, not only what precedes the first `/`: a raw
/// `/`, `?`, `#` or `@` in a password is invalid URL syntax, but cutting the authority at the first
/// `/` would leave such a password in the URL, which is logged. So whatever lies between the first
/// `:` and the last `@` is taken out as the password (percent-decoded) and never kept in the URL.
fn split_password_from_url(url: &str) -> Result<(String, Option<String>), ConfigError> {
    let Some(rest) = url.strip_prefix("mysql://") else {
        return Err(ConfigError::Invalid(
            "source.url must start with mysql://".into(),
        ));
    };
    let Some(at) = rest.rfind('@') else {
        return Ok((url.to_owned(), None));
    };
    let (userinfo, host_and_tail) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, pw)) => Ok((
            format!("mysql://{user}{host_and_tail}"),
            Some(percent_decode(pw)),
        )),
        None => Ok((url.to_owned(), None)),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [source]
        url = "mysql://squeal@127.0.0.1:3306"
        password_env = "SQUEAL_PW"
        server_id = 4242
        [kafka]
        brokers = "127.0.0.1:9092"
        topic = "inv"
        [checkpoint]
        path = "/tmp/cp.json"
        [[rules]]
        table = "shop.users"
        keys = ["user:{id}"]
    "#;

    fn env(name: &str) -> Option<String> {
        (name == "SQUEAL_PW").then(|| "hunter2".to_owned())
    }

    #[test]
    fn defaults_apply_and_password_comes_from_env() {
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(c.source.heartbeat_ms, 1000);
        assert_eq!(c.source.start_from, StartFrom::Current);
        assert_eq!(c.source.resume, ResumeBy::Position);
        assert_eq!(c.metrics.address.to_string(), "127.0.0.1:9187");
        assert_eq!(c.kafka.max_in_flight, 10_000);
        assert_eq!(c.kafka.max_in_flight_bytes, 32 << 20);
        assert_eq!(c.checkpoint.interval_ms, 200);
        assert_eq!(c.transactions.max_buffered_keys, 100_000);
        assert_eq!(c.source.password.as_ref().unwrap().expose(), "hunter2");
    }

    #[test]
    fn password_never_appears_in_debug_output() {
        let c = Config::parse(MINIMAL, env).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("Secret(***)"));
        assert_eq!(Secret::new("x").to_string(), "***");
    }

    #[test]
    fn password_in_url_is_moved_out_of_the_url() {
        let text = MINIMAL
            .replace("squeal@127", "squeal:s%40cret@127")
            .replace("password_env = \"SQUEAL_PW\"", "");
        let c = Config::parse(&text, env).unwrap();
        assert_eq!(c.source.url, "mysql://squeal@127.0.0.1:3306");
        assert_eq!(c.source.password.unwrap().expose(), "s@cret");
    }

    #[test]
    fn url_split_keeps_path_and_query_of_valid_urls() {
        let split = |u: &str| split_password_from_url(u).unwrap();
        assert_eq!(
            split("mysql://u:p%2Fw@db1:3306/shop?require_ssl=true"),
            (
                "mysql://u@db1:3306/shop?require_ssl=true".to_owned(),
                Some("p/w".to_owned())
            )
        );
        assert_eq!(
            split("mysql://u@db1:3306/shop"),
            ("mysql://u@db1:3306/shop".to_owned(), None)
        );
        assert_eq!(
            split("mysql://db1:3306/shop"),
            ("mysql://db1:3306/shop".to_owned(), None)
        );
        // A raw `/` in the password is invalid syntax, but it is taken out all the same.
        assert_eq!(
            split("mysql://u:hun/ter2@db1:3306/shop"),
            (
                "mysql://u@db1:3306/shop".to_owned(),
                Some("hun/ter2".to_owned())
            )
        );
    }

    #[test]
    fn password_from_file_strips_newline_and_double_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "filepw\n").unwrap();
        let text = MINIMAL.replace(
            "password_env = \"SQUEAL_PW\"",
            &format!("password_file = {:?}", file.to_str().unwrap()),
        );
        let c = Config::parse(&text, env).unwrap();
        assert_eq!(c.source.password.unwrap().expose(), "filepw");
        let both = text.replace("server_id", "password_env = \"SQUEAL_PW\"\nserver_id");
        let err = Config::parse(&both, env).unwrap_err().to_string();
        assert!(err.contains("more than once"), "{err}");
    }

    #[test]
    fn missing_env_var_unknown_field_and_bad_values_are_errors() {
        let err = Config::parse(MINIMAL, |_| None).unwrap_err().to_string();
        assert!(err.contains("SQUEAL_PW"), "{err}");
        let unknown = MINIMAL.replace("server_id = 4242", "server_id = 4242\nserverid = 1");
        let err = Config::parse(&unknown, env).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        let zero = MINIMAL.replace("server_id = 4242", "server_id = 0");
        assert!(Config::parse(&zero, env).is_err());
        let acks = MINIMAL.replace(
            "topic = \"inv\"",
            "topic = \"inv\"\n[kafka.properties]\nacks = \"1\"",
        );
        let err = Config::parse(&acks, env).unwrap_err().to_string();
        assert!(err.contains("acks"), "{err}");
        let bad_rule = MINIMAL.replace("user:{id}", "user:{id");
        assert!(Config::parse(&bad_rule, env).is_err());
    }

    #[test]
    fn backoff_heartbeat_and_brokers_are_validated_naming_the_field() {
        let with = |from: &str, to: &str| {
            assert!(MINIMAL.contains(from), "{from}");
            Config::parse(&MINIMAL.replace(from, to), env)
        };
        let source = |extra: &str| with("server_id = 4242", &format!("server_id = 4242\n{extra}"));
        let err = source("reconnect_initial_backoff_ms = 0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.reconnect_initial_backoff_ms must be at least 1"),
            "{err}"
        );
        let err = source("reconnect_initial_backoff_ms = 500\nreconnect_max_backoff_ms = 499")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.reconnect_max_backoff_ms (499) must be at least source.reconnect_initial_backoff_ms (500)"),
            "{err}"
        );
        // The default maximum (10 s) is below an initial of 20 s.
        let err = source("reconnect_initial_backoff_ms = 20000")
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.reconnect_max_backoff_ms"), "{err}");
        let c =
            source("reconnect_initial_backoff_ms = 500\nreconnect_max_backoff_ms = 500").unwrap();
        assert_eq!(c.source.reconnect_max_backoff_ms, 500, "equal is fine");

        // 0: no heartbeats, as a replica's MASTER_HEARTBEAT_PERIOD = 0; not one a millisecond.
        let c = source("heartbeat_ms = 0").unwrap();
        assert_eq!(c.source.heartbeat_period_ns(), None);
        let c = source("heartbeat_ms = 1").unwrap();
        assert_eq!(c.source.heartbeat_period_ns(), Some(1_000_000));
        let c = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(c.source.heartbeat_period_ns(), Some(1_000_000_000));
        let c = source(&format!("heartbeat_ms = {MAX_HEARTBEAT_MS}")).unwrap();
        assert_eq!(
            c.source.heartbeat_period_ns(),
            Some(MAX_HEARTBEAT_MS * 1_000_000)
        );
        let err = source(&format!("heartbeat_ms = {}", MAX_HEARTBEAT_MS + 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source.heartbeat_ms must be at most"), "{err}");

        for brokers in ["", " ", ",", " , "] {
            let err = with(
                "brokers = \"127.0.0.1:9092\"",
                &format!("brokers = \"{brokers}\""),
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("kafka.brokers must name at least one broker"),
                "{brokers:?}: {err}"
            );
        }
    }

    /// Values past what squeal can count are refused naming the field (before session 31,
    /// max_in_flight = 2^63 - 1 panicked at start and max_in_flight_bytes = 4 TiB at the first
    /// record, again at every restart), and librdkafka's aliases of the properties squeal sets
    /// are refused as those are (before, which spelling won changed from run to run).
    #[test]
    fn in_flight_bounds_and_property_aliases_are_refused_naming_the_field() {
        let kafka = |extra: &str| {
            Config::parse(
                &MINIMAL.replace("topic = \"inv\"", &format!("topic = \"inv\"\n{extra}")),
                env,
            )
        };
        let c = kafka(&format!("max_in_flight = {MAX_IN_FLIGHT_LIMIT}")).unwrap();
        assert_eq!(c.kafka.max_in_flight, MAX_IN_FLIGHT_LIMIT);
        for (extra, field) in [
            (
                "max_in_flight = 1000001",
                "kafka.max_in_flight must be at most",
            ),
            (
                "max_in_flight = 9223372036854775807",
                "kafka.max_in_flight must be at most",
            ),
            (
                "max_in_flight_bytes = 4398046511104",
                "kafka.max_in_flight_bytes must be at most",
            ),
        ] {
            let err = kafka(extra).unwrap_err().to_string();
            assert!(err.contains(field), "{extra}: {err}");
        }
        let c = kafka(&format!(
            "max_in_flight_bytes = {MAX_IN_FLIGHT_BYTES_LIMIT}"
        ))
        .unwrap();
        assert_eq!(c.kafka.max_in_flight_bytes, 1 << 40);
        for alias in ["request.required.acks", "metadata.broker.list"] {
            let err = kafka(&format!("[kafka.properties]\n\"{alias}\" = \"1\""))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(alias) && err.contains("set by squeal"),
                "{err}"
            );
        }
    }

    #[test]
    fn extra_kafka_properties_pass_through() {
        let text = MINIMAL.replace(
            "topic = \"inv\"",
            "topic = \"inv\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"",
        );
        let c = Config::parse(&text, env).unwrap();
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
        // Property values may be credentials: Debug names them and hides their values.
        let text = MINIMAL.replace(
            "topic = \"inv\"",
            "topic = \"inv\"\n[kafka.properties]\n\"sasl.password\" = \"hunter2-kafka\"",
        );
        let c = Config::parse(&text, env).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("sasl.password"), "{shown}");
        assert!(!shown.contains("hunter2-kafka"), "{shown}");
    }
}
