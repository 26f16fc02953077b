//! Builds the configured views, runs them on timely workers, and publishes consistent
//! Arrow snapshots.
//!
//! Data enters through a [`run::Source`] per worker (envelopes with logical times and a
//! frontier; the source never exposes Kafka or file types), is converted once into
//! compact events ([`convert`]), flows through the views of
//! `sightflow_operators::views`, and leaves as [`publish::Snapshot`]s: every view as a
//! list of Arrow record batches kept up to date incrementally ([`segments`], with each
//! view's columns from [`schema`]), all at one `as_of`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use sightflow_dataflows::run::{start, RunOptions, VecSource};
//! use sightflow_operators::Params;
//!
//! let params = Arc::new(Params::from_config(&sightflow_config::Config::defaults()));
//! let running = start(
//!     RunOptions { workers: 1, params, on_publish: None, idle_park: std::time::Duration::from_millis(5), final_only: true },
//!     |_, _| Box::new(VecSource::new(Vec::new())),
//! )
//! .unwrap();
//! let snapshots = running.snapshots.clone();
//! running.join().unwrap();
//! assert!(snapshots.latest().complete);
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod convert;
pub mod logging;
pub mod publish;
pub mod retention;
pub mod run;
pub mod schema;
pub mod segments;

pub use publish::{Snapshot, Snapshots};
pub use run::{Empty, OrderedSource, Progress, RunError, RunOptions, Running, Source, SourceError, VecSource, start};
pub use schema::{Tables, table_names};
pub use sightflow_operators::{Update, ViewId};
