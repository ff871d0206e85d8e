//! Real-service harness: starts MariaDB and Kafka as local processes for end-to-end tests.
