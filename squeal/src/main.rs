//! squeal: tails a MySQL/MariaDB binlog and publishes cache invalidations to Kafka.
//!
//! `squeal check --config FILE` verifies the server and rules; `squeal run --config FILE` checks,
//! then streams until SIGINT/SIGTERM (exit 0 after a final checkpoint) or a fatal error (exit 1).
//! Configuration errors exit 2.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use tokio::sync::watch;

use squeal::checkpoint::{self, Position};
use squeal::config::{Config, StartFrom};
use squeal::metrics::{self, Metrics};
use squeal::publish::Publisher;
use squeal::source::{self, Source};

#[derive(Parser)]
#[command(
    name = "squeal",
    version,
    about = "Binlog → cache invalidations → Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify the server settings, privileges and rules; say what to change.
    Check {
        /// Path of the TOML config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Check, then stream invalidations until stopped.
    Run {
        /// Path of the TOML config.
        #[arg(long)]
        config: PathBuf,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written is dropped. By default the subscriber reports the failure with
        // eprintln!, which panics when stderr is gone (a supervisor's pipe closed), and takes the process
        // down with it.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let (Command::Check { config } | Command::Run { config }) = &cli.command;
    let cfg = match Config::load(config) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("squeal: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        match cli.command {
            Command::Check { .. } => {
                let mut report = squeal::check::run_checks(&cfg).await;
                // Here only: `run` takes the lock itself before its checks.
                squeal::check::check_checkpoint_lock(&mut report, &cfg.checkpoint.path);
                println!("{report}");
                if report.passed() {
                    0
                } else {
                    1
                }
            }
            Command::Run { .. } => match run(cfg).await {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("squeal: {e}");
                    1
                }
            },
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn start_position(cfg: &Config) -> Result<Position, BoxError> {
    if let Some(p) = checkpoint::load(&cfg.checkpoint.path)? {
        tracing::info!(file = %p.file, pos = p.pos, "resuming from checkpoint");
        return Ok(p);
    }
    let mut conn = Conn::new(cfg.mysql_opts()?).await?;
    let position = match cfg.source.start_from {
        StartFrom::Earliest => {
            let logs = source::binary_logs(&mut conn).await?;
            let first = logs.first().ok_or("the server lists no binary logs")?;
            // MySQL: the GTID set is filled from the first file's PREVIOUS_GTIDS event, and the
            // file's date from its FORMAT_DESCRIPTION event, as they are read.
            Position::at(first.clone(), 4)
        }
        StartFrom::Current => {
            let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
                Ok(r) => r,
                Err(_) => conn.query_first("SHOW BINARY LOG STATUS").await?,
            };
            let row = row.ok_or("SHOW MASTER STATUS returned nothing: is log_bin on?")?;
            Position {
                file: row.get_opt::<String, usize>(0).ok_or("no file")??,
                pos: row.get_opt::<u64, usize>(1).ok_or("no position")??,
                gtid: None,
                gtid_state: None,
                // MySQL: Executed_Gtid_Set, read together with the file and position.
                gtid_set: row
                    .get_opt::<Option<String>, usize>(4)
                    .and_then(Result::ok)
                    .flatten()
                    .map(|s| s.split_whitespace().collect::<String>())
                    .filter(|s| !s.is_empty()),
                file_created: None,
            }
        }
    };
    let mut position = position;
    // MariaDB knows the GTID state at any binlog position; keep it for `resume = "gtid"`.
    let state: Result<Option<Option<String>>, _> = conn
        .exec_first(
            "SELECT BINLOG_GTID_POS(?, ?)",
            (&position.file, position.pos),
        )
        .await;
    position.gtid_state = state.ok().flatten().flatten().filter(|s| !s.is_empty());
    let _ = conn.disconnect().await;
    // Saved at once: a crash before the first acknowledgement must not start "current" again later.
    checkpoint::save(&cfg.checkpoint.path, &position)?;
    tracing::info!(file = %position.file, pos = position.pos, start_from = ?cfg.source.start_from, "no checkpoint: starting here");
    Ok(position)
}

async fn run(cfg: Arc<Config>) -> Result<(), BoxError> {
    tracing::info!(
        source = %cfg.source.url,
        server_id = cfg.source.server_id,
        brokers = %cfg.kafka.brokers,
        topic = %cfg.kafka.topic,
        checkpoint = %cfg.checkpoint.path.display(),
        rules = cfg.rules.len(),
        "squeal starting"
    );
    // Before anything else, so a second squeal on this checkpoint stops without reading or writing it.
    let _checkpoint_lock = checkpoint::CheckpointLock::acquire(&cfg.checkpoint.path)?;
    let report = squeal::check::run_checks(&cfg).await;
    if !report.passed() {
        eprintln!("{report}");
        return Err("the server does not pass `squeal check`; refusing to start".into());
    }
    let metrics = Metrics::new();
    let listener = tokio::net::TcpListener::bind(cfg.metrics.address)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on metrics.address {}: {e}",
                cfg.metrics.address
            )
        })?;
    tracing::info!(address = %listener.local_addr()?, "metrics listening");
    let metrics_task = tokio::spawn(metrics::serve(listener, metrics.clone()));

    let start = start_position(&cfg).await?;
    let (publisher, tracker) = Publisher::new(
        &cfg.kafka,
        cfg.checkpoint.path.clone(),
        Duration::from_millis(cfg.checkpoint.interval_ms),
        metrics.clone(),
    )?;
    publisher.warm_up(Duration::from_secs(5)).await?;
    let mut tracker_task = tokio::spawn(tracker.run());
    let source = Source::new(cfg.clone(), metrics.clone(), publisher, start)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stop requested: finishing in-flight records");
        let _ = stop_tx.send(true);
    });
    let source_run = source.run(stop_rx);
    tokio::pin!(source_run);
    let outcome = tokio::select! {
        (publisher, result) = &mut source_run => {
            publisher.flush(Duration::from_secs(30));
            drop(publisher);
            let tracked = tokio::time::timeout(Duration::from_secs(30), &mut tracker_task).await;
            match tracked {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e.into()),
                Ok(Err(join)) => return Err(join.into()),
                Err(_) => tracing::warn!("records still unacknowledged after 30 s; the checkpoint stays behind them"),
            }
            result.map_err(BoxError::from)
        }
        tracked = &mut tracker_task => match tracked {
            Ok(Err(e)) => Err(e.into()),
            Ok(Ok(())) => Err("the acknowledgement tracker stopped unexpectedly".into()),
            Err(join) => Err(join.into()),
        },
    };
    metrics_task.abort();
    outcome
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
