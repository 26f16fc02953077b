//! SQL over the published views, and (for the server) the HTTP API.
//!
//! Every view of a [`sightflow_dataflows::Snapshot`] is registered as a DataFusion table;
//! [`sql::execute`] runs one read-only query against one snapshot, so all views it reads
//! are at the same `as_of`. [`format`](mod@format) renders results as JSON rows, CSV, text tables or
//! Arrow IPC.

#![warn(missing_docs, unreachable_pub)]

pub mod access;
pub mod assets;
pub mod bounds;
pub mod format;
pub mod http;
pub mod index;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod pg;
pub mod pool;
pub mod rest;
pub mod server;
pub mod sql;

pub use sql::{QueryError, QueryLimits, QueryResult, execute, execute_scoped};
