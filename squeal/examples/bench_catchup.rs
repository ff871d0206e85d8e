//! Catch-up benchmark: 1,000,000 row changes already in the binlog; squeal (release build) started
//! at their beginning; rows per second until Kafka acknowledged all of them (the checkpoint passed
//! the last one). Two shapes: one 1M-row transaction, and 1,000 transactions of 1,000 rows.
//!
//! ```text
//! cargo build --release -p squeal && cargo run --release -p squeal --example bench_catchup [RUNS]
//! ```
//! Time is measured from spawning squeal (so it includes its start-up checks) to the checkpoint.

#[path = "bench_common/mod.rs"]
mod bench_common;

use std::time::{Duration, Instant};

use bench_common::*;
use integration::{Stack, StackOptions};

const ROWS: u64 = 1_000_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    squeal_binary()?;
    let stack = Stack::start(StackOptions::default()).await?;
    let primary = stack.primary();
    primary.execute("CREATE DATABASE bench").await?;
    primary
        .execute("CREATE TABLE bench.one (id INT PRIMARY KEY, v INT, s VARCHAR(20))")
        .await?;
    primary
        .execute("CREATE TABLE bench.many (id INT PRIMARY KEY, v INT, s VARCHAR(20))")
        .await?;
    let status = |rows: Vec<Vec<Option<String>>>| -> (String, u64) {
        (
            rows[0][0].clone().unwrap(),
            rows[0][1].clone().unwrap().parse().unwrap(),
        )
    };

    primary.execute("FLUSH BINARY LOGS").await?;
    let one_start = status(primary.query("SHOW MASTER STATUS").await?);
    primary
        .execute(&format!(
            "INSERT INTO bench.one SELECT seq, seq, CONCAT('s', seq) FROM bench.seq_1_to_{ROWS}"
        ))
        .await?;
    let one_end = status(primary.query("SHOW MASTER STATUS").await?);

    primary.execute("FLUSH BINARY LOGS").await?;
    let many_start = status(primary.query("SHOW MASTER STATUS").await?);
    let mut conn = primary.connect().await?;
    {
        use mysql_async::prelude::Queryable;
        for k in 0..1000u64 {
            conn.query_drop(format!(
                "INSERT INTO bench.many SELECT seq, seq, CONCAT('s', seq) FROM bench.seq_{}_to_{}",
                k * 1000 + 1,
                (k + 1) * 1000
            ))
            .await?;
        }
    }
    let many_end = status(primary.query("SHOW MASTER STATUS").await?);

    println!(
        "catch-up of {ROWS} row changes, {runs} runs each (squeal release build, this machine)"
    );
    for (name, table, start, end) in [
        (
            "1 transaction x 1,000,000 rows",
            "bench.one",
            &one_start,
            &one_end,
        ),
        (
            "1,000 transactions x 1,000 rows",
            "bench.many",
            &many_start,
            &many_end,
        ),
    ] {
        let mut rates = Vec::new();
        let mut rss = Vec::new();
        for run in 0..runs {
            let dir = tempfile::tempdir()?;
            let checkpoint = dir.path().join("cp.json");
            squeal::checkpoint::save(
                &checkpoint,
                &squeal::checkpoint::Position::at(start.0.clone(), start.1),
            )?;
            let topic = format!("bench_{}_{run}", table.replace('.', "_"));
            stack.create_topic(&topic, 1).await?;
            let config = dir.path().join("squeal.toml");
            let rules = format!("[[rules]]\ntable = \"{table}\"\nkeys = [\"k:{{id}}\"]\n");
            write_config(
                &config,
                primary.port(),
                &stack.kafka().brokers(),
                &topic,
                &checkpoint,
                &rules,
                "current",
            )?;
            let log = dir.path().join("squeal.log");
            let begun = Instant::now();
            let mut child = spawn_squeal(&config, primary.password(), &log)?;
            let mut peak = 0;
            loop {
                peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
                if checkpoint_of(&checkpoint)
                    .is_some_and(|(f, p)| f > end.0 || (f == end.0 && p >= end.1))
                {
                    break;
                }
                if let Some(status) = child.try_wait()? {
                    return Err(format!("squeal exited ({status}); log {}", log.display()).into());
                }
                if begun.elapsed() > Duration::from_secs(600) {
                    return Err("no catch-up within 600 s".into());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let secs = begun.elapsed().as_secs_f64();
            peak = peak.max(peak_rss_kib(child.id()).unwrap_or(0));
            child.kill()?;
            child.wait()?;
            rates.push(ROWS as f64 / secs);
            rss.push(peak as f64 / 1024.0);
            println!(
                "  {name}: run {run}: {secs:.2} s, {:.0} rows/s, peak RSS {:.1} MiB",
                ROWS as f64 / secs,
                peak as f64 / 1024.0
            );
        }
        println!(
            "{name}: median {:.0} rows/s (target >= 150,000: {}), median peak RSS {:.1} MiB",
            median(rates.clone()),
            if median(rates) >= 150_000.0 {
                "met"
            } else {
                "NOT met"
            },
            median(rss)
        );
    }
    Ok(())
}
