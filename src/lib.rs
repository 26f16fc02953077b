//! The composition root of sightflow: the only place that wires connectors (formats,
//! files, transports) to the dataflow and the dataflow to the query layer. The binary
//! (`src/main.rs`) is a thin CLI over these functions.

pub mod accounts;
pub mod backfill;
pub mod batch;
pub mod client;
pub mod demo;
pub mod kafka;
pub mod serve;
