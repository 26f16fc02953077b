//! Uncaught JavaScript errors grouped by fingerprint: occurrences, distinct sessions,
//! first and last seen, and the first occurrence's message; and every occurrence with
//! its session, page and time (`error_events`: what a replay link needs).

use differential_dataflow::difference::{IsZero, Semigroup};

use crate::event::Kind;
use crate::registry::Emit;
use crate::row;
use crate::signals::sessions::{SessionId, SessionRow};
use crate::sym::Sym;

row! {
    /// Key of the errors view.
    ErrKey {
        project: Sym as project Str,
        fingerprint: u64 as fingerprint Hex,
    }
}

row! {
    /// One uncaught error: where and when it happened.
    ErrorEventRow {
        session: u64 as session_id Session,
        project: Sym as project Str,
        url: Sym as url Str,
        ts: i64 as ts Ts,
        fingerprint: u64 as fingerprint Hex,
        message: Sym as message Str,
    }
}

row! {
    /// A session in which an error occurred (made distinct for errors.sessions).
    ErrSession {
        /// The error's project.
        project: Sym,
        /// The error's fingerprint.
        fingerprint: u64,
        /// The session it occurred in.
        session: SessionId,
    }
}

row! {
    /// Errors aggregate. Errors are only ever added, so first/last seen combine by
    /// min/max.
    ErrAgg {
        /// Message of the first occurrence.
        first_message: Sym as message Str,
        occurrences: i64 as occurrences I64,
        sessions: i64 as sessions I64,
        first_ts: i64 as first_seen Ts,
        last_ts: i64 as last_seen Ts,
    }
}

impl ErrAgg {
    /// One occurrence at `ts`.
    pub fn occurrence(ts: i64, message: Sym) -> ErrAgg {
        ErrAgg { occurrences: 1, sessions: 0, first_ts: ts, first_message: message, last_ts: ts }
    }

    /// `n` more distinct sessions.
    pub fn sessions(n: i64) -> ErrAgg {
        ErrAgg { occurrences: 0, sessions: n, first_ts: i64::MAX, first_message: Sym::EMPTY, last_ts: i64::MIN }
    }
}

impl IsZero for ErrAgg {
    fn is_zero(&self) -> bool {
        self.occurrences == 0 && self.sessions == 0
    }
}

impl Semigroup for ErrAgg {
    fn plus_equals(&mut self, r: &Self) {
        self.occurrences += r.occurrences;
        self.sessions += r.sessions;
        if (r.first_ts, r.first_message) < (self.first_ts, self.first_message) {
            self.first_ts = r.first_ts;
            self.first_message = r.first_message;
        }
        self.last_ts = self.last_ts.max(r.last_ts);
    }
}

impl Default for ErrAgg {
    fn default() -> Self {
        ErrAgg::sessions(0)
    }
}

impl differential_dataflow::difference::Multiply<isize> for ErrAgg {
    type Output = ErrAgg;
    fn multiply(self, n: &isize) -> ErrAgg {
        ErrAgg { occurrences: self.occurrences * *n as i64, sessions: self.sessions * *n as i64, ..self }
    }
}

/// An uncaught error at `eff` on page `url` in `row`'s session.
pub fn on_error(row: &mut SessionRow, url: Sym, message: Sym, fingerprint: u64, eff: i64, out: &mut Emit) {
    row.errors += 1;
    let project = row.project;
    let event = ErrorEventRow { session: row.session, project, url, ts: eff, fingerprint, message };
    out.error_events.push((event, 1));
    out.err_occ.push((ErrKey { project, fingerprint }, ErrAgg::occurrence(eff, message)));
    out.err_sessions.push((ErrSession { project, fingerprint, session: row.session }, 1));
}

/// Reference: occurrences and sessions of one device's errors.
pub(crate) fn reference(
    tl: &crate::reference::Timeline,
    rows: &mut [SessionRow],
    v: &mut crate::Views,
    sessions: &mut std::collections::BTreeSet<ErrSession>,
) {
    for a in &tl.anns {
        let Kind::Error { message, fingerprint } = a.ev.kind else { continue };
        let r = &mut rows[a.session];
        r.errors += 1;
        let event = ErrorEventRow {
            session: r.session,
            project: tl.key.project,
            url: tl.url_of(a),
            ts: a.eff,
            fingerprint,
            message,
        };
        *v.error_events.entry(event).or_insert(0) += 1;
        let key = ErrKey { project: tl.key.project, fingerprint };
        crate::registry::accumulate(&mut v.errors, key, ErrAgg::occurrence(a.eff, message));
        sessions.insert(ErrSession { project: tl.key.project, fingerprint, session: r.session });
    }
}

/// Reference: distinct sessions per error.
pub(crate) fn reference_finish(sessions: &std::collections::BTreeSet<ErrSession>, v: &mut crate::Views) {
    for s in sessions {
        crate::registry::accumulate(
            &mut v.errors,
            ErrKey { project: s.project, fingerprint: s.fingerprint },
            ErrAgg::sessions(1),
        );
    }
}

impl crate::columns::Aggregate for ErrAgg {
    fn visible(&self) -> bool {
        self.occurrences > 0
    }
}

#[cfg(test)]
mod tests {
    use crate::signals::testing::check;

    #[test]
    fn errors_group_by_fingerprint() {
        check("0 pv /a; 100 error boom; 200 error boom; 300 error bang", |v| {
            let mut e: Vec<_> = v.errors.values().map(|a| (a.occurrences, a.sessions)).collect();
            e.sort();
            assert_eq!(e, [(1, 1), (2, 1)]);
        });
    }
}
