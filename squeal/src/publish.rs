//! Publishing records to Kafka and advancing the checkpoint only behind Kafka's acknowledgements.
//!
//! [`Publisher::publish`] hands a record to rdkafka (idempotent producer, `acks=all`, no delivery
//! timeout) after taking one of `max_in_flight` permits: when Kafka stalls, permits run out, the
//! call waits, and so the binlog reader pauses (back-pressure; nothing is dropped).
//! [`Publisher::commit`] marks the end of a transaction. The [`AckTracker`] awaits deliveries in
//! submission order and, when it passes a transaction end, all of that transaction's records and
//! every earlier one are acknowledged: only then does the checkpoint move there. Those ends wait in
//! a bounded queue too ([`tracked_capacity`]): a transaction that publishes nothing (a table no rule
//! names) takes no permit, so without that bound, while Kafka holds one record, reading would go on
//! and queue an end per transaction, without limit.
//!
//! Errors are classified: `QueueFull` is transient (wait and retry); librdkafka retries broker
//! and network errors itself for ever (`message.timeout.ms=0`); any error reported for a delivery
//! is permanent (e.g. record too large, authorization) and stops squeal with the checkpoint
//! before that record, so a restart publishes it again. Credentials the brokers refuse are
//! permanent too: librdkafka reports them only to its error callback and would retry for ever,
//! holding every record, so [`ProducerContext`] passes them to the tracker, which stops.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use invalidation::Record;

use crate::checkpoint::{self, Position};
use crate::config::KafkaConfig;
use crate::metrics::Metrics;

/// A publishing failure.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Kafka refused a record for good, or the producer could not be created.
    #[error("Kafka (permanent): {0}")]
    Permanent(String),
    /// The checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The ack tracker stopped (it failed; its own error says why).
    #[error("the Kafka acknowledgement tracker stopped")]
    TrackerGone,
}

enum Tracked {
    /// One record handed to the producer.
    Record {
        delivery: DeliveryFuture,
        /// Released when the delivery completes, so in-flight records stay bounded.
        _permit: OwnedSemaphorePermit,
        /// KiB of payload in flight, released likewise, so memory stays bounded too.
        _bytes: OwnedSemaphorePermit,
    },
    /// End of a transaction (or a rotation, `is_transaction: false`): once reached, everything
    /// up to `position` is acknowledged.
    Commit {
        position: Position,
        read_at: Instant,
        had_records: bool,
        is_transaction: bool,
    },
}

/// The producer's librdkafka context: logs librdkafka's errors as rdkafka's default context does,
/// and reports credentials the brokers refuse to the [`AckTracker`].
pub struct ProducerContext {
    /// The first refusal, for the tracker; `None` while there is none.
    refused: watch::Sender<Option<String>>,
}

impl ClientContext for ProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::error!("librdkafka: {error}: {reason}");
        if refuses_credentials(&error) {
            self.refused.send_if_modified(|first| {
                let new = first.is_none();
                if new {
                    *first = Some(format!("{error}: {reason}"));
                }
                new
            });
        }
    }
}

/// Whether librdkafka's error says the brokers refused the client's credentials (SASL). The Java
/// client does not retry those either (`AuthenticationException`); librdkafka would, for ever.
fn refuses_credentials(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

/// Hands records to Kafka with back-pressure.
pub struct Publisher {
    /// The idempotent producer.
    producer: FutureProducer<ProducerContext>,
    /// Destination topic.
    topic: String,
    /// Bounds records in flight.
    permits: Arc<Semaphore>,
    /// Bounds payload KiB in flight.
    kib: Arc<Semaphore>,
    /// Capacity of `kib`.
    max_kib: u32,
    /// Deliveries and commits, in order, for the tracker; bounded, see [`tracked_capacity`].
    tracked: mpsc::Sender<Tracked>,
    /// Counters.
    metrics: Arc<Metrics>,
    /// Whether the current transaction handed out at least one record.
    txn_had_records: bool,
}

/// Awaits deliveries in order and writes the checkpoint behind them.
pub struct AckTracker {
    tracked: mpsc::Receiver<Tracked>,
    checkpoint_path: PathBuf,
    interval: Duration,
    metrics: Arc<Metrics>,
    /// Started by `run`: fsyncs off the async runtime.
    writer: Option<checkpoint::CheckpointWriter>,
    /// Credentials the brokers refused ([`ProducerContext`]): the tracker stops on them.
    refused: watch::Receiver<Option<String>>,
}

/// Room in the tracker's queue for `max_in_flight` records and as many transaction ends: records
/// are bounded by their permits before they reach it, so the queue's own bound is what stops
/// reading when transaction ends pile up behind a record Kafka has not acknowledged (a stretch of
/// transactions on tables no rule names, during an outage). Each end holds a [`Position`], GTID
/// sets included, so the bound is a bound on memory.
pub fn tracked_capacity(max_in_flight: usize) -> usize {
    max_in_flight.saturating_mul(2)
}

/// The librdkafka properties squeal uses, before the user's pass-through properties.
pub fn producer_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("message.timeout.ms", "0")
        // 1 ms, not 0: at 2,000 txn/s, linger 0 halves the median (one produce request per
        // record) but the extra requests cost the shared broker CPU and raised p99 by ~2 ms, and
        // squeal's target is the p99 (README, Benchmarks: bench_live with BENCH_PRODUCER).
        .set("linger.ms", "1")
        // Small produce requests must not wait for Nagle + delayed ACK (up to 40 ms).
        .set("socket.nagle.disable", "true")
        .set("queue.buffering.max.messages", "1000000")
        .set(
            "message.max.bytes",
            (cfg.max_record_bytes + 4096).to_string(),
        );
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    // Required for no-loss, in-order publishing; config validation forbids overriding them.
    c.set("enable.idempotence", "true").set("acks", "all");
    c
}

impl Publisher {
    /// Creates the producer and its tracker.
    pub fn new(
        cfg: &KafkaConfig,
        checkpoint_path: PathBuf,
        checkpoint_interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(Publisher, AckTracker), PublishError> {
        let (refused_tx, refused) = watch::channel(None);
        let context = ProducerContext {
            refused: refused_tx,
        };
        let producer = producer_config(cfg)
            .create_with_context(context)
            .map_err(|e| {
                PublishError::Permanent(format!(
                    "cannot create producer: {}",
                    describe_config_error(&e, cfg)
                ))
            })?;
        let (tx, rx) = mpsc::channel(tracked_capacity(cfg.max_in_flight));
        Ok((
            Publisher {
                producer,
                topic: cfg.topic.clone(),
                permits: Arc::new(Semaphore::new(cfg.max_in_flight)),
                kib: Arc::new(Semaphore::new(cfg.max_in_flight_bytes.div_ceil(1024))),
                max_kib: cfg.max_in_flight_bytes.div_ceil(1024) as u32,
                tracked: tx,
                metrics: metrics.clone(),
                txn_had_records: false,
            },
            AckTracker {
                tracked: rx,
                checkpoint_path,
                interval: checkpoint_interval,
                metrics,
                writer: None,
                refused,
            },
        ))
    }

    /// Hands one record to Kafka; waits while `max_in_flight` records are unacknowledged.
    pub async fn publish(&mut self, record: &Record, kafka_key: &str) -> Result<(), PublishError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let payload = record.to_json();
        let kib = (payload.len().div_ceil(1024) as u32).clamp(1, self.max_kib);
        let bytes_permit = self
            .kib
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("semaphore never closed");
        let keys = record.keys().count() as u64;
        let mut backoff = Duration::from_millis(1);
        let delivery = loop {
            let fr = FutureRecord::to(&self.topic)
                .key(kafka_key)
                .payload(&payload);
            match self.producer.send_result(fr) {
                Ok(d) => break d,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // Transient: librdkafka's local queue is full; wait for it to drain.
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(PublishError::Permanent(format!(
                        "record for {}:{} refused: {e}",
                        record.source.file, record.source.pos
                    )))
                }
            }
        };
        self.metrics.records_in_flight.fetch_add(1, Relaxed);
        self.metrics.records_published.fetch_add(1, Relaxed);
        self.metrics.keys_published.fetch_add(keys, Relaxed);
        self.txn_had_records = true;
        self.tracked
            .send(Tracked::Record {
                delivery,
                _permit: permit,
                _bytes: bytes_permit,
            })
            .await
            .map_err(|_| PublishError::TrackerGone)
    }

    /// Marks the end of a transaction at `position` (the start of the next one); waits while the
    /// tracker's queue is full (back-pressure, as [`Publisher::publish`]).
    pub async fn commit(
        &mut self,
        position: Position,
        read_at: Instant,
    ) -> Result<(), PublishError> {
        self.mark(position, read_at, true).await
    }

    /// Marks a new position that ends no transaction (a binlog rotation).
    pub async fn advance(&mut self, position: Position) -> Result<(), PublishError> {
        self.mark(position, Instant::now(), false).await
    }

    async fn mark(
        &mut self,
        position: Position,
        read_at: Instant,
        is_transaction: bool,
    ) -> Result<(), PublishError> {
        let had_records = std::mem::take(&mut self.txn_had_records);
        self.tracked
            .send(Tracked::Commit {
                position,
                read_at,
                had_records,
                is_transaction,
            })
            .await
            .map_err(|_| PublishError::TrackerGone)
    }

    /// Connects to the brokers and checks the topic exists, so the first transaction does not pay
    /// for connection set-up and a missing topic is a clear error rather than a silent stall.
    /// Kafka being unreachable is not an error here: publishing will wait for it (back-pressure).
    pub async fn warm_up(&self, timeout: Duration) -> Result<(), PublishError> {
        let client = self.producer.clone();
        let topic = self.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(Some(&topic), timeout)
        })
        .await
        .map_err(|e| PublishError::Permanent(e.to_string()))?;
        match metadata {
            Ok(md) => {
                let missing = md.topics().iter().any(|t| {
                    t.name() == self.topic
                        && matches!(
                            t.error().map(RDKafkaErrorCode::from),
                            Some(RDKafkaErrorCode::UnknownTopicOrPartition)
                        )
                });
                if missing || md.topics().iter().all(|t| t.partitions().is_empty()) {
                    return Err(PublishError::Permanent(format!(
                        "topic {:?} does not exist on the brokers: create it (squeal does not auto-create topics)",
                        self.topic
                    )));
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "Kafka not reachable yet; records will wait for it");
                Ok(())
            }
        }
    }

    /// Waits up to `timeout` for librdkafka to deliver what it holds.
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// Describes a producer-creation error without any value of the user's `[kafka.properties]`.
///
/// rdkafka's own `Display` of a rejected property ends with the property's value, and librdkafka's
/// messages may quote it (`Invalid value "..." for configuration property ...`); those values may
/// be credentials (`sasl.password`, `ssl.key.password`), and a misspelt name (`sasl.pasword`) is no
/// less secret. So the property's name is kept and every user-supplied value is replaced by `***`
/// wherever it appears in the message, whatever the property's name.
fn describe_config_error(error: &KafkaError, cfg: &KafkaConfig) -> String {
    let values: Vec<&str> = cfg.properties.values().map(String::as_str).collect();
    match error {
        KafkaError::ClientConfig(_, description, key, _value) => format!(
            "Kafka property \"{key}\" rejected (value not shown): {}",
            redact_values(description, &values)
        ),
        other => redact_values(&other.to_string(), &values),
    }
}

/// Replaces every occurrence of any of `values` in `text` by `***` (longest match first, in one
/// pass, so a replacement is never re-scanned). Empty values are ignored.
fn redact_values(text: &str, values: &[&str]) -> String {
    let mut values: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        match values.iter().find(|v| rest.starts_with(**v)) {
            Some(v) => {
                out.push_str("***");
                rest = &rest[v.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

fn file_index(file: &str) -> u64 {
    file.rsplit('.')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits for the brokers to refuse the producer's credentials, and returns librdkafka's reason
/// (it names the broker and the SASL step, never the credentials). Pends for ever once the
/// producer is gone.
async fn credentials_refused(refused: &mut watch::Receiver<Option<String>>) -> String {
    // The guard `wait_for` gives must be gone before any other await (it is not `Send`).
    let reason = match refused.wait_for(Option::is_some).await {
        Ok(reason) => reason.clone(),
        Err(_) => None,
    };
    match reason {
        Some(reason) => reason,
        None => std::future::pending().await,
    }
}

impl AckTracker {
    /// Flushes what is acknowledged (so a restart repeats as little as possible) and gives the
    /// error that stops squeal when the brokers refused its credentials.
    fn refused_credentials(
        &mut self,
        acked: &Option<Position>,
        dirty: &mut bool,
        last_write: &mut Instant,
        reason: String,
    ) -> PublishError {
        if let Err(e) = self.flush_if_due(acked, dirty, last_write, true) {
            return e;
        }
        PublishError::Permanent(format!(
            "the brokers refused squeal's credentials (check [kafka.properties] sasl.*): {reason}"
        ))
    }

    /// Runs until the publisher is dropped and everything sent was acknowledged, or a delivery
    /// fails permanently. Writes the checkpoint at most every `interval`, and once at the end.
    pub async fn run(mut self) -> Result<(), PublishError> {
        let metrics = self.metrics.clone();
        self.writer = Some(checkpoint::CheckpointWriter::spawn(
            self.checkpoint_path.clone(),
            move |p| {
                metrics
                    .checkpoint_file_index
                    .store(file_index(&p.file), Relaxed);
                metrics.checkpoint_position.store(p.pos, Relaxed);
            },
        ));
        let result = self.track().await;
        let written = self.writer.take().expect("writer started").finish();
        result.and(written.map_err(PublishError::from))
    }

    async fn track(&mut self) -> Result<(), PublishError> {
        let mut refused = self.refused.clone();
        let mut acked: Option<Position> = None;
        let mut dirty = false;
        let mut last_write = Instant::now();
        let mut tick = tokio::time::interval(self.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = tokio::select! {
                item = self.tracked.recv() => item,
                _ = tick.tick() => {
                    self.flush_if_due(&acked, &mut dirty, &mut last_write, false)?;
                    continue;
                }
                reason = credentials_refused(&mut refused) => {
                    return Err(self.refused_credentials(&acked, &mut dirty, &mut last_write, reason));
                }
            };
            match item {
                None => {
                    self.flush_if_due(&acked, &mut dirty, &mut last_write, true)?;
                    return Ok(());
                }
                Some(Tracked::Record {
                    mut delivery,
                    _permit,
                    _bytes,
                }) => {
                    let result = loop {
                        tokio::select! {
                            r = &mut delivery => break r,
                            _ = tick.tick() => self.flush_if_due(&acked, &mut dirty, &mut last_write, false)?,
                            reason = credentials_refused(&mut refused) => {
                                return Err(self.refused_credentials(&acked, &mut dirty, &mut last_write, reason));
                            }
                        }
                    };
                    self.metrics.records_in_flight.fetch_sub(1, Relaxed);
                    match result {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => {
                            // Flush what is acknowledged so a restart repeats as little as possible.
                            self.flush_if_due(&acked, &mut dirty, &mut last_write, true)?;
                            return Err(PublishError::Permanent(format!("delivery failed: {e}")));
                        }
                        Err(_) => {
                            return Err(PublishError::Permanent(
                                "producer dropped a delivery".into(),
                            ))
                        }
                    }
                }
                Some(Tracked::Commit {
                    position,
                    read_at,
                    had_records,
                    is_transaction,
                }) => {
                    if had_records {
                        self.metrics.observe_latency(read_at.elapsed());
                    }
                    if is_transaction {
                        self.metrics.transactions_published.fetch_add(1, Relaxed);
                    }
                    acked = Some(position);
                    dirty = true;
                    self.flush_if_due(&acked, &mut dirty, &mut last_write, false)?;
                }
            }
        }
    }

    fn flush_if_due(
        &self,
        acked: &Option<Position>,
        dirty: &mut bool,
        last_write: &mut Instant,
        force: bool,
    ) -> Result<(), PublishError> {
        let Some(position) = acked else { return Ok(()) };
        if !*dirty || (!force && last_write.elapsed() < self.interval) {
            return Ok(());
        }
        self.writer
            .as_ref()
            .expect("writer started")
            .submit(position.clone())?;
        *dirty = false;
        *last_write = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_every_value_longest_first_in_one_pass() {
        let text = "Invalid value \"s3cret/long\" for \"sasl.password\"; s3cret again";
        let out = redact_values(text, &["s3cret", "s3cret/long", ""]);
        assert_eq!(
            out,
            "Invalid value \"***\" for \"sasl.password\"; *** again"
        );
        // A replacement is not re-scanned, so `***` cannot combine into a secret made of stars.
        assert_eq!(redact_values("x****y", &["****", "**"]), "x***y");
        assert_eq!(redact_values("naïve é", &["é"]), "naïve ***");
    }
}
