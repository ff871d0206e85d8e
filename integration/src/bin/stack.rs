//! `stack`: starts the real services of squeal's pipeline on this machine, for people and demos.
//!
//! - `stack up` starts MariaDB (primary, and a replica per `--replica REGION[:DELAY_SECS]`) and Kafka on
//!   free loopback ports, prints their endpoints as `export NAME=value` lines, and stays in the
//!   foreground until SIGINT or SIGTERM, then stops everything.
//! - `stack demo` starts the same stack, writes a row on the primary and reads it back from the replica,
//!   sends a record through Kafka and reads it back, printing each step, then stops.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
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
    /// Start the stack, show a row replicated and a record through Kafka, then stop.
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

    let email = format!("demo-{}@example.com", std::process::id());
    println!(
        "== writing a row on the primary: INSERT INTO {DEMO_DATABASE}.users (email='{email}')"
    );
    stack
        .primary()
        .execute(&format!(
            "INSERT INTO {DEMO_DATABASE}.users (email, name, birthday) VALUES ('{email}', 'Demo', '1990-04-01')"
        ))
        .await?;
    let gtid = stack.primary().query("SELECT @@gtid_binlog_pos").await?;
    println!("   committed; primary GTID position {:?}", gtid[0][0]);
    stack
        .wait_replica_caught_up("eu", Duration::from_secs(30))
        .await?;
    let rows = stack
        .replica("eu")
        .expect("eu")
        .query(&format!(
            "SELECT id, email, birthday FROM {DEMO_DATABASE}.users WHERE email = '{email}'"
        ))
        .await?;
    println!(
        "   replica eu has it: {:?}",
        rows.first().ok_or("the row did not reach the replica")?
    );

    let topic = "squeal-demo";
    println!("== a record through Kafka: topic {topic}");
    stack.create_topic(topic, 1).await?;
    let producer: FutureProducer = stack.kafka().client_config().set("acks", "all").create()?;
    let payload = format!("{{\"demo\":\"{email}\"}}");
    let delivery = producer
        .send(
            FutureRecord::<(), _>::to(topic).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    println!(
        "   produced {payload} -> partition {} offset {} (acks=all)",
        delivery.partition, delivery.offset
    );
    let consumer: StreamConsumer = stack
        .kafka()
        .client_config()
        .set("group.id", "squeal-demo")
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[topic])?;
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await??;
    println!(
        "   consumed {} from partition {} offset {}",
        String::from_utf8_lossy(message.payload().unwrap_or_default()),
        message.partition(),
        message.offset()
    );
    println!(
        "== done in {:.1} s; stopping the stack",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
