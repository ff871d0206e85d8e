//! End to end on the real stack (MariaDB primary + Kafka): each kind of write gives exactly the
//! expected keys on the topic. Scenarios run one after another against one squeal; each ends with a
//! marker row, so the keys between two markers are exactly one scenario's.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use invalidation::{Operation, Record};
use mysql_async::prelude::Queryable;

use common::{config_text, Phases, Squeal, TestResult, TopicReader};
use integration::{Stack, StackOptions};

const RULES: &str = r#"
[[rules]]
table = "squeal_test.users"
keys = ["user:{id}", "user:email:{email}"]

[[rules]]
table = "squeal_test.markers"
keys = ["marker:{id}"]

[[rules]]
table = "squeal_test.evolving"
keys = ["ev:{id}:{code}"]

[[rules]]
table = "squeal_demo.posts"
keys = ["post:{id}", "posts:user:{user_id}", "post:status:{status}:{score}"]
"#;

/// Reads one scenario's records: those after the previous marker up to marker `n`.
/// Phases of the scenario, and the binlog position of the last marker's commit.
struct Scenarios {
    phases: Phases,
    /// Binlog position of the last marker's transaction.
    last_marker: (String, u64),
}

impl Scenarios {
    async fn end(&mut self, conn: &mut mysql_async::Conn) -> Vec<Record> {
        let (out, marker) = self.phases.end(conn).await;
        self.last_marker = (marker.source.file.clone(), marker.source.pos);
        out
    }
}

fn keys(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .flat_map(|r| r.keys().map(str::to_owned))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_write_gives_exactly_its_keys() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    let topic = "inv_keys";
    stack.create_topic(topic, 1).await?;
    let primary = stack.primary();
    let mut conn = primary.connect().await?;
    for sql in [
        "CREATE DATABASE squeal_test",
        "CREATE TABLE squeal_test.users (id INT PRIMARY KEY, email VARCHAR(100) NULL, name VARCHAR(50))",
        "CREATE TABLE squeal_test.markers (id INT PRIMARY KEY)",
        "CREATE TABLE squeal_test.unruled (id INT PRIMARY KEY)",
        "CREATE TABLE squeal_test.evolving (id INT PRIMARY KEY, code VARCHAR(10))",
    ] {
        conn.query_drop(sql).await?;
    }
    let dir = tempfile::tempdir()?;
    let checkpoint = dir.path().join("checkpoint.json");
    let config = dir.path().join("squeal.toml");
    let port = primary.port();
    std::fs::write(
        &config,
        config_text(
            port,
            &stack.kafka().brokers(),
            topic,
            &checkpoint,
            RULES,
            "",
        ),
    )?;
    let log = dir.path().join("squeal.log");
    let mut squeal = Squeal::run(&config, primary.password(), &log)?;
    let mut s = Scenarios {
        phases: Phases::new(
            TopicReader::new(&stack.kafka().brokers(), topic)?,
            "squeal_test.markers",
        ),
        last_marker: (String::new(), 0),
    };
    // Everything before the first marker (schema creation) publishes nothing.
    assert_eq!(keys(&s.end(&mut conn).await), set(&[]));

    conn.query_drop("INSERT INTO squeal_test.users VALUES (1, 'a@x', 'A')")
        .await?;
    let r = s.end(&mut conn).await;
    assert_eq!(
        keys(&r),
        set(&["user:1", "user:email:a@x"]),
        "INSERT: after image"
    );
    assert!(r
        .iter()
        .all(|r| r.changes.iter().all(|c| c.op == Operation::Insert)));
    assert!(
        r[0].source.gtid.is_some(),
        "MariaDB GTID carried: {:?}",
        r[0].source
    );

    conn.query_drop("UPDATE squeal_test.users SET name = 'B' WHERE id = 1")
        .await?;
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&["user:1", "user:email:a@x"]),
        "UPDATE without key change"
    );

    conn.query_drop("UPDATE squeal_test.users SET email = 'b@x' WHERE id = 1")
        .await?;
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&["user:1", "user:email:a@x", "user:email:b@x"]),
        "UPDATE of a key column: old and new keys"
    );

    conn.query_drop("DELETE FROM squeal_test.users WHERE id = 1")
        .await?;
    let r = s.end(&mut conn).await;
    assert_eq!(
        keys(&r),
        set(&["user:1", "user:email:b@x"]),
        "DELETE: before image"
    );
    assert!(r
        .iter()
        .all(|r| r.changes.iter().all(|c| c.op == Operation::Delete)));

    conn.query_drop("INSERT INTO squeal_test.users VALUES (2, 'c@x', 'C'), (3, NULL, 'N')")
        .await?;
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&["user:2", "user:email:c@x", "user:3"]),
        "multi-row INSERT; NULL email skips only its key"
    );

    for sql in [
        "BEGIN",
        "INSERT INTO squeal_test.users VALUES (4, 'd@x', 'D')",
        "UPDATE squeal_test.users SET name = 'Z' WHERE id = 2",
        "INSERT INTO squeal_test.unruled VALUES (1)",
        "COMMIT",
    ] {
        conn.query_drop(sql).await?;
    }
    let r = s.end(&mut conn).await;
    assert_eq!(
        keys(&r),
        set(&["user:4", "user:email:d@x", "user:2", "user:email:c@x"]),
        "multi-statement transaction"
    );
    let positions: BTreeSet<_> = r
        .iter()
        .map(|r| (r.source.file.clone(), r.source.pos))
        .collect();
    assert_eq!(
        positions.len(),
        1,
        "one transaction, one commit position: {positions:?}"
    );
    assert!(r.last().unwrap().chunk.last);

    for sql in [
        "BEGIN",
        "INSERT INTO squeal_test.users VALUES (5, 'e@x', 'E')",
        "UPDATE squeal_test.users SET email = 'zz@x' WHERE id = 2",
        "ROLLBACK",
    ] {
        conn.query_drop(sql).await?;
    }
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&[]),
        "a rolled-back transaction gives none"
    );

    conn.query_drop("UPDATE squeal_test.users SET name = 'E' /* squeal:invalidate feed:9, timeline:2 */ WHERE id = 4")
        .await?;
    let r = s.end(&mut conn).await;
    assert_eq!(
        keys(&r),
        set(&["user:4", "user:email:d@x", "feed:9", "timeline:2"]),
        "embedded-comment keys join the statement's transaction"
    );
    assert!(r.iter().any(|r| r
        .changes
        .iter()
        .any(|c| c.op == Operation::Embedded && c.table.is_none())));

    conn.query_drop("INSERT INTO squeal_demo.users (id, email, name) VALUES (7, 'u7@x', 'U7')")
        .await?;
    conn.query_drop(
        "INSERT INTO squeal_demo.posts (id, user_id, title, body, status, score) VALUES (100, 7, 't', 'b', 'published', 12.5)",
    )
    .await?;
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&["post:100", "posts:user:7", "post:status:published:12.50"]),
        "BIGINT UNSIGNED, ENUM by name, DECIMAL with its scale"
    );

    // Schema changes between writes, read back after a crash so squeal decodes old rows after the
    // table changed: keys must follow each row's own layout.
    s.end(&mut conn).await;
    // Kill only once the checkpoint covers the last marker, so the restart repeats nothing and the
    // next scenario's keys stay exact.
    let (file, pos) = s.last_marker.clone();
    let covered = common::eventually(Duration::from_secs(30), || {
        squeal::checkpoint::load(&checkpoint)
            .ok()
            .flatten()
            .is_some_and(|p| p.file > file || (p.file == file && p.pos >= pos))
    })
    .await;
    assert!(covered, "checkpoint never reached the acknowledged marker");
    squeal.kill9();
    for sql in [
        "INSERT INTO squeal_test.evolving VALUES (1, 'x')",
        "ALTER TABLE squeal_test.evolving ADD COLUMN extra INT FIRST",
        "INSERT INTO squeal_test.evolving (extra, id, code) VALUES (7, 2, 'y')",
        "ALTER TABLE squeal_test.evolving DROP COLUMN extra",
        "ALTER TABLE squeal_test.evolving MODIFY code VARCHAR(10) FIRST",
        "INSERT INTO squeal_test.evolving (code, id) VALUES ('z', 3)",
        "UPDATE squeal_test.evolving SET id = 30 WHERE id = 3",
    ] {
        conn.query_drop(sql).await?;
    }
    let mut squeal = Squeal::run(&config, primary.password(), &log)?;
    let r = s.end(&mut conn).await;
    assert_eq!(
        keys(&r),
        set(&["ev:1:x", "ev:2:y", "ev:3:z", "ev:30:z"]),
        "ALTER TABLE add/drop/reorder columns between writes"
    );

    // XA: keys are held from XA PREPARE until XA COMMIT (published then) or XA ROLLBACK (dropped).
    // A prepared XA transaction blocks its session until resolved, so XA runs on its own
    // connection while markers go through `conn`.
    let mut xa = primary.connect().await?;
    let prepare = |id: u32| {
        [
            format!("XA START 'x{id}'"),
            format!("INSERT INTO squeal_test.users VALUES ({id}, 'x{id}@x', 'X')"),
            format!("XA END 'x{id}'"),
            format!("XA PREPARE 'x{id}'"),
        ]
    };
    for sql in prepare(8) {
        xa.query_drop(sql).await?;
    }
    // Without the hold (as before: published at XA PREPARE) user:8 arrives before this marker.
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&[]),
        "nothing is published at XA PREPARE"
    );
    xa.query_drop("XA COMMIT 'x8'").await?;
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&["user:8", "user:email:x8@x"]),
        "XA transaction published at its XA COMMIT"
    );

    for sql in prepare(9) {
        xa.query_drop(sql).await?;
    }
    assert_eq!(keys(&s.end(&mut conn).await), set(&[]), "XA PREPARE");
    xa.query_drop("XA ROLLBACK 'x9'").await?;
    assert_eq!(
        keys(&s.end(&mut conn).await),
        set(&[]),
        "a rolled-back XA transaction gives none"
    );

    // kill -9 between XA PREPARE and XA COMMIT: the held keys are not in the checkpoint, so the
    // checkpoint must stay before the PREPARE and a restart must read it again.
    for sql in prepare(10) {
        xa.query_drop(sql).await?;
    }
    assert_eq!(keys(&s.end(&mut conn).await), set(&[]), "XA PREPARE");
    // The marker after the PREPARE is acknowledged, yet the checkpoint stays before the PREPARE.
    // (Without the hold it passes the marker within ~50 ms, and after the kill the PREPARE is
    // never read again: user:10 below would be missing.)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (file, pos) = s.last_marker.clone();
    let held = squeal::checkpoint::load(&checkpoint)?.expect("checkpoint");
    assert!(
        held.file < file || (held.file == file && held.pos < pos),
        "checkpoint {}:{} passed the marker {file}:{pos} while an XA transaction was prepared",
        held.file,
        held.pos
    );
    let address = common::metrics_address(&squeal.log_text()).expect("metrics address");
    let text = common::scrape(&address).await?;
    assert_eq!(
        common::metric(&text, "squeal_xa_transactions_held"),
        Some(1.0),
        "{text}"
    );
    squeal.kill9();
    xa.query_drop("XA COMMIT 'x10'").await?;
    let mut squeal = Squeal::run(&config, primary.password(), &log)?;
    let r = s.end(&mut conn).await;
    let after_restart: BTreeSet<String> = keys(&r)
        .into_iter()
        .filter(|k| !k.starts_with("marker:")) // the marker read again from the checkpoint
        .collect();
    assert_eq!(
        after_restart,
        set(&["user:10", "user:email:x10@x"]),
        "held XA keys survive a kill -9 and are published at XA COMMIT"
    );
    drop(xa);

    conn.query_drop("TRUNCATE TABLE squeal_test.users").await?;
    let r = s.end(&mut conn).await;
    let flushed: Vec<_> = r.iter().flat_map(|r| r.flushed_tables().cloned()).collect();
    assert_eq!(
        flushed,
        vec![invalidation::TableRef::new("squeal_test", "users")],
        "TRUNCATE gives flush_table"
    );
    assert!(keys(&r).is_empty());

    conn.query_drop("TRUNCATE TABLE squeal_test.unruled")
        .await?;
    assert!(
        s.end(&mut conn).await.is_empty(),
        "TRUNCATE of an unruled table gives nothing"
    );

    let status = squeal.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM ends squeal cleanly: {status:?}"
    );
    let text = squeal.log_text();
    assert!(
        !text.contains(primary.password()),
        "the password reached the log"
    );
    assert!(checkpoint.exists());
    Ok(())
}
