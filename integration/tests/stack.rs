//! The harness on the real services: MariaDB replication, a Kafka round trip, the primary's binlog
//! settings as the server reports them, that dropping a stack leaves no process behind, and what a
//! failing test prints about its services.

use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use integration::{Stack, StackOptions, DEMO_DATABASE};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn process_exists(pid: u32) -> bool {
    // A reaped child has no /proc entry; a zombie would still show, so check its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .split(") ")
            .nth(1)
            .is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_written_on_the_primary_is_read_back_from_the_replica() -> TestResult {
    let stack = Stack::start(
        StackOptions::default()
            .without_kafka()
            .with_replica("eu", 0),
    )
    .await?;
    let replica = stack.replica("eu").expect("replica eu");
    stack
        .primary()
        .execute(&format!(
            "INSERT INTO {DEMO_DATABASE}.users (email, name, birthday, bio) \
             VALUES ('ada@example.com', 'Ada', '1815-12-10', NULL)"
        ))
        .await?;
    stack
        .wait_replica_caught_up("eu", Duration::from_secs(30))
        .await?;
    let rows = replica
        .query(&format!(
            "SELECT email, name, birthday, bio FROM {DEMO_DATABASE}.users WHERE email = 'ada@example.com'"
        ))
        .await?;
    assert_eq!(
        rows,
        vec![vec![
            Some("ada@example.com".to_string()),
            Some("Ada".to_string()),
            Some("1815-12-10".to_string()),
            None
        ]]
    );
    // The replica is a real, separate server: it has its own server id and refuses direct writes.
    let ids = replica.query("SELECT @@server_id, @@read_only").await?;
    assert_eq!(
        ids,
        vec![vec![Some("100".to_string()), Some("1".to_string())]]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_produced_to_the_broker_is_consumed_back() -> TestResult {
    let stack = Stack::start(StackOptions::default()).await?;
    stack.create_topic("roundtrip", 3).await?;
    let producer: FutureProducer = stack
        .kafka()
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    let payload = format!("hello from pid {}", std::process::id());
    let delivery = producer
        .send(
            FutureRecord::to("roundtrip")
                .key("user:42")
                .payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    let consumer: StreamConsumer = stack
        .kafka()
        .client_config()
        .set("group.id", "roundtrip-test")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&["roundtrip"])?;
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await??;
    assert_eq!(message.payload(), Some(payload.as_bytes()));
    assert_eq!(message.key(), Some(&b"user:42"[..]));
    assert_eq!(
        (message.partition(), message.offset()),
        (delivery.partition, delivery.offset)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_binlog_has_the_settings_the_pipeline_needs() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let rows = stack
        .primary()
        .query(
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, \
             @@binlog_annotate_row_events, @@gtid_strict_mode, @@server_id, @@bind_address",
        )
        .await?;
    let expected = ["1", "ROW", "FULL", "FULL", "1", "1", "1", "127.0.0.1"];
    assert_eq!(
        rows,
        vec![expected
            .iter()
            .map(|v| Some(v.to_string()))
            .collect::<Vec<_>>()]
    );
    // The demo schema is there, with the column kinds keys are built from.
    let tables = stack
        .primary()
        .query(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{DEMO_DATABASE}' ORDER BY 1"
        ))
        .await?;
    let tables: Vec<_> = tables.into_iter().filter_map(|r| r[0].clone()).collect();
    assert_eq!(tables, ["follows", "posts", "users"]);
    // A write produces a GTID in the primary's domain 0, server 1.
    stack
        .primary()
        .execute(&format!(
            "INSERT INTO {DEMO_DATABASE}.follows (follower_id, followee_id) VALUES (1, 2)"
        ))
        .await?;
    let pos = stack.primary().query("SELECT @@gtid_binlog_pos").await?;
    let pos = pos[0][0].clone().unwrap_or_default();
    assert!(pos.starts_with("0-1-"), "gtid_binlog_pos = {pos:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stack_stops_every_process_and_restart_keeps_the_data() -> TestResult {
    let stack = Stack::start(StackOptions::default().with_replica("eu", 0)).await?;
    stack
        .primary()
        .execute(&format!(
            "INSERT INTO {DEMO_DATABASE}.users (email, name) VALUES ('kept@x', 'Kept')"
        ))
        .await?;
    // A restart keeps the port and the data directory.
    let port = stack.primary().port();
    let old_pid = stack.primary().pid().expect("running");
    stack.primary().restart().await?;
    assert_eq!(stack.primary().port(), port);
    assert_ne!(stack.primary().pid(), Some(old_pid));
    assert!(
        !process_exists(old_pid),
        "the old mariadbd {old_pid} is still running"
    );
    let rows = stack
        .primary()
        .query(&format!(
            "SELECT name FROM {DEMO_DATABASE}.users WHERE email = 'kept@x'"
        ))
        .await?;
    assert_eq!(rows, vec![vec![Some("Kept".to_string())]]);

    let pids: Vec<u32> = [
        stack.primary().pid(),
        stack.replica("eu").and_then(|r| r.pid()),
        stack.kafka().pid(),
    ]
    .into_iter()
    .map(|p| p.expect("every service runs"))
    .collect();
    assert!(pids.iter().all(|&pid| process_exists(pid)));
    let dir = stack.dir();
    drop(stack);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "process {pid} survived the stack's drop"
        );
    }
    assert!(
        !Path::new(&dir).exists(),
        "the stack folder of a passing test is removed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_test_keeps_the_service_logs() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let dir = stack.dir();
    let pid = stack.primary().pid().expect("running");
    // Drop the stack while a panic unwinds, as a failing assertion in a test would.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _stack = stack;
        panic!("a failing assertion");
    }));
    assert!(outcome.is_err());
    assert!(!process_exists(pid), "mariadbd {pid} survived");
    let kept_log = dir.join("primary").join("error.log");
    let log = std::fs::read_to_string(&kept_log)?;
    assert!(log.contains("ready for connections"), "kept log: {log}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// What a failing test prints about its stack tells a server that died from one that runs, with
/// the end of its error log: the CI machine and the kept folder are gone by the time one reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failure_report_tells_a_server_that_died_and_how() -> TestResult {
    let stack = Stack::start(StackOptions::default().without_kafka()).await?;
    let pid = stack.primary().pid().expect("running");
    let report = stack.report();
    assert!(
        report.contains(&format!("mariadb primary running (pid {pid})")),
        "{report}"
    );
    // Stopped from outside the harness, as an operator would.
    // SAFETY: kill(2) on the harness's own, not yet reaped, child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = stack.report();
        if report.contains("exited by itself") || std::time::Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        report.contains("mariadb primary exited by itself (exit status: 0)"),
        "{report}"
    );
    assert!(report.contains("Shutdown complete"), "{report}");
    assert!(stack.report().contains("mariadb primary stopped"));
    Ok(())
}

/// Each server keeps its temporary tables in a folder of its own. At start-up mariadbd deletes
/// every `#sql*` file in its tmpdir, whoever's it is: in a shared TMPDIR, a stack starting in one
/// test removed the files of another server's internal temporary table between their creation and
/// their opening, and MariaDB 10.11 crashed (signal 11 in `ha_maria::drop_table`, under an
/// information_schema query of `squeal check`, in parallel tests). With the shared TMPDIR, this
/// test sees the held table's files gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_starting_leaves_the_temporary_tables_of_running_ones_alone() -> TestResult {
    use mysql_async::prelude::Queryable;
    let running = Stack::start(StackOptions::default().without_kafka()).await?;
    let mut conn = running.primary().connect().await?;
    // A temporary table on disk, held by this open session.
    conn.query_drop("CREATE DATABASE test_tmp").await?;
    conn.query_drop("CREATE TEMPORARY TABLE test_tmp.held (b BLOB) ENGINE=Aria")
        .await?;
    let tmpdir: String = conn
        .query_first("SELECT @@tmpdir")
        .await?
        .ok_or("no @@tmpdir")?;
    let sql_files = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(&tmpdir)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .filter(|name| name.starts_with("#sql"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let held = sql_files();
    assert!(!held.is_empty(), "no #sql file in {tmpdir}");
    let _starting = Stack::start(StackOptions::default().without_kafka()).await?;
    let left = sql_files();
    assert!(
        held.is_subset(&left),
        "a server starting removed {:?} from {tmpdir}",
        held.difference(&left).collect::<Vec<_>>()
    );
    Ok(())
}
