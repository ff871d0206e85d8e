//! The `cache-node` binary.
fn main() {
    eprintln!("cache-node: not built yet");
    std::process::exit(2);
}
