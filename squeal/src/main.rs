//! squeal: tails a MySQL/MariaDB binlog and publishes cache invalidations to Kafka.
fn main() {
    eprintln!("squeal: not built yet");
    std::process::exit(2);
}
