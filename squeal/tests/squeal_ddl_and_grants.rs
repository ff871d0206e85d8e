//! Schema changes and privilege changes under a running squeal, on the real stack (MariaDB + Kafka):
//! - DDL on a ruled table between writes (charset and type changes, a column added before the key
//!   column, the key column renamed, renamed back, dropped, the table dropped and created with
//!   another layout): the keys of rows written after each one, and the same keys again when a
//!   restarted squeal reads the old rows from an earlier checkpoint.
//! - Grants revoked, or the password changed, while squeal streams, then its connection killed
//!   on the server: squeal stops with the reason, its checkpoint kept.
//! - squeal reading the `eu` replica's binlog (log_slave_updates) while the replica's SQL thread
//!   is stopped and started again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use invalidation::Record;
use mysql_async::prelude::Queryable;

use common::*;
use integration::{MariaDb, Stack, StackOptions};

/// What one phase published: its keys, and `flush:db.table` for each flushed table.
fn signals(records: &[Record]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = records
        .iter()
        .flat_map(|r| r.keys().map(str::to_owned))
        .collect();
    out.extend(
        records
            .iter()
            .flat_map(|r| r.flushed_tables())
            .map(|t| format!("flush:{}.{}", t.db, t.name)),
    );
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Signals per source position (one entry per transaction).
fn by_position(records: &[Record]) -> BTreeMap<(String, u64), BTreeSet<String>> {
    let mut out: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for r in records {
        out.entry((r.source.file.clone(), r.source.pos))
            .or_default()
            .extend(signals(std::slice::from_ref(r)));
    }
    out
}

const DDL_RULES: &str = r#"
[[rules]]
table = "squeal_test.people"
keys = ["p:{id}", "p:email:{email}"]

[[rules]]
table = "squeal_test.codes"
keys = ["c:{code}"]

[[rules]]
table = "squeal_test.markers"
keys = ["marker:{id}"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_a_ruled_table_gives_right_keys_or_flush_table_also_when_read_again() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let primary = stack.primary();
    let metadata = primary
        .query("SELECT @@binlog_row_metadata, @@binlog_row_image, @@binlog_format")
        .await?;
    assert_eq!(
        metadata[0],
        vec![
            Some("FULL".to_string()),
            Some("FULL".to_string()),
            Some("ROW".to_string())
        ],
        "the harness default"
    );
    let mut conn = primary.connect().await?;
    for sql in [
        "CREATE DATABASE squeal_test",
        "CREATE TABLE squeal_test.people (id INT PRIMARY KEY, \
         email VARCHAR(100) CHARACTER SET latin1 NULL, name VARCHAR(50))",
        "CREATE TABLE squeal_test.codes (id INT PRIMARY KEY, code VARCHAR(10))",
        "CREATE TABLE squeal_test.markers (id INT PRIMARY KEY)",
    ] {
        conn.query_drop(sql).await?;
    }
    let topic = "inv_ddl";
    let scenario = Scenario::new(&stack, topic, 1, DDL_RULES).await?;
    let mut squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    let mut phases = Phases::new(
        TopicReader::new(&stack.kafka().brokers(), topic)?,
        "squeal_test.markers",
    );
    assert_eq!(signals(&phases.end(&mut conn).await.0), set(&[]));
    // squeal restarts from here later and must publish the same again.
    let early_checkpoint = std::fs::read(&scenario.checkpoint)?;

    let flush = "flush:squeal_test.people";
    let steps: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "before any DDL",
            vec!["INSERT INTO squeal_test.people VALUES (1, 'a\u{e9}@x', 'A')"],
            vec!["p:1", "p:email:a\u{e9}@x"],
        ),
        (
            "latin1 -> utf8mb4",
            vec![
                "ALTER TABLE squeal_test.people MODIFY email VARCHAR(100) CHARACTER SET utf8mb4 NULL",
                "INSERT INTO squeal_test.people VALUES (2, 'b\u{20ac}@x', 'B')",
                "UPDATE squeal_test.people SET name = 'A2' WHERE id = 1",
            ],
            vec!["p:1", "p:email:a\u{e9}@x", "p:2", "p:email:b\u{20ac}@x"],
        ),
        (
            "a column added before the key column",
            vec![
                "ALTER TABLE squeal_test.people ADD COLUMN z VARCHAR(20) DEFAULT 'zz' FIRST",
                "ALTER TABLE squeal_test.people ADD COLUMN y INT DEFAULT 9 AFTER id",
                "INSERT INTO squeal_test.people (id, email, name) VALUES (3, 'c@x', 'C')",
                "DELETE FROM squeal_test.people WHERE id = 2",
            ],
            vec!["p:3", "p:email:c@x", "p:2", "p:email:b\u{20ac}@x"],
        ),
        (
            "the key column renamed",
            vec![
                "ALTER TABLE squeal_test.people RENAME COLUMN email TO mail",
                "INSERT INTO squeal_test.people (id, mail, name) VALUES (4, 'd@x', 'D')",
            ],
            vec![flush],
        ),
        (
            "renamed back",
            vec![
                "ALTER TABLE squeal_test.people CHANGE mail email VARCHAR(100) NULL",
                "UPDATE squeal_test.people SET email = 'd2@x' WHERE id = 4",
            ],
            vec!["p:4", "p:email:d@x", "p:email:d2@x"],
        ),
        (
            "the key column's type changed (VARCHAR -> INT)",
            vec![
                "INSERT INTO squeal_test.codes VALUES (1, '007')",
                "ALTER TABLE squeal_test.codes MODIFY code INT",
                "INSERT INTO squeal_test.codes VALUES (2, 8)",
                "UPDATE squeal_test.codes SET code = 9 WHERE id = 1",
            ],
            vec!["c:007", "c:8", "c:7", "c:9"],
        ),
        (
            "the key column dropped",
            vec![
                "ALTER TABLE squeal_test.people DROP COLUMN email",
                "INSERT INTO squeal_test.people (id, name) VALUES (5, 'E')",
            ],
            vec![flush],
        ),
        (
            "dropped and created with another layout",
            vec![
                "DROP TABLE squeal_test.people",
                "CREATE TABLE squeal_test.people (email VARCHAR(200) NOT NULL, \
                 extra BLOB, id BIGINT UNSIGNED PRIMARY KEY)",
                "INSERT INTO squeal_test.people VALUES ('f@x', x'00', 18446744073709551615)",
            ],
            vec![flush, "p:18446744073709551615", "p:email:f@x"],
        ),
    ];
    let mut first_run = Vec::new();
    for (what, statements, want) in &steps {
        for sql in statements {
            conn.query_drop(*sql).await?;
        }
        let (records, _) = phases.end(&mut conn).await;
        assert_eq!(
            signals(&records),
            set(want),
            "{what}: {records:?}\n{}",
            squeal.log_text()
        );
        first_run.extend(records);
    }
    let (_, last_marker) = phases.end(&mut conn).await;
    let text = squeal.log_text();
    assert!(text.contains("cannot render keys"), "{text}");
    assert!(
        text.contains("uses column `email` which table squeal_test.people does not have"),
        "{text}"
    );

    // kill -9, the checkpoint set back to before the DDL: the restarted squeal reads the old rows
    // (each with its own layout in the binlog) and must publish exactly the same.
    squeal.kill9();
    std::fs::write(&scenario.checkpoint, early_checkpoint)?;
    let mut again = Squeal::run(
        &scenario.config,
        primary.password(),
        &scenario.log.with_extension("restart.log"),
    )?;
    let before = phases.reader.records.len();
    let end = (last_marker.source.file.clone(), last_marker.source.pos);
    let seen = phases
        .reader
        .read_until(Duration::from_secs(60), |r| {
            r[before..]
                .iter()
                .any(|r| (r.source.file.clone(), r.source.pos) == end)
        })
        .await;
    assert!(
        seen,
        "the restart re-published up to the last marker: {}",
        again.log_text()
    );
    let replayed: Vec<Record> = phases.reader.records[before..]
        .iter()
        .filter(|r| (r.source.file.clone(), r.source.pos) < end)
        .filter(|r| !r.keys().any(|k| k.starts_with("marker:")))
        .cloned()
        .collect();
    assert_eq!(by_position(&replayed), by_position(&first_run));
    assert!(again.child.try_wait()?.is_none(), "{}", again.log_text());
    again.terminate();
    Ok(())
}

/// The id of squeal's binlog dump connection on `server`, once it is there.
async fn dump_connection(server: &MariaDb, user: &str) -> Option<u64> {
    for _ in 0..200 {
        let rows = server
            .query(&format!(
                "SELECT ID FROM information_schema.PROCESSLIST \
                 WHERE USER = '{user}' AND COMMAND = 'Binlog Dump'"
            ))
            .await
            .ok()?;
        if let Some(id) = rows.first().and_then(|r| r[0].clone()) {
            return id.parse().ok();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// squeal as the least-privileged user `squeal` streams the ledger; then `change` (run as root)
/// takes away what it needs, more rows are written and its dump connection is killed on the
/// server. squeal must stop with exit 1 and a message containing each of `reason` and none of
/// `not`, its checkpoint at the last acknowledged transaction; once `restore` is run, a restart
/// publishes every row.
async fn grant_change_under_squeal(
    topic: &str,
    change: &str,
    reason: &[&str],
    not: &[&str],
    restore: &str,
) -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let primary = stack.primary();
    for sql in [
        "CREATE USER 'squeal'@'127.0.0.1' IDENTIFIED BY 'squeal-pw-1'",
        "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'squeal'@'127.0.0.1'",
        "GRANT SELECT ON squeal_test.* TO 'squeal'@'127.0.0.1'",
    ] {
        primary.execute(sql).await?;
    }
    let config = std::fs::read_to_string(&scenario.config)?;
    std::fs::write(
        &scenario.config,
        config.replace("mysql://root@", "mysql://squeal@"),
    )?;
    let mut squeal = Squeal::run(&scenario.config, "squeal-pw-1", &scenario.log)?;
    insert_ledger_ids(primary, 1..=5).await?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    let first = ledger_keys_of(1..=5);
    let missing = missing_after(&mut reader, &first, Duration::from_secs(60)).await;
    assert!(missing.is_empty(), "{missing:?}\n{}", squeal.log_text());

    primary.execute(change).await?;
    insert_ledger_ids(primary, 6..=8).await?;
    // The open stream is not affected by the change; a new connection is.
    let id = dump_connection(primary, "squeal")
        .await
        .expect("squeal's dump connection");
    primary.execute(&format!("KILL {id}")).await?;
    insert_ledger_ids(primary, 9..=10).await?;
    let status = squeal.wait_exit(Duration::from_secs(60));
    let text = squeal.log_text();
    let status = status.unwrap_or_else(|| panic!("squeal runs on after `{change}`:\n{text}"));
    assert_eq!(status.code(), Some(1), "{text}");
    for r in reason {
        assert!(text.contains(r), "`{change}`: no {r:?} in\n{text}");
    }
    for r in not {
        assert!(!text.contains(r), "`{change}`: {r:?} in\n{text}");
    }
    assert!(!text.contains("squeal-pw"), "{text}");
    let kept = checkpoint_of(&scenario.checkpoint).expect("checkpoint kept");

    // With the grant (or password) back, a restart publishes the rest, 9 and 10 included.
    primary.execute(restore).await?;
    let mut again = Squeal::run(
        &scenario.config,
        "squeal-pw-1",
        &scenario.log.with_extension("restart.log"),
    )?;
    let all = ledger_keys_of(1..=10);
    let missing = missing_after(&mut reader, &all, Duration::from_secs(60)).await;
    assert!(
        missing.is_empty(),
        "lost after the restart from {kept:?}: {missing:?}\n{}",
        again.log_text()
    );
    again.terminate();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_slave_revoked_while_streaming_stops_at_the_reconnect() -> TestResult {
    grant_change_under_squeal(
        "inv_revoke_repl",
        "REVOKE REPLICATION SLAVE ON *.* FROM 'squeal'@'127.0.0.1'",
        // MariaDB refuses COM_REGISTER_SLAVE with error 1045, the wrong password's text: squeal
        // used to pass it on as is, so the message did not name the grant.
        &["access denied", "needs the privilege REPLICATION SLAVE"],
        &[],
        "GRANT REPLICATION SLAVE ON *.* TO 'squeal'@'127.0.0.1'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binlog_monitor_revoked_while_streaming_stops_at_the_reconnect() -> TestResult {
    grant_change_under_squeal(
        "inv_revoke_monitor",
        "REVOKE BINLOG MONITOR ON *.* FROM 'squeal'@'127.0.0.1'",
        &["access denied", "BINLOG MONITOR"],
        &[],
        "GRANT BINLOG MONITOR ON *.* TO 'squeal'@'127.0.0.1'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_changed_while_streaming_stops_at_the_reconnect() -> TestResult {
    grant_change_under_squeal(
        "inv_password",
        "ALTER USER 'squeal'@'127.0.0.1' IDENTIFIED BY 'squeal-pw-2'",
        &["access denied", "Access denied for user 'squeal'"],
        &["REPLICATION SLAVE"],
        "ALTER USER 'squeal'@'127.0.0.1' IDENTIFIED BY 'squeal-pw-1'",
    )
    .await
}

/// `squeal check` refuses binlog_row_metadata other than FULL, but it is a dynamic global: set to
/// MINIMAL while squeal runs, table maps carry no column names and squeal takes them from
/// information_schema as it is when squeal reads the rows. A row written before a DDL that keeps
/// the column count (here a column moved) and read after it (squeal lagging: paused here, in
/// production Kafka back-pressure or an outage) gets the new layout's names: a wrong key, and the
/// right one is never published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_metadata_set_to_minimal_while_running_never_gives_a_wrong_key() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let primary = stack.primary();
    let mut conn = primary.connect().await?;
    for sql in [
        "CREATE DATABASE squeal_test",
        "CREATE TABLE squeal_test.people (id INT PRIMARY KEY, email VARCHAR(100), name VARCHAR(50))",
        "CREATE TABLE squeal_test.codes (id INT PRIMARY KEY, code VARCHAR(10))",
        "CREATE TABLE squeal_test.markers (id INT PRIMARY KEY)",
    ] {
        conn.query_drop(sql).await?;
    }
    let topic = "inv_minimal";
    let scenario = Scenario::new(&stack, topic, 1, DDL_RULES).await?;
    let mut squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    let mut phases = Phases::new(
        TopicReader::new(&stack.kafka().brokers(), topic)?,
        "squeal_test.markers",
    );
    assert_eq!(signals(&phases.end(&mut conn).await.0), set(&[]));

    primary
        .execute("SET GLOBAL binlog_row_metadata = MINIMAL")
        .await?;
    let mut conn = primary.connect().await?; // a session of the new setting
    squeal.signal(libc::SIGSTOP);
    conn.query_drop("INSERT INTO squeal_test.people VALUES (1, 'a@x', 'Ann')")
        .await?;
    conn.query_drop("ALTER TABLE squeal_test.people MODIFY name VARCHAR(50) AFTER id")
        .await?;
    squeal.signal(libc::SIGCONT);
    // The marker row is logged with names again, or its key (what ends the phase) would be a
    // flush_table too.
    primary
        .execute("SET GLOBAL binlog_row_metadata = FULL")
        .await?;
    let mut conn = primary.connect().await?;
    let (records, _) = phases.end(&mut conn).await;
    let got = signals(&records);
    let text = squeal.log_text();
    assert!(
        !got.contains("p:email:Ann"),
        "a wrong key (the name column's value under the email template): {got:?}\n{text}"
    );
    assert!(
        got.contains("p:email:a@x") || got.contains("flush:squeal_test.people"),
        "the row's key, or flush_table: {got:?}\n{text}"
    );
    squeal.terminate();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squeal_on_the_replica_publishes_what_it_applies_once_its_sql_thread_runs_again(
) -> TestResult {
    let stack = Stack::start(StackOptions::default().with_replica("eu", 0)).await?;
    let primary = stack.primary();
    let replica = stack.replica("eu").expect("eu replica");
    let settings = replica
        .query("SELECT @@log_slave_updates, @@binlog_row_metadata, @@read_only")
        .await?;
    assert_eq!(
        settings[0],
        vec![Some("1".into()), Some("FULL".into()), Some("1".into())],
        "the harness's replica"
    );
    let topic = "inv_replica";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    let config = std::fs::read_to_string(&scenario.config)?;
    std::fs::write(
        &scenario.config,
        config.replace(
            &format!("127.0.0.1:{}", primary.port()),
            &format!("127.0.0.1:{}", replica.port()),
        ),
    )?;
    stack
        .wait_replica_caught_up("eu", Duration::from_secs(30))
        .await?;
    let mut squeal = Squeal::run(&scenario.config, replica.password(), &scenario.log)?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    insert_ledger_ids(primary, 1..=5).await?;
    let missing = missing_after(&mut reader, &ledger_keys_of(1..=5), Duration::from_secs(60)).await;
    assert!(missing.is_empty(), "{missing:?}\n{}", squeal.log_text());

    replica.execute("STOP SLAVE SQL_THREAD").await?;
    insert_ledger_ids(primary, 6..=20).await?;
    // Not applied, so not in the replica's binlog: nothing of it yet.
    reader
        .read_until(Duration::from_secs(3), |r| has_key(r, "ledger:6"))
        .await;
    assert!(
        !has_key(&reader.records, "ledger:6"),
        "published before the replica applied it"
    );
    // A crash while the replica is behind changes nothing.
    squeal.kill9();
    let mut squeal = Squeal::run(&scenario.config, replica.password(), &scenario.log)?;
    replica.execute("START SLAVE SQL_THREAD").await?;
    insert_ledger_ids(primary, 21..=25).await?;
    let missing = missing_after(
        &mut reader,
        &ledger_keys_of(1..=25),
        Duration::from_secs(60),
    )
    .await;
    assert!(missing.is_empty(), "{missing:?}\n{}", squeal.log_text());
    // Each transaction once, carrying the primary's server id and GTID.
    let mut per_gtid: BTreeMap<String, usize> = BTreeMap::new();
    for r in &reader.records {
        assert_eq!(r.source.server_id, primary.server_id(), "{:?}", r.source);
        let gtid = r.source.gtid.as_ref().expect("GTID").to_string();
        *per_gtid.entry(gtid).or_default() += 1;
    }
    assert_eq!(per_gtid.len(), 25, "{per_gtid:?}");
    assert!(
        per_gtid.values().all(|n| *n == 1),
        "republished: {per_gtid:?}"
    );
    assert!(squeal.child.try_wait()?.is_none(), "{}", squeal.log_text());
    squeal.terminate();
    Ok(())
}

/// README: with `resume = "gtid"` squeal "can be pointed at another server of the same GTID
/// topology (failover)". The eu replica writes its own binlog under the same name as the primary
/// (`binlog.000001`), created at another moment: the checkpoint's file date must not make the
/// GTID resume on the replica look like a RESET MASTER.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtid_resume_moves_to_the_replica_of_the_same_topology() -> TestResult {
    let stack = Stack::start(StackOptions::default().with_replica("eu", 0)).await?;
    let primary = stack.primary();
    let replica = stack.replica("eu").expect("eu replica");
    let topic = "inv_failover";
    let scenario = Scenario::ledger(&stack, topic, 1).await?;
    scenario.write_config("resume = \"gtid\"")?;
    let mut squeal = Squeal::run(&scenario.config, primary.password(), &scenario.log)?;
    let mut reader = TopicReader::new(&stack.kafka().brokers(), topic)?;
    insert_ledger_ids(primary, 1..=10).await?;
    let missing = missing_after(
        &mut reader,
        &ledger_keys_of(1..=10),
        Duration::from_secs(60),
    )
    .await;
    assert!(missing.is_empty(), "{missing:?}\n{}", squeal.log_text());
    assert_eq!(squeal.terminate().and_then(|s| s.code()), Some(0));
    let saved = squeal::checkpoint::load(&scenario.checkpoint)?.expect("checkpoint");
    assert!(
        saved.gtid_state.is_some() && saved.file_created.is_some(),
        "{saved:?}"
    );

    // The primary goes on without squeal; then squeal is moved to the replica.
    insert_ledger_ids(primary, 11..=20).await?;
    stack
        .wait_replica_caught_up("eu", Duration::from_secs(30))
        .await?;
    let files = replica.query("SHOW BINARY LOGS").await?;
    assert!(
        files
            .iter()
            .any(|r| r[0].as_deref() == Some(saved.file.as_str())),
        "the replica has a binlog named like the checkpoint's: {files:?}"
    );
    let config = std::fs::read_to_string(&scenario.config)?;
    std::fs::write(
        &scenario.config,
        config.replace(
            &format!("127.0.0.1:{}", primary.port()),
            &format!("127.0.0.1:{}", replica.port()),
        ),
    )?;
    let mut moved = Squeal::run(
        &scenario.config,
        replica.password(),
        &scenario.log.with_extension("replica.log"),
    )?;
    insert_ledger_ids(primary, 21..=25).await?;
    if let Some(status) = moved.wait_exit(Duration::from_secs(5)) {
        panic!(
            "squeal stopped ({status}) on the replica:\n{}",
            moved.log_text()
        );
    }
    let missing = missing_after(
        &mut reader,
        &ledger_keys_of(1..=25),
        Duration::from_secs(60),
    )
    .await;
    let text = moved.log_text();
    assert!(
        missing.is_empty(),
        "{} rows never published after the move, e.g. {:?}:\n{text}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(text.contains("streaming binlog from GTID state"), "{text}");
    assert!(moved.child.try_wait()?.is_none(), "{text}");
    moved.terminate();
    Ok(())
}
