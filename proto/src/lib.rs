//! The wire and log schema of sightflow, as prost types.
//!
//! `proto/sightflow/v1/events.proto` is the source of truth: an [`v1::Envelope`] is one
//! analytic event of one browser tab (page view, click, scroll, mouse-move batch, input,
//! resize, DOM mutation, JS error, page exit, custom event, or an opaque raw rrweb
//! event), and a [`v1::Batch`] is what one ingest request or log record carries. The
//! ingest layer (`sightflow-connectors`) produces envelopes; the event log stores them
//! encoded with [`prost::Message`]; the dataflow reads them back.
//!
//! ```
//! use prost::Message;
//! use sightflow_proto::v1::{envelope::Kind, Click, Envelope};
//!
//! let e = Envelope {
//!     project: "demo".into(),
//!     device_id: "d1".into(),
//!     ts: 1_700_000_000_000,
//!     kind: Some(Kind::Click(Click { x: 10, y: 20, ..Default::default() })),
//!     ..Default::default()
//! };
//! let bytes = e.encode_to_vec();
//! assert_eq!(Envelope::decode(bytes.as_slice()).unwrap(), e);
//! ```

pub mod source;

/// Version 1 of the schema (`package sightflow.v1`).
pub mod v1 {
    #![allow(missing_docs, clippy::all, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/sightflow.v1.rs"));
}
