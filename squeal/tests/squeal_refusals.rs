//! squeal refuses what it cannot do safely, on a real MariaDB: a server in STATEMENT format is
//! refused by `check` and `run`; a checkpoint pointing at a purged binlog stops `run` with the way
//! out instead of skipping; and `check` opens only the tables its rules name. (Kafka is not
//! needed: these stop before anything is published.)

mod common;

use std::time::Duration;

use common::{Scenario, Squeal, TestResult};
use integration::{Stack, StackOptions};

const RULES: &str = r#"
[[rules]]
table = "squeal_demo.users"
keys = ["user:{id}"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_format_is_refused_by_check_and_run() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let primary = stack.primary();
    let scenario = Scenario::offline(primary.port(), RULES)?;
    let Scenario {
        config,
        checkpoint,
        dir,
        ..
    } = &scenario;

    // Control: on the harness's ROW server, check passes (so the refusal below is the format's doing).
    let log = dir.path().join("check-ok.log");
    let (status, text) = Squeal::check(config, primary.password(), &log)?;
    assert!(status.success(), "check on a ROW server: {text}");

    primary
        .execute("SET GLOBAL binlog_format = 'STATEMENT'")
        .await?;
    let log = dir.path().join("check.log");
    let (status, text) = Squeal::check(config, primary.password(), &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("[FAIL] binlog_format = STATEMENT, squeal needs ROW"),
        "{text}"
    );
    assert!(text.contains("fix: SET GLOBAL binlog_format=ROW"), "{text}");

    let log = dir.path().join("run.log");
    let (status, text) = Squeal::run_to_end(config, primary.password(), &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("refusing to start"), "{text}");
    assert!(!checkpoint.exists(), "a refused run writes no checkpoint");
    assert!(
        !text.contains(primary.password()),
        "the password reached the log"
    );
    Ok(())
}

/// A second squeal on a checkpoint another holds stops at once with exit 1, names the holder and
/// leaves the checkpoint alone. Here the test process holds the lock (as a running squeal does); no
/// database is needed, since the lock comes before every connection.
#[test]
fn a_checkpoint_in_use_is_refused_and_left_alone() -> TestResult {
    // Port 1: nothing listens there, so a run that gets past the lock fails its checks instead.
    let scenario = Scenario::offline(1, RULES)?;
    let Scenario {
        config,
        checkpoint,
        dir,
        ..
    } = &scenario;
    let written = squeal::checkpoint::Position::at("binlog.000007", 1234);
    squeal::checkpoint::save(checkpoint, &written)?;
    let before = std::fs::read(checkpoint)?;

    let lock = squeal::checkpoint::CheckpointLock::acquire(checkpoint)?;
    let log = dir.path().join("held.log");
    let (status, text) = Squeal::run_to_end(config, "unused", &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "checkpoint {} is in use by another squeal (pid {})",
            checkpoint.display(),
            std::process::id()
        )),
        "{text}"
    );
    assert!(
        !text.contains("refusing to start"),
        "stopped before the checks: {text}"
    );
    assert_eq!(std::fs::read(checkpoint)?, before, "left as it was");
    // `check` says so too (a warning: it is what an operator sees while the daemon runs).
    let log = dir.path().join("check-held.log");
    let (_, text) = Squeal::check(config, "unused", &log)?;
    assert!(
        text.contains(&format!(
            "[WARN] checkpoint {} is in use by another squeal (pid {})",
            checkpoint.display(),
            std::process::id()
        )),
        "{text}"
    );

    // Control: with the lock released, the same run gets past it (and fails at the database).
    drop(lock);
    let log = dir.path().join("free.log");
    let (status, text) = Squeal::run_to_end(config, "unused", &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(!text.contains("in use by another squeal"), "{text}");
    assert!(text.contains("refusing to start"), "{text}");
    let log = dir.path().join("check-free.log");
    let (_, text) = Squeal::check(config, "unused", &log)?;
    assert!(
        text.contains(&format!(
            "[ok  ] checkpoint {}: no other squeal uses it",
            checkpoint.display()
        )),
        "{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_checkpoint_stops_with_the_way_out() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let primary = stack.primary();
    let first = primary.query("SHOW BINARY LOGS").await?[0][0]
        .clone()
        .expect("a binlog");
    let scenario = Scenario::offline(primary.port(), RULES)?;
    let Scenario {
        config,
        checkpoint,
        dir,
        ..
    } = &scenario;
    squeal::checkpoint::save(
        checkpoint,
        &squeal::checkpoint::Position::at(first.clone(), 4),
    )?;
    primary
        .execute("INSERT INTO squeal_demo.users (email, name) VALUES ('p@x', 'P')")
        .await?;
    primary.execute("FLUSH BINARY LOGS").await?;
    primary.execute("FLUSH BINARY LOGS").await?;
    let logs = primary.query("SHOW BINARY LOGS").await?;
    let newest = logs.last().unwrap()[0].clone().unwrap();
    // MariaDB may keep a file a moment longer (binlog checkpoint); retry the purge until it is gone.
    let mut gone = false;
    for _ in 0..100 {
        primary
            .execute(&format!("PURGE BINARY LOGS TO '{newest}'"))
            .await?;
        let logs = primary.query("SHOW BINARY LOGS").await?;
        if !logs.iter().any(|r| r[0].as_deref() == Some(first.as_str())) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "could not purge {first}");

    let log = dir.path().join("run.log");
    let (status, text) = Squeal::run_to_end(config, primary.password(), &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("the server no longer has {first}")),
        "{text}"
    );
    assert!(text.contains("will not skip them silently"), "{text}");
    assert!(text.contains("move the checkpoint file aside"), "{text}");
    assert!(text.contains("start_from"), "{text}");
    // The checkpoint is left as it was: nothing was skipped.
    let kept = squeal::checkpoint::load(checkpoint)?.expect("checkpoint kept");
    assert_eq!((kept.file.as_str(), kept.pos), (first.as_str(), 4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privileged_user_passes_check_and_a_missing_grant_is_named() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let primary = stack.primary();
    for sql in [
        "CREATE USER 'squeal'@'127.0.0.1' IDENTIFIED BY 'least-priv-pw'",
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'squeal'@'127.0.0.1'",
        "GRANT SELECT ON squeal_demo.* TO 'squeal'@'127.0.0.1'",
    ] {
        primary.execute(sql).await?;
    }
    let scenario = Scenario::offline(primary.port(), RULES)?;
    let Scenario { config, dir, .. } = &scenario;
    scenario.edit_config("mysql://root@", "mysql://squeal@")?;
    let log = dir.path().join("check.log");
    let (status, text) = Squeal::check(config, "least-priv-pw", &log)?;
    assert!(status.success(), "least-privileged user: {text}");
    assert!(
        text.contains("rules for squeal_demo.users: 1 template(s) bind"),
        "{text}"
    );

    primary
        .execute("REVOKE REPLICATION SLAVE ON *.* FROM 'squeal'@'127.0.0.1'")
        .await?;
    let log = dir.path().join("check2.log");
    let (status, text) = Squeal::check(config, "least-priv-pw", &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(
        text.contains("missing privilege REPLICATION SLAVE"),
        "{text}"
    );
    assert!(
        text.contains("fix: GRANT REPLICATION SLAVE ON *.* TO <squeal user>"),
        "{text}"
    );
    assert!(!text.contains("least-priv-pw"));
    Ok(())
}

/// `squeal check` (also the first thing `run` does) opens the tables its rules name and no
/// others. Its foreign-key query named no table, so the server opened every table it holds, and
/// every view of `sys`, at each check: on a production server, a sweep through its table cache at
/// every start of squeal. Here 120 tables no rule names; the server's Opened_tables counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_opens_only_the_tables_its_rules_name() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let primary = stack.primary();
    let unruled = 120;
    let mut sql = String::from("CREATE DATABASE unruled;");
    for i in 0..unruled {
        sql += &format!("CREATE TABLE unruled.t{i} (id INT PRIMARY KEY, v TEXT);");
    }
    primary.execute(&sql).await?;
    let scenario = Scenario::offline(primary.port(), RULES)?;
    let opened_tables = || async {
        let rows = primary
            .query("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'OPENED_TABLES'")
            .await?;
        let value = rows.first().and_then(|row| row.first().cloned().flatten());
        Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(
            value.ok_or("no Opened_tables")?.parse()?,
        )
    };
    // Closed, so that each table check opens is counted.
    primary.execute("FLUSH TABLES").await?;
    let before = opened_tables().await?;
    let log = scenario.dir.path().join("check.log");
    let (status, text) = Squeal::check(&scenario.config, primary.password(), &log)?;
    assert!(status.success(), "{text}");
    assert!(
        text.contains("rules for squeal_demo.users: 1 template(s) bind"),
        "{text}"
    );
    // 1 here; 235 when the foreign-key query named no table.
    let opened = opened_tables().await? - before;
    assert!(
        opened < 20,
        "check opened {opened} tables for one ruled table"
    );
    Ok(())
}

/// `check` (and so `run`) binds the templates of MariaDB's system-versioned tables, which
/// information_schema types `SYSTEM VERSIONED` rather than `BASE TABLE`, and column names that
/// are not ASCII ignoring their case, and warns of a key column whose character set squeal does
/// not convert. Before session 31 it passed a versioned table's template
/// naming a missing column with only "matches no existing table" (every change to it then
/// published flush_table), and failed `{änderung}` on a column `ÄNDERUNG` (so `run` refused to
/// start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_binds_versioned_tables_and_non_ascii_column_names_and_warns_of_charsets(
) -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let primary = stack.primary();
    primary
        .execute(
            "CREATE TABLE squeal_demo.hist (id INT PRIMARY KEY, `ÄNDERUNG` INT NOT NULL) \
             WITH SYSTEM VERSIONING",
        )
        .await?;
    let rules = |template: &str| {
        format!("{RULES}\n[[rules]]\ntable = \"squeal_demo.hist\"\nkeys = [\"{template}\"]\n")
    };
    let scenario = Scenario::offline(primary.port(), &rules("h:{id}:{änderung}"))?;
    let log = scenario.dir.path().join("check.log");
    let (status, text) = Squeal::check(&scenario.config, primary.password(), &log)?;
    assert!(status.success(), "{text}");
    assert!(
        text.contains("rules for squeal_demo.hist: 1 template(s) bind"),
        "{text}"
    );
    let scenario = Scenario::offline(primary.port(), &rules("h:{nosuchcolumn}"))?;
    let log = scenario.dir.path().join("check2.log");
    let (status, text) = Squeal::check(&scenario.config, primary.password(), &log)?;
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("nosuchcolumn"), "{text}");
    // A key column in a character set squeal does not convert: a warning now, where `run`
    // would publish flush_table for every change (before: `[ok]` and one log line at run time).
    primary
        .execute(
            "CREATE TABLE squeal_demo.sj (id INT PRIMARY KEY, code VARCHAR(10) CHARACTER SET sjis)",
        )
        .await?;
    let sjis_rules = format!(
        "{RULES}\n[[rules]]\ntable = \"squeal_demo.sj\"\nkeys = [\"c:{{code}}\", \"i:{{id}}\"]\n"
    );
    let scenario = Scenario::offline(primary.port(), &sjis_rules)?;
    let log = scenario.dir.path().join("check3.log");
    let (status, text) = Squeal::check(&scenario.config, primary.password(), &log)?;
    assert!(status.success(), "a warning, not a failure: {text}");
    assert!(
        text.contains("squeal_demo.sj.code: character set sjis")
            && text.contains("every change to the table will publish flush_table"),
        "{text}"
    );
    assert!(!text.contains("squeal_demo.sj.id:"), "{text}");
    Ok(())
}
