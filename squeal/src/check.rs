//! `squeal check`: verifies that a server can feed squeal, and says exactly what to change.
//!
//! Checks the binlog settings (log_bin, binlog_format=ROW, binlog_row_image=FULL,
//! binlog_row_metadata=FULL, statement annotations for embedded keys), the replication
//! privileges, the server id, and every rule against the live schema. `squeal run` runs the same
//! checks and refuses to start when one fails. `squeal check` also says whether the checkpoint's
//! lock can be taken ([`check_checkpoint_lock`]; `run` takes it itself, first). Both check that
//! the spill directory takes a file ([`check_spill_dir`]).

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::config::{Config, ResumeBy};
use crate::gtid_set::GtidSet;
use crate::rules::{NameCase, Rules};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Fine.
    Ok,
    /// Works, but a feature is off or something looks wrong.
    Warn,
    /// squeal cannot run correctly.
    Fail,
}

/// One check result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Ok, Warn or Fail.
    pub severity: Severity,
    /// What was checked and found.
    pub what: String,
    /// What to change, when not Ok.
    pub fix: Option<String>,
}

/// All findings.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In check order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when nothing failed.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.severity != Severity::Fail)
    }
    fn push(&mut self, severity: Severity, what: impl Into<String>, fix: Option<String>) {
        self.findings.push(Finding {
            severity,
            what: what.into(),
            fix,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let tag = match finding.severity {
                Severity::Ok => "ok  ",
                Severity::Warn => "WARN",
                Severity::Fail => "FAIL",
            };
            writeln!(f, "[{tag}] {}", finding.what)?;
            if let Some(fix) = &finding.fix {
                writeln!(f, "       fix: {fix}")?;
            }
        }
        write!(
            f,
            "{}",
            if self.passed() {
                "check passed"
            } else {
                "check FAILED: squeal run will refuse to start"
            }
        )
    }
}

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, mysql_async::Error> {
    let row: Option<Row> = conn
        .query_first(format!("SHOW GLOBAL VARIABLES LIKE '{name}'"))
        .await?;
    Ok(row.and_then(|r| r.get_opt::<String, usize>(1).and_then(Result::ok)))
}

fn set_fix(name: &str, value: &str) -> Option<String> {
    Some(format!(
        "SET GLOBAL {name}={value}; and put `{name}={value}` under [mysqld] in the server config \
         (sessions already open keep the old value until they reconnect)"
    ))
}

/// MySQL with `source.resume = "gtid"`: GTIDs must be on, and the server must still have every
/// transaction the checkpoint's GTID set lacks (`@@gtid_purged` a subset of it).
pub fn check_mysql_gtid(
    report: &mut Report,
    gtid_mode: Option<&str>,
    enforce_gtid_consistency: Option<&str>,
    gtid_purged: Option<&str>,
    saved_set: Option<&str>,
) {
    let on = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("ON"));
    if on(gtid_mode) {
        report.push(Severity::Ok, "gtid_mode = ON", None);
    } else {
        report.push(
            Severity::Fail,
            format!(
                "gtid_mode = {}, resume = \"gtid\" needs ON",
                gtid_mode.unwrap_or("?")
            ),
            Some(
                "step gtid_mode up one value at a time: SET GLOBAL gtid_mode=OFF_PERMISSIVE; \
                 SET GLOBAL gtid_mode=ON_PERMISSIVE; (wait until Ongoing_anonymous_transaction_count \
                 is 0) SET GLOBAL gtid_mode=ON; and put `gtid_mode=ON` under [mysqld] in the server \
                 config; or use source.resume = \"position\""
                    .into(),
            ),
        );
    }
    if on(enforce_gtid_consistency) {
        report.push(Severity::Ok, "enforce_gtid_consistency = ON", None);
    } else {
        report.push(
            Severity::Fail,
            format!(
                "enforce_gtid_consistency = {}, resume = \"gtid\" needs ON",
                enforce_gtid_consistency.unwrap_or("?")
            ),
            set_fix("enforce_gtid_consistency", "ON"),
        );
    }
    let Some(saved_text) = saved_set else {
        report.push(
            Severity::Ok,
            "no GTID set in the checkpoint yet: squeal starts by position and builds it",
            None,
        );
        return;
    };
    let parsed = saved_text
        .parse::<GtidSet>()
        .and_then(|saved| Ok((saved, gtid_purged.unwrap_or_default().parse::<GtidSet>()?)));
    match parsed {
        Err(e) => report.push(Severity::Fail, e.to_string(), None),
        Ok((saved, purged)) => {
            let missing = purged.difference(&saved);
            if missing.is_empty() {
                report.push(
                    Severity::Ok,
                    "the server still has every transaction the checkpoint's GTID set lacks",
                    None,
                );
            } else {
                report.push(
                    Severity::Fail,
                    crate::source::gtid_purged_message(&saved, &missing),
                    None,
                );
            }
        }
    }
}

/// MariaDB `log_bin_compress`: squeal decompresses compressed events (zlib, the only algorithm
/// MariaDB defines), but says so, since a decompression failure stops it.
pub fn check_log_bin_compress(report: &mut Report, value: Option<&str>) {
    match value {
        Some(v) if v.eq_ignore_ascii_case("ON") || v == "1" => report.push(
            Severity::Warn,
            "log_bin_compress = ON: squeal decompresses compressed row and query events (zlib); \
             an event it cannot decompress stops it, with the checkpoint before the event",
            Some(
                "nothing is needed; to avoid the extra CPU and the risk, SET GLOBAL \
                 log_bin_compress=OFF and put `log_bin_compress=OFF` under [mysqld]"
                    .into(),
            ),
        ),
        Some(v) => report.push(Severity::Ok, format!("log_bin_compress = {v}"), None),
        None => {}
    }
}

/// MySQL `binlog_transaction_compression`: compressed transaction payloads are read (and each is
/// verified to decompress before its events are used).
pub fn check_transaction_compression(report: &mut Report, value: Option<&str>) {
    match value {
        Some(v) if v.eq_ignore_ascii_case("ON") || v == "1" => report.push(
            Severity::Warn,
            "binlog_transaction_compression = ON: squeal reads compressed transaction payloads \
             (zstd), decompressing each twice (once to verify it); a payload that does not \
             decompress stops it, with the checkpoint before the transaction",
            Some(
                "nothing is needed; to save squeal's CPU, SET GLOBAL \
                 binlog_transaction_compression=OFF and put it under [mysqld]"
                    .into(),
            ),
        ),
        Some(v) => report.push(
            Severity::Ok,
            format!("binlog_transaction_compression = {v}"),
            None,
        ),
        None => {}
    }
}

/// A ruled table that is the child of a foreign key with a cascading action: InnoDB changes or
/// deletes its rows inside the storage engine and writes no row events for them, so squeal never
/// sees those changes.
pub fn check_cascade(
    report: &mut Report,
    db: &str,
    table: &str,
    constraint: &str,
    parent: &str,
    on_update: &str,
    on_delete: &str,
) {
    let mut actions = Vec::new();
    for (when, rule) in [("DELETE", on_delete), ("UPDATE", on_update)] {
        if matches!(rule, "CASCADE" | "SET NULL" | "SET DEFAULT") {
            actions.push(format!("ON {when} {rule}"));
        }
    }
    report.push(
        Severity::Warn,
        format!(
            "ruled table {db}.{table} is the child of foreign key {constraint} ({}) on {parent}: \
             rows the server changes through it are not in the binlog, so their keys are never \
             invalidated",
            actions.join(", ")
        ),
        Some(format!(
            "key what caches {db}.{table}'s rows by the parent's columns so a rule on {parent} \
             invalidates them, or change the child rows with explicit statements instead of the \
             cascade (see README, Limitations)"
        )),
    );
}

/// Whether a `squeal run` could take the checkpoint's lock now: `Ok` when it is free, `Warn` when
/// another squeal holds it (a second `run` would refuse; normal while the daemon runs), `Fail` when
/// the lock file cannot be opened (a missing or read-only directory, which `run` would meet too).
pub fn check_checkpoint_lock(report: &mut Report, path: &std::path::Path) {
    use crate::checkpoint::{CheckpointError, CheckpointLock};
    match CheckpointLock::acquire(path) {
        Ok(_released_at_once) => report.push(
            Severity::Ok,
            format!("checkpoint {}: no other squeal uses it", path.display()),
            None,
        ),
        Err(e @ CheckpointError::InUse { .. }) => report.push(
            Severity::Warn,
            format!("{e}"),
            Some("a second `squeal run` on this checkpoint refuses to start".into()),
        ),
        Err(e) => report.push(
            Severity::Fail,
            e.to_string(),
            Some("checkpoint.path must be in an existing directory squeal can write".into()),
        ),
    }
}

/// Whether a huge transaction could spill its keys: a probe file is created (as the spill files
/// are, in `transactions.spill_dir` or else the system temporary directory), written and removed.
/// Without this a missing or read-only directory only shows when a transaction first exceeds
/// `max_buffered_keys`, and stops squeal there.
pub fn check_spill_dir(report: &mut Report, spill_dir: Option<&std::path::Path>) {
    use std::io::Write as _;
    let (dir, name) = match spill_dir {
        Some(dir) => (
            dir.to_owned(),
            format!("transactions.spill_dir {}", dir.display()),
        ),
        None => {
            let dir = std::env::temp_dir();
            let name = format!(
                "the system temporary directory {} (transactions.spill_dir is not set)",
                dir.display()
            );
            (dir, name)
        }
    };
    let probe = if dir.is_dir() {
        tempfile::Builder::new()
            .prefix(".squeal-check-")
            .tempfile_in(&dir)
            .and_then(|mut file| {
                file.write_all(b"probe\n")?;
                file.close()
            })
            .map_err(|e| format!("{name}: cannot create and remove a file there: {e}"))
    } else {
        Err(format!("{name} does not exist or is not a directory"))
    };
    match probe {
        Ok(()) => report.push(Severity::Ok, format!("{name}: takes spill files"), None),
        Err(what) => report.push(
            Severity::Fail,
            what,
            Some(
                "set transactions.spill_dir to an existing directory squeal can write (huge \
                 transactions spill their keys there)"
                    .into(),
            ),
        ),
    }
}

/// Runs every check against the configured server, and [`check_spill_dir`].
pub async fn run_checks(cfg: &Config) -> Report {
    let mut report = Report::default();
    check_spill_dir(&mut report, cfg.transactions.spill_dir.as_deref());
    let opts = match cfg.mysql_opts() {
        Ok(o) => o,
        Err(e) => {
            report.push(Severity::Fail, format!("source options: {e}"), None);
            return report;
        }
    };
    let mut conn = match Conn::new(opts).await {
        Ok(c) => c,
        Err(e) => {
            report.push(
                Severity::Fail,
                format!("cannot connect to {}: {e}", cfg.source.url),
                Some(
                    "check source.url, the password source, and that the server is reachable"
                        .into(),
                ),
            );
            return report;
        }
    };
    report.push(
        Severity::Ok,
        format!("connected to {}", cfg.source.url),
        None,
    );
    if let Err(e) = check_server(&mut conn, cfg, &mut report).await {
        report.push(
            Severity::Fail,
            format!("query failed during checks: {e}"),
            None,
        );
    }
    let _ = conn.disconnect().await;
    report
}

async fn check_server(
    conn: &mut Conn,
    cfg: &Config,
    report: &mut Report,
) -> Result<(), mysql_async::Error> {
    let version: String = conn
        .query_first("SELECT VERSION()")
        .await?
        .unwrap_or_default();
    let mariadb = version.to_lowercase().contains("mariadb");
    report.push(Severity::Ok, format!("server version {version}"), None);

    let expect =
        |report: &mut Report, name: &str, got: Option<String>, want: &str, severity: Severity| {
            match got {
                Some(v) if v.eq_ignore_ascii_case(want) => {
                    report.push(Severity::Ok, format!("{name} = {v}"), None)
                }
                Some(v) => report.push(
                    severity,
                    format!("{name} = {v}, squeal needs {want}"),
                    set_fix(name, want),
                ),
                None => report.push(
                    severity,
                    format!("{name} is not available on this server, squeal needs {want}"),
                    Some("use MySQL 8.0.14+ or MariaDB 10.5+".into()),
                ),
            }
        };
    let log_bin = variable(conn, "log_bin").await?;
    match log_bin.as_deref() {
        Some("ON") | Some("1") => report.push(Severity::Ok, "log_bin = ON", None),
        other => report.push(
            Severity::Fail,
            format!("log_bin = {}, the binary log is off", other.unwrap_or("?")),
            Some("start the server with --log-bin (and a server_id); this needs a restart".into()),
        ),
    }
    expect(
        report,
        "binlog_format",
        variable(conn, "binlog_format").await?,
        "ROW",
        Severity::Fail,
    );
    expect(
        report,
        "binlog_row_image",
        variable(conn, "binlog_row_image").await?,
        "FULL",
        Severity::Fail,
    );
    expect(
        report,
        "binlog_row_metadata",
        variable(conn, "binlog_row_metadata").await?,
        "FULL",
        Severity::Fail,
    );
    let annotate = if mariadb {
        "binlog_annotate_row_events"
    } else {
        "binlog_rows_query_log_events"
    };
    match variable(conn, annotate).await?.as_deref() {
        Some("ON") | Some("1") => report.push(
            Severity::Ok,
            format!("{annotate} = ON (embedded keys work)"),
            None,
        ),
        other => report.push(
            Severity::Warn,
            format!(
                "{annotate} = {}: `/* squeal:invalidate ... */` comments will not reach squeal",
                other.unwrap_or("?")
            ),
            set_fix(annotate, "ON"),
        ),
    }
    if mariadb {
        let compress = variable(conn, "log_bin_compress").await?;
        check_log_bin_compress(report, compress.as_deref());
    } else {
        let compress = variable(conn, "binlog_transaction_compression").await?;
        check_transaction_compression(report, compress.as_deref());
    }
    if !mariadb && cfg.source.resume == ResumeBy::Gtid {
        let gtid_mode = variable(conn, "gtid_mode").await?;
        let enforce = variable(conn, "enforce_gtid_consistency").await?;
        let purged: Option<String> = conn.query_first("SELECT @@GLOBAL.gtid_purged").await?;
        let saved = match crate::checkpoint::load(&cfg.checkpoint.path) {
            Ok(p) => p.and_then(|p| p.gtid_set),
            Err(e) => {
                report.push(Severity::Fail, e.to_string(), None);
                None
            }
        };
        check_mysql_gtid(
            report,
            gtid_mode.as_deref(),
            enforce.as_deref(),
            purged.as_deref(),
            saved.as_deref(),
        );
    }
    let server_id: Option<u32> = variable(conn, "server_id")
        .await?
        .and_then(|v| v.parse().ok());
    if server_id == Some(cfg.source.server_id) {
        report.push(
            Severity::Fail,
            format!(
                "source.server_id {} equals the server's own server_id",
                cfg.source.server_id
            ),
            Some("choose a source.server_id unused by every server and replica".into()),
        );
    } else {
        report.push(
            Severity::Ok,
            format!(
                "source.server_id {} differs from the server's",
                cfg.source.server_id
            ),
            None,
        );
    }

    // Privileges: REPLICATION SLAVE to stream; REPLICATION CLIENT / BINLOG MONITOR for SHOW BINARY LOGS.
    let grants: Vec<String> = conn.query("SHOW GRANTS").await?;
    let all = grants.join("\n").to_uppercase();
    let global = |p: &str| {
        all.lines()
            .any(|l| l.contains(" ON *.* ") && (l.contains("ALL PRIVILEGES") || l.contains(p)))
    };
    if global("REPLICATION SLAVE") || global("REPLICATION REPLICA") {
        report.push(Severity::Ok, "privilege REPLICATION SLAVE", None);
    } else {
        report.push(
            Severity::Fail,
            "missing privilege REPLICATION SLAVE (needed to read the binlog)",
            Some("GRANT REPLICATION SLAVE ON *.* TO <squeal user>".into()),
        );
    }
    match conn.query::<Row, _>("SHOW BINARY LOGS").await {
        Ok(_) => report.push(Severity::Ok, "SHOW BINARY LOGS allowed", None),
        Err(e) => report.push(
            Severity::Fail,
            format!("SHOW BINARY LOGS failed: {e}"),
            Some(if mariadb {
                "GRANT BINLOG MONITOR ON *.* TO <squeal user>".into()
            } else {
                "GRANT REPLICATION CLIENT ON *.* TO <squeal user>".into()
            }),
        ),
    }

    // Rules against the live schema.
    let rules = match Rules::compile(&cfg.rules) {
        Ok(r) => r,
        Err(e) => {
            report.push(Severity::Fail, e.to_string(), None);
            return Ok(());
        }
    };
    if rules.is_empty() {
        report.push(
            Severity::Warn,
            "no [[rules]]: only embedded-comment keys and nothing else will be published",
            None,
        );
        return Ok(());
    }
    let tables: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') \
             AND TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys')",
        )
        .await?;
    // Tables are matched as the server compares their names, as `run` matches row events.
    let case = NameCase::of_server(crate::source::lower_case_table_names(conn).await?);
    let mut matched_any = vec![false; cfg.rules.len()];
    for (db, table) in &tables {
        let Some(table_rules) = rules.for_table(db, table, case) else {
            continue;
        };
        for (i, rc) in cfg.rules.iter().enumerate() {
            if Rules::compile(std::slice::from_ref(rc))
                .ok()
                .and_then(|r| r.for_table(db, table, case))
                .is_some()
            {
                matched_any[i] = true;
            }
        }
        // With each column's collation id (NULL for columns that hold no text).
        let described: Vec<(String, Option<u16>)> = conn
            .exec(
                "SELECT c.COLUMN_NAME, co.ID FROM information_schema.COLUMNS c \
                 LEFT JOIN information_schema.COLLATIONS co ON co.COLLATION_NAME = c.COLLATION_NAME \
                 WHERE c.TABLE_SCHEMA = ? AND c.TABLE_NAME = ? ORDER BY c.ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        let columns: Vec<String> = described.iter().map(|(name, _)| name.clone()).collect();
        match table_rules.bind(&format!("{db}.{table}"), &columns) {
            Ok(keys) => {
                report.push(
                    Severity::Ok,
                    format!(
                        "rules for {db}.{table}: {} template(s) bind",
                        table_rules.templates.len()
                    ),
                    None,
                );
                // A key column whose text squeal cannot render makes every change to the
                // table a flush_table at run time (README); say so now, not in one log line.
                let mut warned = std::collections::BTreeSet::new();
                for i in keys.columns() {
                    let (name, collation) = &described[i];
                    if let Some(problem) = collation.and_then(crate::render::collation_problem) {
                        if warned.insert(i) {
                            report.push(
                                Severity::Warn,
                                format!(
                                    "{db}.{table}.{name}: {problem}; every change to the table will publish flush_table"
                                ),
                                Some("convert the column to utf8mb4 (or another supported character set), or key on other columns".into()),
                            );
                        }
                    }
                }
            }
            Err(e) => report.push(
                Severity::Fail,
                e.to_string(),
                Some("fix the template or the rule's table pattern".into()),
            ),
        }
        // Foreign keys whose actions change this ruled child table inside InnoDB, with no row
        // events. Asked per ruled table: a query naming no table made the server open every
        // table it holds (the `sys` views too), at every check and every start of `run`.
        let cascades: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT CONSTRAINT_NAME, CONCAT(UNIQUE_CONSTRAINT_SCHEMA, '.', REFERENCED_TABLE_NAME), \
                 UPDATE_RULE, DELETE_RULE FROM information_schema.REFERENTIAL_CONSTRAINTS \
                 WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? \
                 AND (UPDATE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT') \
                 OR DELETE_RULE IN ('CASCADE', 'SET NULL', 'SET DEFAULT'))",
                (db, table),
            )
            .await?;
        for (name, parent, on_update, on_delete) in cascades {
            check_cascade(report, db, table, &name, &parent, &on_update, &on_delete);
        }
    }
    for (i, rc) in cfg.rules.iter().enumerate() {
        if !matched_any[i] {
            report.push(
                Severity::Warn,
                format!("rule for {:?} matches no existing table", rc.table),
                Some("check the `db.table` pattern (it is matched as a glob)".into()),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";

    fn run(mode: Option<&str>, enforce: Option<&str>, purged: &str, saved: Option<&str>) -> Report {
        let mut r = Report::default();
        check_mysql_gtid(&mut r, mode, enforce, Some(purged), saved);
        r
    }

    #[test]
    fn the_checkpoint_lock_is_reported_free_held_or_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let finding_for = |path: &std::path::Path| {
            let mut report = Report::default();
            check_checkpoint_lock(&mut report, path);
            assert_eq!(report.findings.len(), 1);
            report.findings.remove(0)
        };
        assert_eq!(finding_for(&path).severity, Severity::Ok);
        // Free again after the check: it only tries the lock.
        let held = crate::checkpoint::CheckpointLock::acquire(&path).unwrap();
        let finding = finding_for(&path);
        assert_eq!(finding.severity, Severity::Warn, "{finding:?}");
        assert!(
            finding
                .what
                .contains(&format!("(pid {})", std::process::id())),
            "{finding:?}"
        );
        drop(held);
        let missing = dir.path().join("no-such-dir").join("cp.json");
        assert_eq!(finding_for(&missing).severity, Severity::Fail);
    }

    #[test]
    fn the_spill_dir_must_exist_and_take_a_file() {
        let finding_for = |dir: Option<&std::path::Path>| {
            let mut report = Report::default();
            check_spill_dir(&mut report, dir);
            assert_eq!(report.findings.len(), 1);
            report.findings.remove(0)
        };
        let dir = tempfile::tempdir().unwrap();
        let ok = finding_for(Some(dir.path()));
        assert_eq!(ok.severity, Severity::Ok, "{ok:?}");
        assert!(ok.what.starts_with("transactions.spill_dir "), "{ok:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the probe file is removed"
        );
        let default = finding_for(None);
        assert_eq!(default.severity, Severity::Ok, "{default:?}");
        assert!(
            default.what.contains("transactions.spill_dir is not set"),
            "{default:?}"
        );

        let missing = dir.path().join("no-such-dir");
        let finding = finding_for(Some(&missing));
        assert_eq!(finding.severity, Severity::Fail, "{finding:?}");
        assert!(
            finding.what.contains("transactions.spill_dir")
                && finding.what.contains("does not exist"),
            "{finding:?}"
        );
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(finding_for(Some(&file)).severity, Severity::Fail);
        // A directory that takes no file, even from root (the tests may run as root, which
        // ignores permission bits): /proc.
        let finding = finding_for(Some(std::path::Path::new("/proc")));
        assert_eq!(finding.severity, Severity::Fail, "{finding:?}");
        assert!(
            finding
                .what
                .contains("cannot create and remove a file there"),
            "{finding:?}"
        );
    }

    #[test]
    fn mysql_gtid_mode_and_consistency_must_be_on() {
        assert!(run(Some("ON"), Some("ON"), "", None).passed());
        let r = run(Some("OFF_PERMISSIVE"), Some("WARN"), "", None);
        assert!(!r.passed());
        let text = r.to_string();
        assert!(text.contains("gtid_mode = OFF_PERMISSIVE"), "{text}");
        assert!(text.contains("SET GLOBAL gtid_mode=ON"), "{text}");
        assert!(
            text.contains("SET GLOBAL enforce_gtid_consistency=ON"),
            "{text}"
        );
        assert!(
            !run(None, Some("ON"), "", None).passed(),
            "unknown is not ON"
        );
    }

    #[test]
    fn compression_and_cascades_are_warned_about() {
        let mut r = Report::default();
        check_log_bin_compress(&mut r, Some("ON"));
        check_transaction_compression(&mut r, Some("ON"));
        check_cascade(
            &mut r,
            "shop",
            "comments",
            "fk_post",
            "shop.posts",
            "RESTRICT",
            "CASCADE",
        );
        assert!(r.passed(), "warnings, not failures");
        assert!(r.findings.iter().all(|f| f.severity == Severity::Warn));
        let text = r.to_string();
        assert!(text.contains("log_bin_compress = ON"), "{text}");
        assert!(
            text.contains("binlog_transaction_compression = ON"),
            "{text}"
        );
        assert!(
            text.contains("shop.comments is the child of foreign key fk_post (ON DELETE CASCADE) on shop.posts"),
            "{text}"
        );
        let mut r = Report::default();
        check_log_bin_compress(&mut r, Some("OFF"));
        check_transaction_compression(&mut r, None);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].severity, Severity::Ok);
    }

    #[test]
    fn purged_gtids_missing_from_the_checkpoint_fail_with_the_way_out() {
        let saved = format!("{A}:1-100");
        assert!(run(Some("ON"), Some("ON"), &format!("{A}:1-90"), Some(&saved)).passed());
        let r = run(Some("ON"), Some("ON"), &format!("{A}:1-120"), Some(&saved));
        assert!(!r.passed());
        let text = r.to_string();
        assert!(
            text.contains(&format!("{A}:101-120")),
            "names what is lost: {text}"
        );
        assert!(text.contains("move the checkpoint file aside"), "{text}");
        // A checkpoint GTID set that does not parse is a failure, not a pass.
        assert!(!run(Some("ON"), Some("ON"), "", Some("garbage")).passed());
    }
}
