//! The end-to-end tests of the `sightflow` binary, as one test binary (each links
//! DataFusion and librdkafka once):
//!
//! - `access`: who may read what: every endpoint against every kind of credential;
//! - `api`: the HTTP API through the router, backed by a real log, store and dataflow;
//! - `cli`: batch queries, bad input, config checks, backfill failures;
//! - `fixtures`: the real rrweb recordings against their ground truth;
//! - `rest`: the REST resources (sessions, timeline, heatmap, projects, members, tokens);
//! - `live`: the live feed over SSE (changes, progress, slow clients, tickets, resuming);
//! - `meta_pg`: the metadata store in a real PostgreSQL, shared by two servers;
//! - `pg`: the Postgres wire with the real psql, and Grafana's queries through a client library;
//! - `kafka`: `serve` and `backfill` against a real broker (tansu) on loopback;
//! - `slt`: the sqllogictest files of `tests/slt/` (SQL over live views fed as it goes);
//! - `server`: the real `serve` on a loopback port: imports, `kill -9`, hostile input, a
//!   full disk.

mod access;
mod api;
mod cli;
mod common;
mod fixtures;
mod kafka;
mod live;
mod meta_pg;
mod pg;
mod rest;
mod server;
mod slt;
