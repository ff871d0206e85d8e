//! `stack`: starts the real services of squeal's pipeline on this machine, for people and demos.
//!
//! - `stack up` starts MariaDB (primary, and a replica per `--replica REGION[:DELAY_SECS]`) and Kafka on
//!   free loopback ports, prints their endpoints as `export NAME=value` lines, and stays in the
//!   foreground until SIGINT or SIGTERM, then stops everything.
//! - `stack demo` starts the same stack, shows a row replicated to the eu replica, then runs the `squeal`
//!   binary built beside this one against a small workload and prints the invalidation records it
//!   publishes to Kafka, then stops everything.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

use integration::{Stack, StackOptions, DEMO_DATABASE};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(
    name = "stack",
    about = "Start squeal's real services (MariaDB, Kafka) as local processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the stack, print `export NAME=value` lines, stay up until SIGINT/SIGTERM.
    Up {
        /// A remote region's replica, as REGION or REGION:DELAY_SECS (repeatable). Default: eu.
        #[arg(long = "replica", value_name = "REGION[:DELAY_SECS]")]
        replicas: Vec<String>,
        /// Keep the data and logs after stopping.
        #[arg(long)]
        keep: bool,
    },
    /// Start the stack and squeal, run a demo workload, print the invalidations published, then stop.
    Demo,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written is dropped. By default the subscriber reports the failure with
        // eprintln!, which panics when stderr is gone (a supervisor's pipe closed), and takes the process
        // down with it.
        .log_internal_errors(false)
        .init();
    let result = match Cli::parse().command {
        Command::Up { replicas, keep } => up(replicas, keep).await,
        Command::Demo => demo().await,
    };
    if let Err(error) = result {
        eprintln!("stack: {error}");
        std::process::exit(1);
    }
}

fn parse_replica(spec: &str) -> Result<(String, u32), BoxError> {
    match spec.split_once(':') {
        Some((region, delay)) => Ok((
            region.to_string(),
            delay.parse().map_err(|_| {
                format!("--replica {spec}: DELAY_SECS must be a whole number of seconds")
            })?,
        )),
        None => Ok((spec.to_string(), 0)),
    }
}

async fn up(replicas: Vec<String>, keep: bool) -> Result<(), BoxError> {
    let mut options = StackOptions::default();
    let replicas = if replicas.is_empty() {
        vec!["eu".to_string()]
    } else {
        replicas
    };
    for spec in &replicas {
        let (region, delay) = parse_replica(spec)?;
        options = options.with_replica(&region, delay);
    }
    eprintln!(
        "stack: starting MariaDB primary, {} replica(s) and Kafka ...",
        replicas.len()
    );
    let mut stack = Stack::start(options).await?;
    println!("export MYSQL_PRIMARY_URL={}", stack.primary().url());
    for (i, (region, replica)) in stack.replicas().enumerate() {
        if i == 0 {
            println!("export MYSQL_REPLICA_URL={}", replica.url());
        }
        println!(
            "export MYSQL_REPLICA_{}_URL={}",
            region.to_uppercase(),
            replica.url()
        );
    }
    println!("export KAFKA_BROKERS={}", stack.kafka().brokers());
    println!("export SQUEAL_STACK_DIR={}", stack.dir().display());
    eprintln!(
        "stack: up; logs in {}. Ctrl-C (SIGINT) or SIGTERM stops it.",
        stack.dir().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stack: stopping ...");
    if keep {
        eprintln!(
            "stack: data and logs kept in {}",
            stack.keep_logs().display()
        );
    }
    drop(stack);
    eprintln!("stack: stopped");
    Ok(())
}

async fn demo() -> Result<(), BoxError> {
    let started = Instant::now();
    println!("== starting the stack: MariaDB primary + replica (region eu) + Kafka (KRaft)");
    let stack = Stack::start(StackOptions::default().with_replica("eu", 0)).await?;
    println!(
        "   up in {:.1} s: primary 127.0.0.1:{}, replica eu 127.0.0.1:{}, kafka {}",
        started.elapsed().as_secs_f64(),
        stack.primary().port(),
        stack.replica("eu").expect("eu").port(),
        stack.kafka().brokers()
    );

    println!("== replication: a row written on the primary is read on the eu replica");
    stack
        .primary()
        .execute(&format!(
            "INSERT INTO {DEMO_DATABASE}.users (id, email, name, birthday) VALUES (1, 'ada@example.com', 'Ada', '1815-12-10')"
        ))
        .await?;
    stack
        .wait_replica_caught_up("eu", Duration::from_secs(30))
        .await?;
    let rows = stack
        .replica("eu")
        .expect("eu")
        .query(&format!(
            "SELECT id, email, birthday FROM {DEMO_DATABASE}.users WHERE id = 1"
        ))
        .await?;
    println!(
        "   replica eu has: {:?}",
        rows.first().ok_or("the row did not reach the replica")?
    );

    let topic = "squeal.invalidations";
    stack.create_topic(topic, 1).await?;
    let squeal = start_squeal(&stack, topic)?;
    println!(
        "== squeal tails the primary's binlog and publishes invalidations to Kafka topic {topic}"
    );
    println!("   rules: users -> user:{{id}}, user:email:{{email}}; posts -> post:{{id}}, feed:{{user_id}}; follows -> followers:{{followee_id}}, following:{{follower_id}}");

    let consumer: StreamConsumer = stack
        .kafka()
        .client_config()
        .set("group.id", "squeal-demo")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;

    let d = DEMO_DATABASE;
    let workload: [(&str, String); 6] = [
        ("UPDATE a user's email (old and new email keys)", format!("UPDATE {d}.users SET email = 'ada@lovelace.org' WHERE id = 1")),
        ("one transaction: a post and a follow", format!("BEGIN; INSERT INTO {d}.posts (id, user_id, title, body) VALUES (10, 1, 'Notes', 'On the engine'); INSERT INTO {d}.follows (follower_id, followee_id) VALUES (2, 1); COMMIT")),
        ("a rolled-back transaction (must publish nothing)", format!("BEGIN; UPDATE {d}.users SET name = 'Nobody' WHERE id = 1; ROLLBACK")),
        ("an UPDATE with an embedded key comment", format!("UPDATE {d}.posts /* squeal:invalidate home:trending */ SET score = 9.5 WHERE id = 10")),
        ("DELETE a user", format!("DELETE FROM {d}.users WHERE id = 1")),
        ("TRUNCATE a ruled table (flush message)", format!("TRUNCATE TABLE {d}.follows")),
    ];
    // squeal starts from the earliest binlog, so the INSERT above gives a record too; the rolled-back
    // transaction gives none: one record per statement of the workload, all told.
    let expected_records = workload.len();
    for (what, sql) in &workload {
        println!("-- app: {what}\n   {sql}");
        stack.primary().execute(sql).await?;
    }

    println!("== records on the topic (what each region's invalidator will delete):");
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < expected_records {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .map_err(|_| {
                format!(
                    "only {seen} of {expected_records} records arrived within 60 s; squeal log: {}",
                    squeal.log.display()
                )
            })??;
        let record = invalidation::Record::from_json(message.payload().unwrap_or_default())?;
        for change in &record.changes {
            let table = change
                .table
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "   gtid {:<8} {:<12} {:<20} keys {:?}",
                record
                    .source
                    .gtid
                    .as_ref()
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
                change.op.as_str(),
                table,
                change.keys
            );
        }
        seen += 1;
    }
    if let Ok(Ok(extra)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        return Err(format!(
            "an unexpected record arrived: {}",
            String::from_utf8_lossy(extra.payload().unwrap_or_default())
        )
        .into());
    }
    println!("   {seen} records for {expected_records} committed transactions; the rolled-back one gave none");
    drop(squeal);
    println!(
        "== done in {:.1} s; stopping squeal and the stack",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The squeal daemon run by the demo; SIGTERM and wait on drop.
struct DemoSqueal {
    /// The running `squeal run`.
    child: std::process::Child,
    /// Its log, named when something does not arrive.
    log: std::path::PathBuf,
}

impl Drop for DemoSqueal {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Writes a config for `stack` and starts the `squeal` binary built beside this one.
fn start_squeal(stack: &Stack, topic: &str) -> Result<DemoSqueal, BoxError> {
    let exe = std::env::current_exe()?.with_file_name("squeal");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p squeal` (scripts/demo does)",
            exe.display()
        )
        .into());
    }
    let dir = stack.dir();
    let config = dir.join("squeal.toml");
    std::fs::write(
        &config,
        format!(
            r#"[source]
url = "mysql://root@127.0.0.1:{port}"
password_env = "SQUEAL_DEMO_DB_PASSWORD"
server_id = 4242
start_from = "earliest"

[kafka]
brokers = "{brokers}"
topic = "{topic}"

[checkpoint]
path = "{checkpoint}"

[metrics]
address = "127.0.0.1:0"

[[rules]]
table = "{d}.users"
keys = ["user:{{id}}", "user:email:{{email}}"]

[[rules]]
table = "{d}.posts"
keys = ["post:{{id}}", "feed:{{user_id}}"]

[[rules]]
table = "{d}.follows"
keys = ["followers:{{followee_id}}", "following:{{follower_id}}"]
"#,
            port = stack.primary().port(),
            brokers = stack.kafka().brokers(),
            checkpoint = dir.join("squeal.checkpoint.json").display(),
            d = DEMO_DATABASE,
        ),
    )?;
    let log = dir.join("squeal.log");
    let out = std::fs::File::create(&log)?;
    let child = std::process::Command::new(&exe)
        .args(["run", "--config"])
        .arg(&config)
        .env("SQUEAL_DEMO_DB_PASSWORD", stack.primary().password())
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?;
    println!(
        "   squeal started (pid {}), config {}, log {}",
        child.id(),
        config.display(),
        log.display()
    );
    Ok(DemoSqueal { child, log })
}
