//! Event time to logical time: ticks, lateness and the partition clock.
//!
//! The dataflow's logical time is event time in ms rounded up to a tick. A partition's
//! frontier is the largest event time seen minus the allowed lateness; events behind it
//! are late and are clamped to the frontier or dropped, as configured. The log stamps
//! every event with its logical time when it is appended, so re-reading the log gives the
//! same times.

/// Rounds an event time up to its tick: the logical time of an on-time event.
pub fn tick_ceil(ts: i64, tick: u64) -> u64 {
    let ts = ts.max(0) as u64;
    ts.div_ceil(tick) * tick
}

/// The smallest tick strictly greater than `ms`: the first logical time at which
/// "more than `ms`" holds.
pub fn tick_after(ms: i64, tick: u64) -> u64 {
    let ms = ms.max(0) as u64;
    (ms / tick + 1) * tick
}

/// What a partition's clock decided for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    /// On time: logical time is the event time rounded up to a tick.
    OnTime(u64),
    /// Late, kept at the frontier's logical time.
    Clamped(u64),
    /// Late and dropped (the `drop` policy).
    Dropped,
}

impl Stamp {
    /// The logical time the event gets, `None` when it is dropped.
    pub fn time(self) -> Option<u64> {
        match self {
            Stamp::OnTime(t) | Stamp::Clamped(t) => Some(t),
            Stamp::Dropped => None,
        }
    }
}

/// Event-time clock of one partition: assigns logical times and tracks the frontier
/// `max event time seen - allowed lateness` (rounded up to a tick). Idle partitions
/// follow the wall clock.
#[derive(Clone, Debug)]
pub struct Clock {
    /// Tick length (ms): logical times are multiples of it.
    pub tick: u64,
    /// Allowed lateness (ms) behind the largest event time seen.
    pub lateness: u64,
    /// Whether late events are clamped to the frontier (else dropped).
    pub clamp: bool,
    /// No logical time below this will be assigned again.
    frontier: u64,
}

impl Clock {
    /// A fresh clock with frontier 0.
    pub fn new(tick: u64, lateness: u64, clamp: bool) -> Clock {
        Clock { tick, lateness, clamp, frontier: 0 }
    }

    /// Restores a clock whose frontier was persisted.
    pub fn with_frontier(tick: u64, lateness: u64, clamp: bool, frontier: u64) -> Clock {
        Clock { tick, lateness, clamp, frontier }
    }

    /// The partition frontier: every future event gets a logical time `>=` this.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// Assigns the logical time of an event with event time `ts` and advances the
    /// frontier.
    pub fn stamp(&mut self, ts: i64) -> Stamp {
        self.stamp_capped(ts, i64::MAX)
    }

    /// Like [`Clock::stamp`] for an event that may be dated in the future: an event time
    /// past `cap` (the server clock plus the allowed skew) counts as `cap`, so it can
    /// neither move the frontier nor get a logical time past what the wall clock allows.
    /// The event keeps its own `ts`; only its effect on time is capped.
    pub fn stamp_capped(&mut self, ts: i64, cap: i64) -> Stamp {
        let ts = ts.min(cap);
        let t = tick_ceil(ts, self.tick);
        let stamp = if t >= self.frontier {
            Stamp::OnTime(t)
        } else if self.clamp {
            Stamp::Clamped(self.frontier)
        } else {
            Stamp::Dropped
        };
        self.observe(ts);
        stamp
    }

    /// Advances the frontier for an event time seen (without stamping anything).
    pub fn observe(&mut self, ts: i64) {
        let f = tick_ceil(ts.saturating_sub(self.lateness as i64), self.tick);
        self.frontier = self.frontier.max(f);
    }

    /// Advances the frontier to follow the wall clock (`now` ms) when the partition
    /// has been idle: as if an event at `now` had been seen.
    pub fn advance_idle(&mut self, now: i64) {
        self.observe(now);
    }

    /// Moves the frontier to at least `t` (a tick multiple).
    pub fn advance_to(&mut self, t: u64) {
        self.frontier = self.frontier.max(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_up() {
        assert_eq!(tick_ceil(1000, 100), 1000);
        assert_eq!(tick_ceil(1001, 100), 1100);
        assert_eq!(tick_after(1000, 100), 1100);
        assert_eq!(tick_after(1099, 100), 1100);
    }

    #[test]
    fn clock_clamps_late_events_to_the_frontier() {
        let mut c = Clock::new(100, 1000, true);
        assert_eq!(c.stamp(10_050), Stamp::OnTime(10_100));
        assert_eq!(c.frontier(), 9_100);
        // within lateness: on time
        assert_eq!(c.stamp(9_500), Stamp::OnTime(9_500));
        // beyond it: clamped
        assert_eq!(c.stamp(8_000), Stamp::Clamped(9_100));
        let mut d = Clock::new(100, 1000, false);
        d.stamp(10_050);
        assert_eq!(d.stamp(8_000), Stamp::Dropped);
        d.advance_idle(20_000);
        assert_eq!(d.frontier(), 19_000);
    }

    #[test]
    fn a_future_event_moves_time_only_as_far_as_the_cap() {
        let mut c = Clock::new(100, 1000, true);
        let now = 1_000_000;
        // A day ahead of the server clock: counted as the cap.
        assert_eq!(c.stamp_capped(now + 86_400_000, now + 60_000), Stamp::OnTime(now as u64 + 60_000));
        assert_eq!(c.frontier(), now as u64 + 59_000);
        // So the next present event is not late by a day, only by the skew.
        assert_eq!(c.stamp_capped(now + 59_500, now + 60_000), Stamp::OnTime(now as u64 + 59_500));
    }
}
