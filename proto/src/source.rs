//! The input of the dataflow, as every event log reads it: envelopes with their logical
//! times, a frontier, and a way to fail.
//!
//! Defined here, beside the envelopes it carries, so that the readers of the embedded
//! log and of Kafka (in `sightflow-connectors`) implement it themselves and the dataflow
//! (`sightflow-dataflows`) takes any of them without knowing either.

use crate::v1::Envelope;

/// What a source reports after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// No envelope with a logical time below `frontier` will come any more; `busy` says
    /// whether the poll produced anything (idle sources let the worker park).
    At {
        /// The logical time every envelope still to come is at or after.
        frontier: u64,
        /// Whether this poll appended anything to `out`.
        busy: bool,
    },
    /// The source is exhausted.
    Done,
}

/// Why a source cannot go on: the dataflow stops, and whoever runs it reports this.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", where_of(*.partition, *.offset))]
pub struct SourceError {
    /// The partition the read failed on, when the source has partitions.
    pub partition: Option<u32>,
    /// The offset within that partition the read failed at, when known.
    pub offset: Option<u64>,
    /// What went wrong, for the operator's log.
    pub reason: String,
}

fn where_of(partition: Option<u32>, offset: Option<u64>) -> String {
    match (partition, offset) {
        (Some(p), Some(o)) => format!("partition {p} at offset {o}: "),
        (Some(p), None) => format!("partition {p}: "),
        _ => String::new(),
    }
}

/// An input of the dataflow: envelopes with their logical times, and a frontier.
/// Sources are built per worker; each owns a disjoint share of the input.
pub trait Source: Send {
    /// Appends ready envelopes and their logical times to `out`.
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError>;
}

/// A finite list of envelopes with logical times (batch mode and tests).
pub struct VecSource {
    items: Option<Vec<(u64, Envelope)>>,
}

impl VecSource {
    /// A source that hands out all of `items` at the first poll, then is done.
    pub fn new(items: Vec<(u64, Envelope)>) -> VecSource {
        VecSource { items: Some(items) }
    }
}

impl Source for VecSource {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        Ok(match self.items.take() {
            Some(items) => {
                out.extend(items);
                Progress::At { frontier: 0, busy: true }
            }
            None => Progress::Done,
        })
    }
}

/// A source with nothing to read (a worker given no partitions).
pub struct Empty;

impl Source for Empty {
    fn poll(&mut self, _out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        Ok(Progress::Done)
    }
}
