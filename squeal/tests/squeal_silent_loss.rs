//! Committed changes that once reached no invalidation, on the real stack (MariaDB + Kafka):
//! binlog compression (`log_bin_compress`), partition maintenance and table renames, and
//! statement-logged writes that do not start with INSERT/UPDATE/DELETE. Each must either publish
//! its keys (or a `flush_table`) or stop squeal loudly with the checkpoint before it; never pass
//! in silence. Phases run one after another against one squeal; each ends with a marker row, so the
//! records between two markers are exactly one phase's.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use invalidation::{Operation, Record};
use mysql_async::prelude::Queryable;

use common::{
    checkpoint_of, config_text, master_position, Phases, Scenario, Squeal, TestResult, TopicReader,
};
use integration::{MariaDb, Stack, StackOptions};

const RULES: &str = r#"
[[rules]]
table = "sl.t"
keys = ["t:{id}"]

[[rules]]
table = "sl.p"
keys = ["p:{id}"]

[[rules]]
table = "sl.q"
keys = ["q:{id}"]

[[rules]]
table = "sl.users*"
keys = ["u:{id}"]

[[rules]]
table = "sl.child"
keys = ["child:{id}"]

[[rules]]
table = "sl.mem"
keys = ["mem:{id}"]

[[rules]]
table = "sl.markers"
keys = ["marker:{id}"]
"#;

const SETUP: &[&str] = &[
    "CREATE DATABASE sl",
    "CREATE TABLE sl.markers (id INT PRIMARY KEY)",
    "CREATE TABLE sl.t (id INT PRIMARY KEY, v TEXT)",
    "CREATE TABLE sl.p (id INT PRIMARY KEY) PARTITION BY RANGE (id) \
     (PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN (200), \
      PARTITION p2 VALUES LESS THAN MAXVALUE)",
    "CREATE TABLE sl.q (id INT PRIMARY KEY)",
    "CREATE TABLE sl.users (id INT PRIMARY KEY)",
    "CREATE TABLE sl.users_new (id INT PRIMARY KEY)",
    "CREATE TABLE sl.unruled (id INT PRIMARY KEY)",
    "CREATE TABLE sl.mem (id INT PRIMARY KEY) ENGINE=MEMORY",
    "CREATE TABLE sl.mem_unruled (id INT PRIMARY KEY) ENGINE=MEMORY",
    "CREATE TABLE sl.parent (id INT PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE sl.child (id INT PRIMARY KEY, parent_id INT, \
     CONSTRAINT child_parent FOREIGN KEY (parent_id) REFERENCES sl.parent (id) ON DELETE CASCADE) \
     ENGINE=InnoDB",
    "CREATE FUNCTION sl.f() RETURNS INT DETERMINISTIC MODIFIES SQL DATA \
     BEGIN UPDATE sl.t SET v = 'f' WHERE id = 4; RETURN 1; END",
    "INSERT INTO sl.t VALUES (1, 'a'), (2, REPEAT('b', 1000)), (4, 'd')",
    "INSERT INTO sl.p VALUES (1), (150), (250)",
    "INSERT INTO sl.q VALUES (7)",
    "INSERT INTO sl.users VALUES (7)",
    "INSERT INTO sl.users_new VALUES (8)",
    "INSERT INTO sl.unruled VALUES (9)",
    "INSERT INTO sl.mem VALUES (10)",
    "INSERT INTO sl.mem_unruled VALUES (11)",
];

fn keys(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .flat_map(|r| r.keys().map(str::to_owned))
        .collect()
}

fn flushed(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .flat_map(|r| r.changes.iter())
        .filter(|c| c.op == Operation::FlushTable)
        .filter_map(|c| c.table.as_ref().map(|t| format!("{}.{}", t.db, t.name)))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs `sql` in a session with `binlog_format=STATEMENT` and expects squeal to stop on it with
/// exit 1 and an error that names the statement logging.
async fn expect_stop_on_statement(
    primary: &MariaDb,
    squeal: &mut Squeal,
    sql: &str,
    what: &str,
) -> TestResult {
    let mut session = primary.connect().await?;
    session
        .query_drop("SET SESSION binlog_format = STATEMENT")
        .await?;
    session.query_drop(sql).await?;
    drop(session);
    let status = squeal.wait_exit(Duration::from_secs(20));
    let log = squeal.log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{what}: squeal must stop (exit 1) on a statement-logged write, not pass it in silence\n{log}"
    );
    assert!(
        log.contains("a data change was logged as a statement"),
        "{what}: the error says why\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_partitioned_renamed_and_statement_logged_changes_are_never_silent() -> TestResult
{
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_silent_loss";
    stack.create_topic(topic, 1).await?;
    let primary = stack.primary();
    let mut conn = primary.connect().await?;
    for sql in SETUP {
        conn.query_drop(*sql).await?;
    }
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("cp.json");
    let config = dir.path().join("squeal.toml");
    std::fs::write(
        &config,
        config_text(
            primary.port(),
            &stack.kafka().brokers(),
            topic,
            &checkpoint,
            RULES,
            "",
        ),
    )?;

    // `squeal check` warns about binlog compression and the cascading foreign key of a ruled
    // child table (warnings: it still passes).
    conn.query_drop("SET GLOBAL log_bin_compress = ON").await?;
    let log = dir.path().join("check.log");
    let (status, text) = Squeal::check(&config, primary.password(), &log)?;
    assert!(status.success(), "{text}");
    assert!(text.contains("[WARN] log_bin_compress = ON"), "{text}");
    assert!(
        text.contains(
            "[WARN] ruled table sl.child is the child of foreign key child_parent \
             (ON DELETE CASCADE) on sl.parent"
        ),
        "{text}"
    );
    conn.query_drop("SET GLOBAL log_bin_compress = OFF").await?;

    let log = dir.path().join("squeal.log");
    let mut squeal = Squeal::run(&config, primary.password(), &log)?;
    let mut phases = Phases::new(
        TopicReader::new(&stack.kafka().brokers(), topic)?,
        "sl.markers",
    );
    phases.end(&mut conn).await; // the setup's rows

    // 1. MariaDB binlog compression: compressed row events (166-168) and a compressed query
    // event (165) are decoded like the plain ones.
    conn.query_drop("SET GLOBAL log_bin_compress = ON").await?;
    let mut c = primary.connect().await?; // the global applies to new sessions
    c.query_drop("INSERT INTO sl.t VALUES (3, REPEAT('x', 1000))")
        .await?;
    c.query_drop("UPDATE sl.t SET v = REPEAT('y', 1000) WHERE id = 1")
        .await?;
    c.query_drop("DELETE FROM sl.t WHERE id = 2").await?;
    c.query_drop(format!("TRUNCATE TABLE sl.q /* {} */", "pad ".repeat(100)))
        .await?;
    drop(c);
    conn.query_drop("SET GLOBAL log_bin_compress = OFF").await?;
    let events = primary.query("SHOW BINLOG EVENTS").await?;
    for kind in [
        "Write_rows_compressed_v1",
        "Update_rows_compressed_v1",
        "Delete_rows_compressed_v1",
        "Query_compressed",
    ] {
        assert!(
            events.iter().any(|r| r[2].as_deref() == Some(kind)),
            "the server wrote no {kind} event: the phase would prove nothing"
        );
    }
    let (records, _) = phases.end(&mut conn).await;
    assert_eq!(
        keys(&records),
        set(&["t:1", "t:2", "t:3"]),
        "compressed row events: every row's key"
    );
    assert_eq!(
        flushed(&records),
        set(&["sl.q"]),
        "compressed TRUNCATE: flush_table"
    );

    // 2. Partition maintenance deletes or swaps rows without row events: flush_table.
    for (sql, want) in [
        ("ALTER TABLE sl.p TRUNCATE PARTITION p0", &["sl.p"][..]),
        ("ALTER TABLE sl.p DROP PARTITION p1", &["sl.p"][..]),
        (
            "ALTER TABLE sl.p EXCHANGE PARTITION p2 WITH TABLE sl.q",
            &["sl.p", "sl.q"][..],
        ),
    ] {
        conn.query_drop(sql).await?;
        let (records, _) = phases.end(&mut conn).await;
        assert_eq!(flushed(&records), set(want), "{sql}");
    }

    // 3. Renames move other rows under a ruled name (a swap): flush both names.
    for (sql, want) in [
        (
            "RENAME TABLE sl.users TO sl.users_old, sl.users_new TO sl.users",
            &["sl.users", "sl.users_old", "sl.users_new"][..],
        ),
        (
            "ALTER TABLE sl.users_old RENAME TO sl.users_archive",
            &["sl.users_old", "sl.users_archive"][..],
        ),
    ] {
        conn.query_drop(sql).await?;
        let (records, _) = phases.end(&mut conn).await;
        assert_eq!(flushed(&records), set(want), "{sql}");
    }

    // 3a. A table replaced by one with a CONNECTION string (FEDERATED/CONNECT engines; any engine
    // keeps it): flush_table, and the password in it never reaches squeal's log.
    conn.query_drop(
        "CREATE OR REPLACE TABLE sl.users_archive (id INT PRIMARY KEY) \
         CONNECTION='mysql://fed:hunter9-federated@127.0.0.1:1/x/y'",
    )
    .await?;
    let (records, _) = phases.end(&mut conn).await;
    assert_eq!(
        flushed(&records),
        set(&["sl.users_archive"]),
        "CREATE OR REPLACE"
    );
    let log = squeal.log_text();
    assert!(
        log.contains("DROP TABLE or CREATE OR REPLACE TABLE"),
        "the flush is logged with the statement's kind\n{log}"
    );
    assert!(
        !log.contains("hunter9"),
        "a password in a statement reached the log\n{log}"
    );

    // 3b. A restart empties MEMORY tables, and the server logs that, even in a ROW binlog, as a
    // statement when it first opens each one: flush_table for the ruled one, nothing for the
    // unruled one, and squeal goes on. MySQL 8.0.0-8.0.21 and MariaDB before MDEV-25607 write
    // ``DELETE FROM `db`.`t` `` (which stopped squeal for good until 2026-12-01; 3c below
    // writes that statement itself); this MariaDB writes `TRUNCATE TABLE` with a comment.
    primary.restart().await?;
    conn = primary.connect().await?;
    for table in ["sl.mem", "sl.mem_unruled"] {
        let rows: Vec<u32> = conn.query(format!("SELECT id FROM {table}")).await?;
        assert!(
            rows.is_empty(),
            "a restart empties the MEMORY table {table}"
        );
    }
    let (records, _) = phases.end(&mut conn).await;
    assert_eq!(
        flushed(&records),
        set(&["sl.mem"]),
        "MEMORY tables emptied by a restart"
    );
    assert_eq!(
        keys(&records),
        set(&[]),
        "no row keys for the emptied tables"
    );
    let file = master_position(primary).await?.0;
    let events = primary
        .query(&format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await?;
    for table in ["`sl`.`mem`", "`sl`.`mem_unruled`"] {
        let emptied = |info: &str| {
            [
                format!("DELETE FROM {table}"),
                format!("TRUNCATE TABLE {table}"),
            ]
            .iter()
            .any(|s| info.contains(s.as_str()))
        };
        assert!(
            events
                .iter()
                .any(|r| r[2].as_deref() == Some("Query") && r[5].as_deref().is_some_and(emptied)),
            "the server logged no emptying of {table} after the restart: the phase would prove \
             nothing\n{events:?}"
        );
    }

    // 3c. The statement older servers write there, ``DELETE FROM `db`.`t` `` exactly, sent here in
    // a STATEMENT session: flush_table for a ruled table, nothing for an unruled one, and squeal
    // goes on (the marker after each arrives). Any other spelling of a statement-logged DELETE
    // stops squeal like any statement-logged write (`events.rs` unit tests).
    for (sql, want) in [
        ("DELETE FROM `sl`.`t`", &["sl.t"][..]),
        ("DELETE FROM `sl`.`unruled`", &[][..]),
    ] {
        let mut session = primary.connect().await?;
        session
            .query_drop("SET SESSION binlog_format = STATEMENT")
            .await?;
        session.query_drop(sql).await?;
        drop(session);
        let (records, _) = phases.end(&mut conn).await;
        assert_eq!(flushed(&records), set(want), "{sql}");
        assert_eq!(keys(&records), set(&[]), "{sql}: no row keys");
    }
    let events = primary
        .query(&format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await?;
    assert!(
        events.iter().any(|r| r[2].as_deref() == Some("Query")
            && r[5]
                .as_deref()
                .is_some_and(|info| info.ends_with("DELETE FROM `sl`.`t`"))),
        "the server did not log the DELETE as a statement: the phase would prove nothing"
    );

    // 4. Statement-logged writes that do not start with INSERT/UPDATE/DELETE stop squeal, and a
    // restart stops at the same place again (the checkpoint never passes them).
    let before = master_position(primary).await?;
    expect_stop_on_statement(primary, &mut squeal, "SELECT sl.f()", "SELECT f()").await?;
    let (file, pos) = checkpoint_of(&checkpoint).expect("a checkpoint");
    assert!(
        file == before.0 && pos <= before.1,
        "the checkpoint {file}:{pos} must stay before the statement (binlog end {before:?})"
    );
    let mut again = Squeal::run(&config, primary.password(), &dir.path().join("again.log"))?;
    let status = again.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "restarted: {}",
        again.log_text()
    );
    assert_eq!(checkpoint_of(&checkpoint), Some((file.clone(), pos)));

    // MariaDB's `SET STATEMENT ... FOR UPDATE` is logged as written: from a checkpoint past the
    // SELECT, it stops squeal too.
    let past = master_position(primary).await?;
    squeal::checkpoint::save(
        &checkpoint,
        &squeal::checkpoint::Position::at(past.0, past.1),
    )?;
    let mut third = Squeal::run(&config, primary.password(), &dir.path().join("third.log"))?;
    // Let it start and pass a marker, so the stop below is this statement's.
    phases.end(&mut conn).await;
    expect_stop_on_statement(
        primary,
        &mut third,
        "SET STATEMENT sql_mode = '' FOR UPDATE sl.t SET v = 's' WHERE id = 4",
        "SET STATEMENT ... FOR UPDATE",
    )
    .await?;
    drop(squeal);
    Ok(())
}

const LOWER_CASE_RULES: &str = r#"
[[rules]]
table = "lc.users"
keys = ["u:{id}"]

[[rules]]
table = "lc_logs.*"
keys = ["l:{id}"]

[[rules]]
table = "lc.markers"
keys = ["marker:{id}"]

# Spelt as the table was created; the server stores and logs it lowercased.
[[rules]]
table = "LC.Orders"
keys = ["o:{id}"]
"#;

/// With `lower_case_table_names=1` the server stores and logs table and schema names lowercased
/// but takes them in any case in statements: a TRUNCATE, RENAME, ALTER … RENAME or DROP DATABASE
/// that spells a ruled table in another case still gives its flush_table (until 2026-12-01 squeal
/// matched the statement's spelling against the rules case-sensitively and published nothing),
/// and a rule spelt in another case than the stored name matches its row events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_naming_a_ruled_table_in_another_case_flush_it_under_lower_case_table_names(
) -> TestResult {
    let stack =
        Stack::start(StackOptions::default().with_primary_option("--lower-case-table-names=1"))
            .await?;
    let topic = "inv_lower_case";
    let scenario = Scenario::new(&stack, topic, 1, LOWER_CASE_RULES).await?;
    let primary = stack.primary();
    let mut conn = primary.connect().await?;
    let lctn: Option<u32> = conn.query_first("SELECT @@lower_case_table_names").await?;
    assert_eq!(
        lctn,
        Some(1),
        "the server must fold names: the test would prove nothing"
    );
    for sql in [
        "CREATE DATABASE LC",
        "CREATE TABLE LC.Markers (id INT PRIMARY KEY)",
        "CREATE TABLE LC.Users (id INT PRIMARY KEY)",
        "CREATE TABLE LC.Orders (id INT PRIMARY KEY)",
        "CREATE DATABASE LC_Logs",
        "CREATE TABLE LC_Logs.Events (id INT PRIMARY KEY)",
    ] {
        conn.query_drop(sql).await?;
    }
    let squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    let mut phases = Phases::new(
        TopicReader::new(&stack.kafka().brokers(), topic)?,
        "LC.MARKERS",
    );
    phases.end(&mut conn).await;

    // Row events name the table as stored (lowercase): the rule matches as before.
    conn.query_drop("INSERT INTO Lc.USERS VALUES (1)").await?;
    let (records, _) = phases.end(&mut conn).await;
    assert_eq!(keys(&records), set(&["u:1"]), "row events of LC.Users");
    // A rule spelt `LC.Orders` matches the row events of `lc.orders` (before session 31 it was
    // compared exactly, and every row change of the table was skipped in silence).
    conn.query_drop("INSERT INTO LC.Orders VALUES (1)").await?;
    let (records, _) = phases.end(&mut conn).await;
    assert_eq!(keys(&records), set(&["o:1"]), "row events of LC.Orders");

    let mut in_lc = primary.connect().await?;
    in_lc.query_drop("USE Lc").await?;
    // (`use_lc`: run in a session whose default database is `Lc`.)
    for (use_lc, sql, want) in [
        (false, "TRUNCATE TABLE LC.USERS", &["lc.users"][..]),
        (true, "TRUNCATE TABLE Users", &["lc.users"][..]),
        (
            false,
            "RENAME TABLE LC.Users TO LC.Users_Old",
            &["lc.users"][..],
        ),
        (
            false,
            "ALTER TABLE LC.USERS_OLD RENAME TO Lc.Users",
            &["lc.users"][..],
        ),
        (false, "DROP DATABASE LC_LOGS", &["lc_logs.*"][..]),
    ] {
        let session = if use_lc { &mut in_lc } else { &mut conn };
        session.query_drop(sql).await?;
        let (records, _) = phases.end(&mut conn).await;
        assert_eq!(flushed(&records), set(want), "{sql}");
    }
    drop(squeal);
    Ok(())
}
