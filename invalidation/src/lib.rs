//! The invalidation record that squeal publishes to Kafka and every regional invalidator consumes.
//!
//! One definition shared by producer and consumers. It holds no I/O and depends on neither MySQL nor Kafka.
