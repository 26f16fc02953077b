//! Everything that knows a wire or file format: the rrweb decoder (with its per-tab node
//! map), the JSON event format, validation, and readers for recordings and event files.
//! Transport is kept apart from format: readers and decoders take text. The embedded
//! event log ([`log`]), the replay store ([`replay`]), Kafka ([`kafka`]) and the metadata
//! store of projects, accounts and tokens ([`meta`]) are here too.
//!
//! ```
//! use sightflow_connectors::{files, rrweb::Decoders, validate::Limits};
//!
//! let rec = r#"[{"type": 4, "timestamp": 1795342038402, "data": {"href": "http://x.test/", "width": 800, "height": 600}},
//!              {"type": 3, "timestamp": 1795342038500, "data": {"source": 3, "id": 1, "x": 0, "y": 100}},
//!              {"type": 3, "timestamp": 17, "data": {"source": 3}}]"#;
//! let import = files::read_rrweb(rec, "demo", "d1", "", &Limits::any_age(1_800_000_000_000), &Decoders::default(), None).unwrap();
//! assert_eq!(import.envelopes.len(), 2);
//! assert_eq!(import.rejected[0].index, 2); // timestamp 17 is before the year 2000
//! ```

#![warn(missing_docs, unreachable_pub)]

pub mod files;
pub mod ingest;
pub mod json;
pub mod kafka;
pub mod log;
pub mod meta;
pub mod replay;
pub mod rrweb;
pub mod source;
pub mod validate;

#[cfg(test)]
mod fuzz;
