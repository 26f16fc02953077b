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

/// A finite list of envelopes with logical times (batch mode and tests), handed out in
/// time order, [`VecSource::CHUNK`] at a time, each poll with the frontier of what is
/// left: the dataflow then finishes each time as it goes and lets its state go, rather
/// than holding every event and change of the whole input at once.
pub type VecSource = OrderedSource<std::vec::IntoIter<(u64, Envelope)>>;

/// Envelopes from an iterator that yields them in logical-time order (batch mode over a
/// generated or streamed input, which then never has to be held whole), handed out
/// [`OrderedSource::CHUNK`] at a time with the next envelope's time as the frontier.
/// An envelope whose time is below one already handed out stops the source with an
/// error naming both times: its frontier has passed it.
pub struct OrderedSource<I: Iterator<Item = (u64, Envelope)>> {
    items: std::iter::Peekable<I>,
    last: u64,
    done: bool,
}

impl OrderedSource<std::vec::IntoIter<(u64, Envelope)>> {
    /// A source of `items` in any order: they are sorted by logical time (a stable sort:
    /// envelopes of one time keep their order).
    pub fn new(mut items: Vec<(u64, Envelope)>) -> VecSource {
        items.sort_by_key(|(t, _)| *t);
        OrderedSource::ordered(items.into_iter())
    }
}

impl<I: Iterator<Item = (u64, Envelope)>> OrderedSource<I> {
    /// Envelopes handed out per poll.
    pub const CHUNK: usize = 65_536;

    /// A source of `items`, which must come in logical-time order.
    pub fn ordered(items: I) -> OrderedSource<I> {
        OrderedSource { items: items.peekable(), last: 0, done: false }
    }
}

impl<I: Iterator<Item = (u64, Envelope)> + Send> Source for OrderedSource<I> {
    fn poll(&mut self, out: &mut Vec<(u64, Envelope)>) -> Result<Progress, SourceError> {
        if self.done {
            return Ok(Progress::Done);
        }
        let before = out.len();
        for (t, e) in self.items.by_ref().take(Self::CHUNK) {
            if t < self.last {
                self.done = true;
                let reason = format!("an envelope at logical time {t} came after one at {}: out of order", self.last);
                return Err(SourceError { partition: None, offset: None, reason });
            }
            self.last = t;
            out.push((t, e));
        }
        let busy = out.len() > before;
        Ok(match self.items.peek() {
            // Nothing left has a time below the next envelope's.
            Some((next, _)) => Progress::At { frontier: *next, busy },
            None => {
                self.done = true;
                Progress::At { frontier: self.last, busy }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Envelopes come in time order, a chunk a poll, each poll with the time of the next
    /// one as its frontier; envelopes of one time keep their order.
    #[test]
    fn a_vec_source_hands_out_chunks_in_time_order() {
        let n = VecSource::CHUNK + 3;
        let items: Vec<(u64, Envelope)> = (0..n)
            .map(|i| {
                let t = (n - i) as u64 / 2; // descending, two envelopes per time
                (t, Envelope { seq: i as u64, ..Default::default() })
            })
            .collect();
        let mut s = VecSource::new(items);
        let mut out = Vec::new();
        let first = s.poll(&mut out).unwrap();
        assert_eq!(out.len(), VecSource::CHUNK);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0 || (w[0].0 == w[1].0 && w[0].1.seq < w[1].1.seq)));
        let Progress::At { frontier, busy: true } = first else { panic!("{first:?}") };
        assert!(out.iter().all(|(t, _)| *t <= frontier), "handed out before its frontier");
        let second = s.poll(&mut out).unwrap();
        assert_eq!(out.len(), n);
        assert!(out[VecSource::CHUNK..].iter().all(|(t, _)| *t >= frontier), "nothing below a frontier after it");
        assert!(matches!(second, Progress::At { busy: true, .. }));
        assert_eq!(s.poll(&mut out).unwrap(), Progress::Done);
        let mut empty = VecSource::new(Vec::new());
        assert_eq!(empty.poll(&mut out).unwrap(), Progress::At { frontier: 0, busy: false });
        assert_eq!(empty.poll(&mut out).unwrap(), Progress::Done);
    }

    /// An iterator's envelopes go out as they come; one that goes back in time stops the
    /// source with an error that names both times.
    #[test]
    fn an_ordered_source_refuses_to_go_back_in_time() {
        let at = |t: u64| (t, Envelope { ts: t as i64, ..Default::default() });
        let mut ok = OrderedSource::ordered([at(1), at(1), at(5)].into_iter());
        let mut out = Vec::new();
        assert_eq!(ok.poll(&mut out).unwrap(), Progress::At { frontier: 5, busy: true });
        assert_eq!(out.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [1, 1, 5]);
        assert_eq!(ok.poll(&mut out).unwrap(), Progress::Done);
        let mut bad = OrderedSource::ordered([at(3), at(2)].into_iter());
        let err = bad.poll(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("logical time 2 came after one at 3"), "{err}");
        assert_eq!(bad.poll(&mut Vec::new()).unwrap(), Progress::Done);
    }
}
