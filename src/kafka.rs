//! The Kafka connector's options from the configuration (the readers and the source
//! are in `sightflow_connectors::kafka` and `sightflow_connectors::source`).

use std::time::Duration;

use sightflow_config::Config;
use sightflow_connectors::kafka::KafkaOptions;

/// The connector's options from the configuration.
pub fn kafka_options(config: &Config) -> KafkaOptions {
    let k = &config.kafka;
    KafkaOptions {
        brokers: k.brokers.clone(),
        topic: k.topic.clone(),
        produce_timeout: Duration::from_millis(k.produce_timeout_ms),
        queue_max_kbytes: k.queue_max_kbytes,
        idempotence: k.idempotence,
        client: k.client.clone(),
        tick_ms: config.engine.tick_ms,
        lateness_ms: config.engine.allowed_lateness_ms,
        clamp_late: config.engine.late_policy == sightflow_config::LatePolicy::Clamp,
        idle_timeout_ms: config.engine.idle_timeout_ms,
        max_skew_ms: config.engine.clock_skew_ms(),
    }
}
