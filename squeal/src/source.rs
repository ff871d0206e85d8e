//! The binlog source: connects as a replica, streams events, turns committed transactions into
//! records and hands them to the [`Publisher`]; reconnects with backoff when the server goes away.
//!
//! Reading resumes at the last transaction boundary handed to the publisher (after a reconnect)
//! or at the checkpoint (after a restart), so a transaction is never half-published: a partial
//! transaction in the buffer is discarded and read again. A checkpoint naming a binlog file the
//! server no longer has is fatal, with the way out in the message.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogDumpFlags, BinlogStream, BinlogStreamRequest, Conn, Row};
use tokio::sync::watch;

use invalidation::{Operation, SourcePosition, TableRef};

use crate::checkpoint::{FileCreated, Position};
use crate::config::{Config, ResumeBy};
use crate::events::{self, Statement};
use crate::gtid_set::GtidSet;
use crate::metrics::Metrics;
use crate::progress::{valid_gtid_state, Progress};
use crate::publish::{PublishError, Publisher};
use crate::render::{self, Flavor, TableShape};
use crate::rules::{NameCase, Rules, TableKeys, TableRules};
use crate::txn::{ChunkLimits, TxnBuffer};
use crate::wire::{self, Decoded};

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// squeal must stop; the message says why and what to do.
    #[error("{0}")]
    Fatal(String),
    /// The connection failed; squeal reconnects.
    #[error("source: {0}")]
    Transient(String),
    /// The server ended the stream because another replica connected with squeal's server_id
    /// (MariaDB error 4052). squeal reconnects, which takes the stream back, unless it keeps
    /// happening ([`SAME_SERVER_ID_LIMIT`]): then two replicas share one id for good.
    #[error("source: {0}")]
    SameServerId(String),
    /// Publishing failed for good.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

fn classify_mysql(e: mysql_async::Error) -> SourceError {
    match &e {
        mysql_async::Error::Server(se) if se.code == 1236 => SourceError::Fatal(format!(
            "the server refused to send its binlog (error 1236: {}). If the binlog file was purged, \
             see README \"Recovering from a purged binlog\".",
            se.message
        )),
        mysql_async::Error::Server(se) if matches!(se.code, 1045 | 1227 | 1044 | 1142) => {
            SourceError::Fatal(format!("access denied: {} (run `squeal check`)", se.message))
        }
        // ER_SLAVE_SAME_ID (MySQL reports the same with 1236, fatal above).
        mysql_async::Error::Server(se) if se.code == 4052 => {
            SourceError::SameServerId(e.to_string())
        }
        _ => SourceError::Transient(e.to_string()),
    }
}

/// Errors of the binlog request itself (COM_REGISTER_SLAVE, then COM_BINLOG_DUMP). MariaDB refuses
/// COM_REGISTER_SLAVE to a user without REPLICATION SLAVE with error 1045, whose text ("Access denied
/// for user ... (using password: YES)") reads like a wrong password; after a login that succeeded,
/// it can only mean the missing grant, so the message names it.
fn classify_dump_request(e: mysql_async::Error) -> SourceError {
    match &e {
        mysql_async::Error::Server(se) if matches!(se.code, 1045 | 1227) => {
            SourceError::Fatal(format!(
                "access denied: the server refused to send its binlog to squeal's user (error {}: \
                 {}); reading the binlog needs the privilege REPLICATION SLAVE: GRANT REPLICATION \
                 SLAVE ON *.* TO <squeal user> (run `squeal check`)",
                se.code, se.message
            ))
        }
        _ => classify_mysql(e),
    }
}

/// squeal stops when another replica takes its stream over (same server_id) this many times within
/// [`SAME_SERVER_ID_WINDOW`]. Once can be squeal's own earlier connection still open on the server
/// after a crash or a network cut: reconnecting takes the stream back. Two live replicas with one id
/// take it from each other for good, and neither gets the binlog reliably; a MariaDB replica
/// reconnects after `MASTER_CONNECT_RETRY` (60 s by default), hence the long window.
const SAME_SERVER_ID_LIMIT: usize = 3;
/// See [`SAME_SERVER_ID_LIMIT`].
const SAME_SERVER_ID_WINDOW: Duration = Duration::from_secs(600);

/// MySQL's PARTIAL_UPDATE_ROWS_EVENT (`binlog_row_value_options=PARTIAL_JSON`) logs a JSON column's
/// new value as a diff against the old one: a key over that column cannot be rendered from it (before,
/// such a key went out as `...%JSONDIFF`, a key no application builds, and the real new key was never
/// invalidated). The row then counts as a partial image: flush_table.
fn key_over_a_json_diff(image: &mysql_async::binlog::row::BinlogRow, keys: &TableKeys) -> bool {
    keys.columns()
        .any(|i| matches!(image.as_ref(i), Some(BinlogValue::JsonDiff(_))))
}

/// The tables whose rows `statement` replaced without row events (TRUNCATE, DROP, renames,
/// partition maintenance; DROP DATABASE as `db.*`) and that a rule matches: each gets
/// flush_table. `schema` is the statement's default database. The names are the statement's
/// text, which the server with `lower_case_table_names` (its `@@lower_case_table_names`) other
/// than 0 takes in any case: they are then matched ignoring case, and with 1, where the server
/// stores and logs names lowercased, published lowercased (as its row events name the table).
pub fn flushed_by(
    rules: &Rules,
    statement: &Statement,
    schema: &str,
    lower_case_table_names: u64,
) -> Vec<TableRef> {
    let case = NameCase::of_server(lower_case_table_names);
    let stored = |name: &str| {
        if lower_case_table_names == 1 {
            name.to_lowercase()
        } else {
            name.to_owned()
        }
    };
    match statement {
        Statement::Truncate(tables) | Statement::Drop(tables) | Statement::RowsReplaced(tables) => {
            tables
                .iter()
                .filter_map(|t| {
                    let db = stored(t.db.as_deref().unwrap_or(schema));
                    let name = stored(&t.name);
                    rules
                        .matches(&db, &name, case)
                        .then(|| TableRef::new(db, name))
                })
                .collect()
        }
        Statement::DropDatabase(db) => {
            let db = stored(db);
            if rules.may_match_db(&db, case) {
                vec![TableRef::new(db, "*")]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

fn io_fatal(e: std::io::Error) -> SourceError {
    SourceError::Fatal(format!("cannot decode binlog event: {e}"))
}

/// The message for a checkpoint whose binlog file is gone.
pub fn purged_message(position: &Position, available: &[String]) -> String {
    format!(
        "the checkpoint says to resume at binlog {}:{}, but the server no longer has {} \
         (it has {}). The invalidations from there up to the oldest remaining binlog are lost, and \
         squeal will not skip them silently. To recover: (1) flush, or wait out the TTL of, every \
         cache these tables feed in every region; (2) move the checkpoint file aside; (3) start \
         squeal again with source.start_from = \"current\" (or \"earliest\"). To prevent this, keep \
         binlogs longer than squeal can be down (expire_logs_days / binlog_expire_logs_seconds).",
        position.file,
        position.pos,
        position.file,
        if available.is_empty() {
            "no binlogs".to_owned()
        } else {
            format!("{} .. {}", available[0], available[available.len() - 1])
        }
    )
}

/// The message for a GTID set the server can no longer serve: it purged transactions the
/// checkpoint has not seen.
pub fn gtid_purged_message(saved: &GtidSet, missing: &GtidSet) -> String {
    format!(
        "the checkpoint's GTID set is {saved}, but the server has purged transactions it does not \
         contain ({missing}). Their invalidations are lost, and squeal will not skip them silently. \
         To recover: (1) flush, or wait out the TTL of, every cache these tables feed in every \
         region; (2) move the checkpoint file aside; (3) start squeal again with \
         source.start_from = \"current\" (or \"earliest\"). To prevent this, keep binlogs longer \
         than squeal can be down (binlog_expire_logs_seconds)."
    )
}

/// MySQL: `Some(missing)` when `@@GLOBAL.gtid_purged` holds transactions `saved` lacks.
pub async fn purged_gap(conn: &mut Conn, saved: &GtidSet) -> Result<Option<GtidSet>, SourceError> {
    let purged: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_purged")
        .await
        .map_err(classify_mysql)?;
    let purged: GtidSet = purged
        .unwrap_or_default()
        .parse()
        .map_err(|e| SourceError::Fatal(format!("@@gtid_purged: {e}")))?;
    let missing = purged.difference(saved);
    Ok((!missing.is_empty()).then_some(missing))
}

/// The binlog request: from `file`:`pos`, or with `gtid_set` (MySQL, as a replica with
/// `MASTER_AUTO_POSITION=1`) COM_BINLOG_DUMP_GTID carrying the executed set, so that the server
/// sends every transaction not in it (file and position are then ignored: empty and 4).
/// On MariaDB the dump flag 0x02 asks for ANNOTATE_ROWS events.
pub fn dump_request<'a>(
    server_id: u32,
    mariadb: bool,
    file: &'a str,
    pos: u64,
    gtid_set: Option<&GtidSet>,
) -> BinlogStreamRequest<'a> {
    let mut request = BinlogStreamRequest::new(server_id);
    request = match gtid_set {
        Some(set) => request
            .with_filename(b"")
            .with_pos(4)
            .with_gtid()
            .with_gtid_set(set.to_sids()),
        None => request.with_filename(file.as_bytes()).with_pos(pos),
    };
    if mariadb {
        // 0x02 is MariaDB's BINLOG_SEND_ANNOTATE_ROWS_EVENT (MySQL names the bit differently).
        request = request.with_flags(BinlogDumpFlags::BINLOG_THROUGH_POSITION);
    }
    request
}

/// A ruled table's layout and bound templates for one table id.
struct BoundTable {
    table: TableRef,
    shape: TableShape,
    /// Templates bound to column positions, or why they cannot be rendered (→ flush the table).
    keys: Result<TableKeys, String>,
}

/// The server's `@@lower_case_table_names` (0 when it has none): how it compares table names, and
/// so how the rules must match them (`NameCase::of_server`). Read by `run` at each connect and by
/// `squeal check`.
pub async fn lower_case_table_names(conn: &mut Conn) -> Result<u64, mysql_async::Error> {
    let value: Option<u64> = conn.query_first("SELECT @@lower_case_table_names").await?;
    Ok(value.unwrap_or(0))
}

/// Lists the server's binlog files (`SHOW BINARY LOGS`).
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<String>, mysql_async::Error> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get_opt::<String, usize>(0).and_then(Result::ok))
        .collect())
}

/// True when the server is MariaDB.
pub async fn is_mariadb(conn: &mut Conn) -> Result<bool, mysql_async::Error> {
    let v: Option<String> = conn.query_first("SELECT VERSION()").await?;
    Ok(v.unwrap_or_default().to_lowercase().contains("mariadb"))
}

/// Reads the binlog and publishes; owns all per-connection state.
pub struct Source {
    cfg: Arc<Config>,
    rules: Rules,
    metrics: Arc<Metrics>,
    publisher: Publisher,
    /// The boundary, GTID state/set and held XA transactions.
    progress: Progress,
    /// Rules per (db, table), so unruled tables cost one hash lookup.
    table_rules: HashMap<(String, String), Option<TableRules>>,
    /// Table id → binding, for the current transaction (table maps precede rows in each one).
    bound: HashMap<u64, Option<Arc<BoundTable>>>,
    /// Current binlog file.
    file: String,
    /// Inside BEGIN..COMMIT (or a MariaDB non-standalone GTID group).
    in_txn: bool,
    /// Keys of a held XA transaction whose XA COMMIT is being handled (published with it).
    released: Option<TxnBuffer>,
    /// End position of the last event with a non-zero position.
    last_log_pos: u64,
    /// Keys of the current transaction.
    buffer: TxnBuffer,
    /// A FORMAT_DESCRIPTION event was seen on this stream (before it, the reader does not know
    /// that events carry a CRC32 trailer, so the fake ROTATE's name would include it).
    fde_seen: bool,
    /// This connection asked for the binlog by GTID, so it may read another server of the
    /// topology than the checkpoint's (see [`Progress::same_file`]).
    streaming_by_gtid: bool,
    /// The server writes CRC32 checksums (`@@global.binlog_checksum`).
    server_checksums: bool,
    /// Tables already reported as unrenderable (log once).
    reported: std::collections::HashSet<String>,
    /// The server of the current connection (table maps differ in their charset metadata).
    flavor: Flavor,
    /// `@@lower_case_table_names` of the current connection's server (see [`flushed_by`]).
    lower_case_table_names: u64,
}

impl Source {
    /// A source that starts reading at `start`.
    pub fn new(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        publisher: Publisher,
        start: Position,
    ) -> Result<Source, SourceError> {
        let file = start.file.clone();
        let progress = Progress::new(start).map_err(|e| {
            SourceError::Fatal(format!("the checkpoint's gtid_set is unreadable: {e}"))
        })?;
        let rules = Rules::compile(&cfg.rules).map_err(|e| SourceError::Fatal(e.to_string()))?;
        Ok(Source {
            buffer: TxnBuffer::new(
                cfg.transactions.max_buffered_keys,
                cfg.transactions.spill_dir.clone(),
            ),
            cfg,
            rules,
            metrics,
            publisher,
            file,
            progress,
            table_rules: HashMap::new(),
            bound: HashMap::new(),
            in_txn: false,
            released: None,
            last_log_pos: 0,
            fde_seen: false,
            streaming_by_gtid: false,
            server_checksums: false,
            reported: Default::default(),
            flavor: Flavor::MySql,
            lower_case_table_names: 0,
        })
    }

    /// Reads until shutdown is signalled or a fatal error; reconnects on transient errors.
    /// Returns the publisher so the caller can flush it.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> (Publisher, Result<(), SourceError>) {
        let initial = Duration::from_millis(self.cfg.source.reconnect_initial_backoff_ms);
        let max = Duration::from_millis(self.cfg.source.reconnect_max_backoff_ms);
        let mut backoff = initial;
        // When other replicas with squeal's server_id took the stream over, latest last.
        let mut taken_over: std::collections::VecDeque<tokio::time::Instant> = Default::default();
        loop {
            let before = self.metrics.events_read.load(Relaxed);
            let result = tokio::select! {
                r = self.stream_once() => r,
                _ = shutdown.changed() => return (self.publisher, Ok(())),
            };
            let result = match result {
                Err(SourceError::SameServerId(msg)) => {
                    let now = tokio::time::Instant::now();
                    taken_over.retain(|at| now.duration_since(*at) < SAME_SERVER_ID_WINDOW);
                    taken_over.push_back(now);
                    if taken_over.len() >= SAME_SERVER_ID_LIMIT {
                        Err(SourceError::Fatal(format!(
                            "another replica uses server_id {} too: the server ended squeal's \
                             stream for it {} times in {} minutes ({msg}). Replicas with one id \
                             take the stream from each other, so neither reads the binlog \
                             reliably; squeal stops, its checkpoint where it was. Set \
                             source.server_id to an id no server or replica uses (SHOW SLAVE \
                             HOSTS on the primary lists the connected ones) and start it again.",
                            self.cfg.source.server_id,
                            taken_over.len(),
                            SAME_SERVER_ID_WINDOW.as_secs() / 60
                        )))
                    } else {
                        Err(SourceError::Transient(msg))
                    }
                }
                other => other,
            };
            match result {
                Ok(()) => {}
                Err(SourceError::Transient(msg)) => {
                    if self.metrics.events_read.load(Relaxed) > before + 1 {
                        backoff = initial;
                    }
                    tracing::warn!(error = %msg, retry_in_ms = backoff.as_millis() as u64, resume = %format!("{}:{}", self.progress.boundary.file, self.progress.boundary.pos), "source connection lost; reconnecting");
                    self.metrics.source_reconnects.fetch_add(1, Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return (self.publisher, Ok(())),
                    }
                    backoff = (backoff * 2).min(max);
                }
                Err(e) => return (self.publisher, Err(e)),
            }
        }
    }

    async fn stream_once(&mut self) -> Result<(), SourceError> {
        let opts = self
            .cfg
            .mysql_opts()
            .map_err(|e| SourceError::Fatal(e.to_string()))?;
        let mut conn = Conn::new(opts).await.map_err(classify_mysql)?;
        let mariadb = is_mariadb(&mut conn).await.map_err(classify_mysql)?;
        // Table maps are read again on each connection (`bound` is cleared below).
        self.flavor = if mariadb {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        };
        let gtid_state = self
            .progress
            .boundary
            .gtid_state
            .clone()
            .filter(|s| valid_gtid_state(s));
        let gtid_set: Option<GtidSet> = self
            .progress
            .boundary
            .gtid_set
            .as_deref()
            .and_then(|s| s.parse().ok())
            .filter(|s: &GtidSet| !s.is_empty());
        let by_gtid = self.cfg.source.resume == ResumeBy::Gtid && mariadb && gtid_state.is_some();
        let by_gtid_set =
            self.cfg.source.resume == ResumeBy::Gtid && !mariadb && gtid_set.is_some();
        if self.cfg.source.resume == ResumeBy::Gtid && !by_gtid && !by_gtid_set {
            // First start (or a checkpoint from before GTID tracking): the position is exact,
            // and the GTID state/set is built from here on.
            tracing::warn!(mariadb, "resume by GTID: the checkpoint has no GTID state/set yet; resuming by file and position");
        }
        if let (true, Some(saved)) = (by_gtid_set, &gtid_set) {
            if let Some(missing) = purged_gap(&mut conn, saved).await? {
                return Err(SourceError::Fatal(gtid_purged_message(saved, &missing)));
            }
        }
        if !by_gtid && !by_gtid_set {
            let logs = binary_logs(&mut conn).await.map_err(classify_mysql)?;
            if !logs.contains(&self.progress.boundary.file) {
                return Err(SourceError::Fatal(purged_message(
                    &self.progress.boundary,
                    &logs,
                )));
            }
        }
        // Statements name tables as the client typed them, and row events as the server stores
        // them; this says how the server compares them (and so how squeal must match them with
        // the rules). The rules bound per table were matched under the previous value.
        let lower_case_table_names = lower_case_table_names(&mut conn)
            .await
            .map_err(classify_mysql)?;
        if lower_case_table_names != self.lower_case_table_names {
            self.table_rules.clear();
        }
        self.lower_case_table_names = lower_case_table_names;
        let checksum: Option<String> = conn
            .query_first("SELECT @@global.binlog_checksum")
            .await
            .map_err(classify_mysql)?;
        self.server_checksums = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        self.fde_seen = false;
        // MariaDB: send real GTID events (capability 4 = MARIA_SLAVE_CAPABILITY_GTID).
        conn.query_drop("SET @mariadb_slave_capability=4")
            .await
            .map_err(classify_mysql)?;
        // Without the variable the server sends no heartbeats: `heartbeat_ms = 0`.
        if let Some(heartbeat_ns) = self.cfg.source.heartbeat_period_ns() {
            conn.query_drop(format!("SET @master_heartbeat_period={heartbeat_ns}"))
                .await
                .map_err(classify_mysql)?;
        }
        let file = if by_gtid {
            let state = gtid_state.as_deref().unwrap_or_default();
            // Validated above to digits, '-' and ',' only.
            conn.query_drop(format!("SET @slave_connect_state='{state}'"))
                .await
                .map_err(classify_mysql)?;
            conn.query_drop("SET @slave_gtid_strict_mode=1")
                .await
                .map_err(classify_mysql)?;
            String::new() // the server finds the file from the GTID state
        } else {
            self.progress.boundary.file.clone()
        };
        let pos = if by_gtid {
            4
        } else {
            self.progress.boundary.pos
        };
        let request = dump_request(
            self.cfg.source.server_id,
            mariadb,
            &file,
            pos,
            gtid_set.as_ref().filter(|_| by_gtid_set),
        );
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(classify_dump_request)?;
        self.streaming_by_gtid = by_gtid || by_gtid_set;
        if by_gtid {
            tracing::info!(gtid_state = %gtid_state.as_deref().unwrap_or_default(), "streaming binlog from GTID state");
        } else if let (true, Some(set)) = (by_gtid_set, &gtid_set) {
            tracing::info!(gtid_set = %set, "streaming binlog from GTID set");
        } else {
            tracing::info!(file = %self.progress.boundary.file, pos = self.progress.boundary.pos, mariadb, "streaming binlog");
        }
        self.file = self.progress.boundary.file.clone();
        self.last_log_pos = self.progress.boundary.pos;
        self.in_txn = false;
        self.progress.abandon_group();
        self.buffer.reset();
        self.released = None;
        self.bound.clear();
        while let Some(event) = stream.next().await {
            let event = event.map_err(classify_mysql)?;
            self.handle(&stream, event).await?;
        }
        Err(SourceError::Transient(
            "the server ended the binlog stream".into(),
        ))
    }

    async fn handle(&mut self, stream: &BinlogStream, event: Event) -> Result<(), SourceError> {
        let header = event.header();
        self.metrics.events_read.fetch_add(1, Relaxed);
        if header.log_pos() > 0 {
            self.last_log_pos = header.log_pos() as u64;
        }
        let decoded = wire::decode(&event).map_err(io_fatal)?;
        if header.timestamp() > 0 && decoded != Decoded::Heartbeat {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.metrics
                .seconds_behind_source
                .store((now - header.timestamp() as i64).max(0), Relaxed);
        }
        match decoded {
            Decoded::FormatDescription => {
                self.fde_seen = true;
                self.same_file(FileCreated {
                    server_id: header.server_id(),
                    at: header.timestamp(),
                })?;
            }
            Decoded::Rotate { raw_name, pos } => {
                let mut name = raw_name.as_slice();
                if !self.fde_seen && self.server_checksums && name.len() > 4 {
                    // The reader does not know about checksums yet: drop the CRC32 trailer.
                    name = &name[..name.len() - 4];
                }
                self.file = String::from_utf8_lossy(name).into_owned();
                if header.log_pos() == 0 && header.timestamp() == 0 {
                    // Fake rotate at stream start: names the file only.
                    return Ok(());
                }
                if !self.in_txn {
                    let position = self.progress.rotation(self.file.clone(), pos);
                    self.publisher
                        .advance(self.progress.checkpoint_for(&position))
                        .await?;
                    self.progress.advance(position);
                }
            }
            Decoded::Query { schema, sql } => self.handle_query(&event, schema, &sql).await?,
            Decoded::Xid => self.commit(&event).await?,
            Decoded::XaPrepare {
                one_phase: true, ..
            } => self.commit(&event).await?,
            Decoded::XaPrepare { xid, .. } => {
                // The row events of an XA transaction come before XA PREPARE; XA COMMIT (or XA
                // ROLLBACK) follows later as a group of its own. Publishing now would let a reader
                // refill a cache from the old row before the commit: hold the keys until then.
                if !self.buffer.is_empty() {
                    let buffer = std::mem::replace(
                        &mut self.buffer,
                        TxnBuffer::new(
                            self.cfg.transactions.max_buffered_keys,
                            self.cfg.transactions.spill_dir.clone(),
                        ),
                    );
                    tracing::info!(%xid, keys = buffer.len(), "XA transaction prepared: holding its keys until XA COMMIT");
                    self.progress.hold(xid, buffer);
                    self.metrics
                        .xa_transactions_held
                        .store(self.progress.held() as i64, Relaxed);
                }
                self.commit(&event).await?;
            }
            Decoded::TableMap => {
                let tme: TableMapEvent<'_> = event.read_event().map_err(io_fatal)?;
                self.bind_table(&tme).await?;
            }
            Decoded::StatementText(text) => self.add_embedded(&text)?,
            Decoded::MySqlGtid { gtid, tag } => self.progress.mysql_gtid(gtid, tag),
            Decoded::PreviousGtids(set) => self.progress.previous_gtids(&set),
            Decoded::MariaGtidList(list) => {
                // The state before this file: everything listed was committed earlier.
                self.progress.gtid_list(list);
            }
            Decoded::MariaGtid(g) => {
                self.buffer.reset();
                self.bound.clear();
                self.progress.mariadb_gtid(g.gtid);
                self.in_txn = !g.is_standalone();
            }
            Decoded::Heartbeat => {
                if !self.in_txn {
                    self.metrics.seconds_behind_source.store(0, Relaxed);
                }
            }
            Decoded::Rows => match event.read_data().map_err(io_fatal)? {
                Some(EventData::RowsEvent(rows)) => self.handle_rows(stream, &rows)?,
                _ => return Err(self.unreadable_rows(&event)),
            },
            Decoded::CompressedRows { table_id } => {
                // Unruled tables are skipped without decompressing, as plain rows are skipped
                // without decoding (handle_rows checks the same binding).
                if matches!(self.bound.get(&table_id), Some(Some(_))) {
                    let plain = wire::decompress_rows(&event).map_err(|e| {
                        SourceError::Fatal(format!(
                            "cannot decompress a compressed rows event (log_bin_compress) at {}:{}: {e}. \
                             squeal stops rather than skip its rows; the checkpoint stays before it. \
                             Set log_bin_compress=OFF on the server if this persists.",
                            self.file, self.last_log_pos
                        ))
                    })?;
                    match plain.read_data().map_err(io_fatal)? {
                        Some(EventData::RowsEvent(rows)) => self.handle_rows(stream, &rows)?,
                        _ => return Err(self.unreadable_rows(&event)),
                    }
                }
            }
            // Verified in wire::decode; the events inside it follow.
            Decoded::TransactionPayload => {}
            Decoded::Unsupported(what) => {
                return Err(SourceError::Fatal(format!(
                    "{what} at {}:{}: squeal cannot tell which rows it changed, and stops rather \
                     than skip it (the checkpoint stays before it)",
                    self.file, self.last_log_pos
                )))
            }
            Decoded::Other => {}
        }
        Ok(())
    }

    /// Checks that the current file is the one squeal read (or checkpointed) under that name, by
    /// who created it when; fails if the server's binlogs were reset meanwhile, or (resuming by
    /// position) if this is another server's file of the same name.
    fn same_file(&mut self, created: FileCreated) -> Result<(), SourceError> {
        let Err(was) = self
            .progress
            .same_file(&self.file, created, self.streaming_by_gtid)
        else {
            return Ok(());
        };
        Err(SourceError::Fatal(format!(
            "binlog {} was created anew (its format description event is dated {} by server_id \
             {}, not {} by server_id {} as when squeal read it): RESET MASTER, a restored server, \
             or another server with binlogs of the same name? Positions in it no longer match the \
             checkpoint ({}:{}), so reading on could skip transactions; squeal stops instead. To \
             recover: (1) flush, or wait out the TTL of, every cache these tables feed in every \
             region; (2) move the checkpoint file aside; (3) start squeal again with \
             source.start_from = \"earliest\" (or \"current\").",
            self.file,
            created.at,
            created.server_id,
            was.at,
            was.server_id,
            self.progress.boundary.file,
            self.progress.boundary.pos
        )))
    }

    fn unreadable_rows(&self, event: &Event) -> SourceError {
        SourceError::Fatal(format!(
            "rows event of type {} at {}:{} could not be read as rows; squeal stops rather than \
             skip it (the checkpoint stays before it)",
            event.header().event_type_raw(),
            self.file,
            self.last_log_pos
        ))
    }

    fn add_embedded(&mut self, statement: &str) -> Result<(), SourceError> {
        for key in events::embedded_keys(statement) {
            self.buffer
                .add_key(None, Operation::Embedded, key)
                .map_err(|e| SourceError::Fatal(format!("transaction spill: {e}")))?;
        }
        Ok(())
    }

    async fn handle_query(
        &mut self,
        event: &Event,
        schema: String,
        sql: &str,
    ) -> Result<(), SourceError> {
        match events::classify_statement(sql) {
            Statement::Begin | Statement::XaStart => {
                self.in_txn = true;
                return Ok(());
            }
            Statement::XaCommit(xid) => {
                match self.progress.release(&xid) {
                    Some(buffer) => {
                        tracing::info!(%xid, "XA COMMIT: publishing the held keys");
                        self.released = Some(buffer);
                    }
                    // Nothing of it was ruled (or it was prepared before squeal's start).
                    None => tracing::debug!(%xid, "XA COMMIT of a transaction without held keys"),
                }
                self.metrics
                    .xa_transactions_held
                    .store(self.progress.held() as i64, Relaxed);
                return self.commit(event).await;
            }
            Statement::XaRollback(xid) => {
                if self.progress.release(&xid).is_some() {
                    tracing::info!(%xid, "XA ROLLBACK: dropping the held keys");
                }
                self.metrics
                    .xa_transactions_held
                    .store(self.progress.held() as i64, Relaxed);
                return self.commit(event).await;
            }
            Statement::Commit | Statement::Rollback => return self.commit(event).await,
            statement @ (Statement::Truncate(_)
            | Statement::Drop(_)
            | Statement::RowsReplaced(_)
            | Statement::DropDatabase(_)) => {
                for table in flushed_by(
                    &self.rules,
                    &statement,
                    &schema,
                    self.lower_case_table_names,
                ) {
                    // The statement's kind and place, not its text: a `CREATE OR REPLACE TABLE`
                    // may carry a password (FEDERATED/CONNECT `CONNECTION='mysql://user:pw@...'`).
                    let kind = match statement {
                        Statement::Truncate(_) => "TRUNCATE",
                        Statement::Drop(_) => "DROP TABLE or CREATE OR REPLACE TABLE",
                        Statement::DropDatabase(_) => "DROP DATABASE",
                        _ => "RENAME, EXCHANGE or partition maintenance",
                    };
                    tracing::info!(table = %format!("{}.{}", table.db, table.name), statement = kind, at = %format!("{}:{}", self.file, self.last_log_pos), "rows truncated, dropped, swapped or renamed without row events: publishing flush_table");
                    self.buffer.add_flush(table);
                }
            }
            // Each table map carries its table's layout (binlog_row_metadata=FULL): nothing to
            // forget.
            Statement::SchemaChange(_) => {}
            Statement::Dml => {
                return Err(SourceError::Fatal(format!(
                    "a data change was logged as a statement at {}:{} (binlog_format is not ROW for this session?): \
                     squeal cannot map statements to keys. Set binlog_format=ROW globally (and in the server's \
                     config) and make sure no session overrides it.",
                    self.file, self.last_log_pos
                )))
            }
            Statement::Other => {}
        }
        if !self.in_txn {
            // A standalone statement (DDL) is its own transaction.
            self.commit(event).await?;
        }
        Ok(())
    }

    async fn bind_table(&mut self, tme: &TableMapEvent<'_>) -> Result<(), SourceError> {
        let db = tme.database_name().into_owned();
        let name = tme.table_name().into_owned();
        let key = (db.clone(), name.clone());
        let rules = match self.table_rules.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r = self.rules.for_table(
                    &db,
                    &name,
                    NameCase::of_server(self.lower_case_table_names),
                );
                self.table_rules.insert(key.clone(), r.clone());
                r
            }
        };
        let Some(rules) = rules else {
            self.bound.insert(tme.table_id(), None);
            return Ok(());
        };
        let shape = TableShape::from_table_map(tme, self.flavor).map_err(io_fatal)?;
        let full = format!("{db}.{name}");
        // Without the column names in the table map (binlog_row_metadata=MINIMAL, set at runtime
        // after `check`, or events written before it was FULL) the only other source is
        // information_schema as it is when squeal reads the row, which after an ALTER that moves
        // or renames a column names the wrong values: a wrong key, stale for good. A flush is
        // safe.
        let names = shape.names().unwrap_or_default();
        let keys = if names.len() != shape.columns.len() {
            Err(format!(
                "table {full}: the binlog carries no column names for it (binlog_row_metadata is \
                 not FULL), so squeal cannot tell which value is which; set \
                 binlog_row_metadata=FULL"
            ))
        } else {
            rules
                .bind(&full, &names)
                .map_err(|e| e.to_string())
                .and_then(|keys| {
                    // A key column whose text squeal cannot convert as the server does would give keys
                    // that differ from the application's, so none would invalidate anything.
                    let problem = keys.columns().find_map(|i| {
                        let problem = shape.columns.get(i)?.charset_problem()?;
                        Some(format!("table {full}, column {}: {problem}", names[i]))
                    });
                    problem.map_or(Ok(keys), Err)
                })
        };
        if let Err(reason) = &keys {
            if self.reported.insert(full.clone()) {
                tracing::error!(%reason, "cannot render keys: publishing flush_table for this table instead");
            }
        }
        self.bound.insert(
            tme.table_id(),
            Some(Arc::new(BoundTable {
                table: TableRef::new(db, name),
                shape,
                keys,
            })),
        );
        Ok(())
    }

    fn handle_rows(
        &mut self,
        stream: &BinlogStream,
        rows: &RowsEventData<'_>,
    ) -> Result<(), SourceError> {
        let table_id = rows.table_id();
        let Some(Some(bound)) = self.bound.get(&table_id).cloned() else {
            return Ok(()); // not ruled: skipped without decoding the rows
        };
        self.in_txn = true;
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                Operation::Insert
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                Operation::Delete
            }
            _ => Operation::Update,
        };
        let keys = match &bound.keys {
            Ok(k) => k,
            Err(_) => {
                self.buffer.add_flush(bound.table.clone());
                return Ok(());
            }
        };
        let tme = stream.get_tme(table_id).ok_or_else(|| {
            SourceError::Fatal(format!("rows event for unknown table id {table_id}"))
        })?;
        let columns = &bound.shape.columns;
        let mut rendered: Vec<String> = Vec::new();
        let mut partial = false;
        // The first value of a key column that could not be rendered (see render::CannotRender).
        let mut unrenderable = None;
        for row in rows.rows(tme) {
            let (before, after) = row.map_err(io_fatal)?;
            for image in [before, after].into_iter().flatten() {
                self.metrics.rows_read.fetch_add(1, Relaxed);
                if image.len() != columns.len() {
                    partial = true; // not a FULL image: keys over missing columns cannot be rendered
                    continue;
                }
                if key_over_a_json_diff(&image, keys) {
                    partial = true;
                    continue;
                }
                let row_keys = keys.render(
                    |i| match image.as_ref(i) {
                        Some(v) => render::render(v, &columns[i]),
                        // Not NULL but absent: this row's keys cannot be known.
                        None => Err(render::CannotRender {
                            column: columns[i].name.clone().unwrap_or_else(|| i.to_string()),
                            reason: "missing from the row image".into(),
                        }),
                    },
                    |k| rendered.push(k),
                );
                if let Err(e) = row_keys {
                    // Skipping the key as for NULL would leave the application's entry stale:
                    // the whole table is flushed instead (the keys rendered so far still go out).
                    unrenderable.get_or_insert(e);
                }
                for k in rendered.drain(..) {
                    self.buffer
                        .add_key(Some(&bound.table), op, k)
                        .map_err(|e| SourceError::Fatal(format!("transaction spill: {e}")))?;
                }
            }
        }
        if partial {
            if self.reported.insert(format!("image:{}", bound.table)) {
                tracing::error!(table = %bound.table, "row image is not FULL (binlog_row_image), or a key column is a partial JSON update (binlog_row_value_options); publishing flush_table");
            }
            self.buffer.add_flush(bound.table.clone());
        } else if let Some(e) = unrenderable {
            if self.reported.insert(format!("value:{}:{e}", bound.table)) {
                tracing::error!(table = %bound.table, reason = %e, "cannot render a key column's value as the application reads it; publishing flush_table");
            }
            self.buffer.add_flush(bound.table.clone());
        }
        Ok(())
    }

    async fn commit(&mut self, event: &Event) -> Result<(), SourceError> {
        let header = event.header();
        let read_at = Instant::now();
        let position = self
            .progress
            .end_group(self.file.clone(), self.last_log_pos);
        if let Some(released) = self.released.take() {
            // A held XA transaction's keys, published at its XA COMMIT (whose own group has
            // no rows, so `current` is empty in practice).
            let current = std::mem::replace(&mut self.buffer, released);
            self.publish_buffer(header.server_id(), header.timestamp(), &position)
                .await?;
            self.buffer = current;
        }
        self.publish_buffer(header.server_id(), header.timestamp(), &position)
            .await?;
        self.publisher
            .commit(self.progress.checkpoint_for(&position), read_at)
            .await?;
        self.progress.advance(position);
        self.in_txn = false;
        self.bound.clear();
        Ok(())
    }

    /// Publishes the keys in `self.buffer` (if any) as records at `position`; empties it.
    async fn publish_buffer(
        &mut self,
        server_id: u32,
        commit_ts: u32,
        position: &Position,
    ) -> Result<(), SourceError> {
        if !self.buffer.is_empty() {
            self.metrics
                .keys_spilled
                .fetch_add(self.buffer.spilled(), Relaxed);
            let source = SourcePosition {
                server_id,
                file: position.file.clone(),
                pos: position.pos,
                gtid: self.progress.gtid(),
            };
            let limits = ChunkLimits {
                max_keys: self.cfg.kafka.max_keys_per_record,
                max_bytes: self.cfg.kafka.max_record_bytes,
            };
            let kafka_key = format!("{}:{}:{}", source.server_id, source.file, source.pos);
            let mut chunker = self
                .buffer
                .finish(source, commit_ts, limits)
                .map_err(|e| SourceError::Fatal(format!("transaction spill: {e}")))?;
            while let Some(record) = chunker
                .next_record()
                .map_err(|e| SourceError::Fatal(format!("transaction spill: {e}")))?
            {
                self.publisher.publish(&record, &kafka_key).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names in statement text are matched as the server compares them: exactly with
    /// `lower_case_table_names = 0`, ignoring case otherwise (and published lowercased with 1).
    #[test]
    fn statement_names_in_another_case_flush_under_lower_case_table_names() {
        use crate::config::RuleConfig;
        let rules = Rules::compile(&[
            RuleConfig {
                table: "shop.users".into(),
                keys: vec!["u:{id}".into()],
            },
            RuleConfig {
                table: "logs.*".into(),
                keys: vec!["l:{id}".into()],
            },
        ])
        .unwrap();
        let flushed = |sql: &str, lctn: u64| -> Vec<String> {
            flushed_by(&rules, &events::classify_statement(sql), "Shop", lctn)
                .into_iter()
                .map(|t| format!("{}.{}", t.db, t.name))
                .collect()
        };
        for sql in [
            "TRUNCATE TABLE Users",
            "TRUNCATE TABLE SHOP.USERS",
            "DROP TABLE `Shop`.`Users`",
            "ALTER TABLE shop.Users TRUNCATE PARTITION p0",
        ] {
            assert_eq!(flushed(sql, 1), ["shop.users"], "{sql}");
            assert_eq!(
                flushed(sql, 0),
                Vec::<String>::new(),
                "{sql}: case-sensitive server"
            );
        }
        // 2 stores names as created and compares them lowercased: matched, published as written.
        assert_eq!(flushed("TRUNCATE TABLE SHOP.USERS", 2), ["SHOP.USERS"]);
        assert_eq!(
            flushed(
                "RENAME TABLE Shop.Users TO shop.users_old, shop.New TO SHOP.Users",
                1
            ),
            ["shop.users", "shop.users"],
            "both pairs name the ruled table"
        );
        assert_eq!(flushed("DROP DATABASE LOGS", 1), ["logs.*"]);
        assert_eq!(flushed("DROP DATABASE LOGS", 0), Vec::<String>::new());
        assert_eq!(flushed("TRUNCATE TABLE shop.users", 0), ["shop.users"]);
        assert_eq!(
            flushed("TRUNCATE TABLE shop.orders", 1),
            Vec::<String>::new()
        );
    }

    /// A row whose key column's new value is a partial JSON update cannot give its key; one whose
    /// JSON diff is in a column no key uses still can.
    #[test]
    fn a_key_over_a_partial_json_update_is_unrenderable() {
        use crate::config::RuleConfig;
        use mysql_async::binlog::row::BinlogRow;
        use mysql_async::consts::ColumnType;
        use mysql_async::{Column, Value};
        let keys = |template: &str| {
            Rules::compile(&[RuleConfig {
                table: "shop.docs".into(),
                keys: vec![template.into()],
            }])
            .unwrap()
            .for_table("shop", "docs", crate::rules::NameCase::Exact)
            .unwrap()
            .bind("shop.docs", &["id".into(), "doc".into()])
            .unwrap()
        };
        let columns: Arc<[Column]> = vec![
            Column::new(ColumnType::MYSQL_TYPE_LONG),
            Column::new(ColumnType::MYSQL_TYPE_JSON),
        ]
        .into();
        let row = |doc| {
            BinlogRow::new(
                vec![Some(BinlogValue::Value(Value::Int(1))), doc],
                columns.clone(),
            )
        };
        let diff = row(Some(BinlogValue::JsonDiff(Vec::new())));
        assert!(key_over_a_json_diff(&diff, &keys("d:{doc}")));
        assert!(!key_over_a_json_diff(&diff, &keys("d:{id}")));
        assert!(!key_over_a_json_diff(&row(None), &keys("d:{doc}")));
    }

    /// COM_BINLOG_DUMP_GTID as MySQL reads it (sql/rpl_source.cc, `com_binlog_dump_gtid`;
    /// Gtid_set::encode): command 0x1e, flags u16 (0x04 BINLOG_THROUGH_GTID), server id u32,
    /// file name length u32 + name, position u64, data size u32, then the SID block: n_sids u64
    /// (MySQL's internals page says 4 bytes, but Gtid_set::encode writes 8; the top byte is the
    /// format, 0 = untagged), per sid the 16-byte uuid, n_intervals u64 and `[start, end)` pairs
    /// of u64 with `end` exclusive. All little-endian.
    #[test]
    fn dump_request_encodes_the_bytes_mysql_expects() {
        use crate::gtid_set::parse_uuid;
        const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        const B: &str = "d3a5c9b1-0000-11ee-8000-000000000001";

        let s: GtidSet = format!("{B}:1-3,{A}:1-5:7-9").parse().unwrap();
        // The checkpoint's file and position are ignored when a set is given.
        let request = dump_request(4242, false, "binlog.000009", 1234, Some(&s));
        let bytes = request.command_bytes();
        let mut want = vec![0x1e];
        want.extend(0x0004u16.to_le_bytes());
        want.extend(4242u32.to_le_bytes());
        want.extend(0u32.to_le_bytes());
        want.extend(4u64.to_le_bytes());
        let mut block = Vec::new();
        block.extend(2u64.to_le_bytes());
        block.extend(parse_uuid(A).unwrap()); // A sorts before B
        block.extend(2u64.to_le_bytes());
        for (s, e) in [(1u64, 6u64), (7, 10)] {
            block.extend(s.to_le_bytes());
            block.extend(e.to_le_bytes());
        }
        block.extend(parse_uuid(B).unwrap());
        block.extend(1u64.to_le_bytes());
        block.extend(1u64.to_le_bytes());
        block.extend(4u64.to_le_bytes());
        want.extend((block.len() as u32).to_le_bytes());
        want.extend(block);
        assert_eq!(bytes, want);
    }

    #[test]
    fn position_requests_encode_com_binlog_dump() {
        for (mariadb, flags) in [(false, 0u16), (true, 0x02)] {
            let request = dump_request(7, mariadb, "bin.000002", 1234, None);
            let bytes = request.command_bytes();
            // COM_BINLOG_DUMP: 0x12, pos u32, flags u16, server id u32, file name to the end.
            let mut want = vec![0x12];
            want.extend(1234u32.to_le_bytes());
            want.extend(flags.to_le_bytes());
            want.extend(7u32.to_le_bytes());
            want.extend(b"bin.000002");
            assert_eq!(bytes, want, "mariadb: {mariadb}");
        }
    }
}
