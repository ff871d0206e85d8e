//! `squeal check`: verifies that a server can feed squeal, and says exactly what to change.
//!
//! Checks the binlog settings (log_bin, binlog_format=ROW, binlog_row_image=FULL,
//! binlog_row_metadata=FULL, statement annotations for embedded keys), the replication
//! privileges, the server id, and every rule against the live schema. `squeal run` runs the same
//! checks and refuses to start when one fails.

use std::fmt;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::config::Config;
use crate::rules::Rules;

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

/// Runs every check against the configured server.
pub async fn run_checks(cfg: &Config) -> Report {
    let mut report = Report::default();
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
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys')",
        )
        .await?;
    let mut matched_any = vec![false; cfg.rules.len()];
    for (db, table) in &tables {
        let Some(table_rules) = rules.for_table(db, table) else {
            continue;
        };
        for (i, rc) in cfg.rules.iter().enumerate() {
            if Rules::compile(std::slice::from_ref(rc))
                .ok()
                .and_then(|r| r.for_table(db, table))
                .is_some()
            {
                matched_any[i] = true;
            }
        }
        let columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            .await?;
        match table_rules.bind(&format!("{db}.{table}"), &columns) {
            Ok(_) => report.push(
                Severity::Ok,
                format!(
                    "rules for {db}.{table}: {} template(s) bind",
                    table_rules.templates.len()
                ),
                None,
            ),
            Err(e) => report.push(
                Severity::Fail,
                e.to_string(),
                Some("fix the template or the rule's table pattern".into()),
            ),
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
