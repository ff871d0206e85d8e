//! Prints the invalidation records on a topic, one JSON line each (a debugging aid).
//!
//! `cargo run -p squeal --example tail_topic -- BROKERS TOPIC [SECONDS]` reads from the beginning and
//! stops after SECONDS (default 5) without a new record.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (args.get(1).ok_or("BROKERS")?, args.get(2).ok_or("TOPIC")?);
    let idle: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("tail-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    while let Ok(msg) = tokio::time::timeout(Duration::from_secs(idle), consumer.recv()).await {
        let msg = msg?;
        let record = invalidation::Record::from_json(msg.payload().unwrap_or_default())?;
        println!("{}", String::from_utf8(record.to_json())?);
    }
    Ok(())
}
