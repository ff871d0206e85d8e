//! The harness fails fast and says why: a missing program, a port that will not bind, a service that does
//! not come up within its deadline. Each error names the missing piece or the log to read, and no test
//! here can hang (each is bounded by a tokio timeout well above the harness's own deadlines).
//!
//! These tests change environment variables, so they live in their own test binary and take a lock.

use std::time::{Duration, Instant};

use integration::{Stack, StackError, StackOptions};

static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start_bounded(options: StackOptions) -> Result<Stack, StackError> {
    tokio::time::timeout(Duration::from_secs(180), Stack::start(options))
        .await
        .expect("Stack::start must not hang")
}

fn our_mariadbd_pids(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("mariadbd") && cmdline.contains(marker))
                .then(|| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

#[tokio::test]
async fn a_missing_mariadb_names_the_program_and_the_setup_command() {
    let _guard = ENV_LOCK.lock().await;
    std::env::set_var("SQUEAL_MARIADBD", "/nonexistent/mariadbd");
    let result = start_bounded(StackOptions::default().without_kafka()).await;
    std::env::remove_var("SQUEAL_MARIADBD");
    let error = result
        .expect_err("a stack without mariadbd must not start")
        .to_string();
    assert!(error.contains("missing prerequisite: mariadbd"), "{error}");
    assert!(error.contains("scripts/setup"), "{error}");
}

#[tokio::test]
async fn missing_kafka_jars_name_the_folder_and_the_setup_command() {
    let _guard = ENV_LOCK.lock().await;
    std::env::set_var("SQUEAL_KAFKA_LIBS", "/nonexistent/kafka-libs");
    let result = start_bounded(StackOptions::default()).await;
    std::env::remove_var("SQUEAL_KAFKA_LIBS");
    let error = result
        .expect_err("a stack without Kafka jars must not start")
        .to_string();
    assert!(error.contains("Kafka broker jars"), "{error}");
    assert!(error.contains("/nonexistent/kafka-libs"), "{error}");
    assert!(error.contains("scripts/setup"), "{error}");
}

#[tokio::test]
async fn a_port_that_will_not_bind_fails_with_the_server_log() {
    let _guard = ENV_LOCK.lock().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let started = Instant::now();
    let error = start_bounded(StackOptions {
        primary_port: Some(port),
        ..StackOptions::default().without_kafka()
    })
    .await
    .expect_err("the primary cannot bind a taken port");
    let text = error.to_string();
    assert!(matches!(error, StackError::Exited { .. }), "{text}");
    assert!(
        text.contains("mariadb primary exited during start-up"),
        "{text}"
    );
    assert!(text.contains("error.log"), "names the log to read: {text}");
    assert!(
        text.contains(&port.to_string()),
        "the log tail shows the port: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "fails fast, not at the deadline"
    );
    if let StackError::Exited { log, .. } = &error {
        // The folder is kept so the named log can be read.
        assert!(log.exists(), "{} was removed", log.display());
        std::fs::remove_dir_all(log.parent().and_then(|p| p.parent()).expect("stack dir")).ok();
    }
}

#[tokio::test]
async fn a_server_that_misses_its_deadline_is_killed_and_named() {
    let _guard = ENV_LOCK.lock().await;
    let error = start_bounded(StackOptions {
        mariadb_startup_timeout: Duration::from_millis(1),
        ..StackOptions::default().without_kafka()
    })
    .await
    .expect_err("nothing starts within 1 ms");
    let text = error.to_string();
    let StackError::Timeout { log, .. } = &error else {
        panic!("expected a timeout, got: {text}");
    };
    assert!(
        text.contains("mariadb primary did not come up within 1ms"),
        "{text}"
    );
    assert!(text.contains("error.log"), "{text}");
    let stack_dir = log
        .parent()
        .and_then(|p| p.parent())
        .expect("stack dir")
        .to_path_buf();
    let marker = stack_dir.display().to_string();
    assert!(
        our_mariadbd_pids(&marker).is_empty(),
        "the late server must be killed, found {:?}",
        our_mariadbd_pids(&marker)
    );
    std::fs::remove_dir_all(stack_dir).ok();
}

#[tokio::test]
async fn a_broker_that_misses_its_deadline_is_killed_and_named() {
    let _guard = ENV_LOCK.lock().await;
    let error = start_bounded(StackOptions {
        kafka_startup_timeout: Duration::from_millis(100),
        ..StackOptions::default()
    })
    .await
    .expect_err("a JVM broker does not answer within 100 ms");
    let text = error.to_string();
    assert!(
        text.contains("kafka did not come up within 100ms"),
        "{text}"
    );
    assert!(text.contains("kafka.log"), "{text}");
    if let StackError::Timeout { log, .. } = &error {
        std::fs::remove_dir_all(log.parent().and_then(|p| p.parent()).expect("stack dir")).ok();
    }
}
