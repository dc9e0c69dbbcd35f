//! A provider's standing at a tracker: the outcome of each challenge, and the credit,
//! vetting and condemnation they add up to.

use wwt_net::NetError;

/// Prior uptime in the availability score, so one early miss does not zero a new provider.
const PRIOR_UPTIME_MS: f64 = 3_600_000.0;

/// A provider's audit record. Credit (per mille) = 1000 × reliability × availability, where
/// reliability = (p + 1) / (p + 1 + 8·f + 2·m + i) over the recent counts of passed (p),
/// failed (f), missed (m) and inconclusive (i) challenges, and availability =
/// (uptime + 1 h) / (uptime + downtime + 1 h).
///
/// Recent counts halve every [`crate::AuditConfig::credit_half_life_ms`]: a sliding window, so an
/// old failure stops counting. A provider with [`crate::AuditConfig::max_failures`] recent failures
/// is condemned: its pieces go to repair, it gets no pieces for
/// [`crate::AdmissionConfig::readmit_after_ms`], then starts its vetting again with a clean record.
/// It is vetted once it has passed [`crate::AdmissionConfig::vetting_audits`] challenges over at
/// least [`crate::AdmissionConfig::vetting_ms`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Credit {
    /// Challenges passed, ever.
    pub passed: u64,
    /// Wrong answers, ever.
    pub failed: u64,
    /// Challenges not answered by the deadline, ever.
    pub missed: u64,
    /// Challenges that proved nothing either way (auth, clock or internal errors), ever.
    pub inconclusive: u64,
    /// Recent passed, failed, missed and inconclusive counts (the credit window).
    pub recent: [f64; 4],
    /// When `recent` was last brought to date.
    pub recent_ms: u64,
    /// Audit-clock time between two answered challenges.
    pub uptime_ms: u64,
    /// Audit-clock time between two missed challenges.
    pub downtime_ms: u64,
    /// Piece bytes × seconds between two passed challenges of the same piece: storage proven.
    pub byte_seconds: u64,
    /// When its last challenge result came.
    pub last_result_ms: u64,
    /// Whether that result was an answer (right or wrong).
    pub last_answered: bool,
    /// When it was last condemned (0: never).
    pub condemned_ms: u64,
    /// Challenges passed in its vetting so far, and when the first of them was.
    pub trial: (u64, u64),
    /// When it was vetted (0: not vetted).
    pub vetted_ms: u64,
}

/// What [`Credit`] needs of the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreditRules {
    pub half_life_ms: u64,
    pub vetting_audits: u64,
    pub vetting_ms: u64,
    pub readmit_after_ms: u64,
}

impl Credit {
    /// Encoded length: 19 little-endian u64 (the recent counts as f64 bits).
    const LEN: usize = 19 * 8;
    /// The encoding before credit had a window and vetting: 9 u64.
    const LEGACY_LEN: usize = 9 * 8;

    /// Whether its pieces are written off and it waits to be admitted again, at `now`.
    pub(crate) fn written_off(&self, now: u64, rules: &CreditRules) -> bool {
        self.condemned_ms > 0 && now < self.condemned_ms.saturating_add(rules.readmit_after_ms)
    }

    /// The credit at `now`, per mille; 0 while written off.
    pub(crate) fn score(&self, now: u64, rules: &CreditRules) -> u32 {
        if self.written_off(now, rules) {
            return 0;
        }
        let [p, f, m, i] = self.decayed(now, rules).recent;
        let reliability = (p + 1.0) / (p + 1.0 + 8.0 * f + 2.0 * m + i);
        let availability = (self.uptime_ms as f64 + PRIOR_UPTIME_MS)
            / ((self.uptime_ms + self.downtime_ms) as f64 + PRIOR_UPTIME_MS);
        ((1000.0 * reliability * availability).round() as u32).clamp(1, 1000)
    }

    /// Recent failures at `now`: [`crate::AuditConfig::max_failures`] of them within about a
    /// half-life add up to more than `max_failures − 0.5`, which condemns.
    pub(crate) fn recent_failures(&self, now: u64, rules: &CreditRules) -> f64 {
        self.decayed(now, rules).recent[1]
    }

    /// This record with its recent counts brought to `now`.
    fn decayed(&self, now: u64, rules: &CreditRules) -> Credit {
        let mut c = *self;
        if now > c.recent_ms {
            let halves = (now - c.recent_ms) as f64 / rules.half_life_ms.max(1) as f64;
            let factor = 0.5f64.powf(halves);
            c.recent = c.recent.map(|v| v * factor);
            c.recent_ms = now;
        }
        c
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let [p, f, m, i] = self.recent.map(f64::to_bits);
        [
            self.passed,
            self.failed,
            self.missed,
            self.inconclusive,
            p,
            f,
            m,
            i,
            self.recent_ms,
            self.uptime_ms,
            self.downtime_ms,
            self.byte_seconds,
            self.last_result_ms,
            u64::from(self.last_answered),
            self.condemned_ms,
            self.trial.0,
            self.trial.1,
            self.vetted_ms,
            0,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Credit> {
        let f = |i: usize| {
            bytes[i * 8..i * 8 + 8]
                .try_into()
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        match bytes.len() {
            Self::LEN => Some(Credit {
                passed: f(0),
                failed: f(1),
                missed: f(2),
                inconclusive: f(3),
                recent: [f(4), f(5), f(6), f(7)].map(f64::from_bits),
                recent_ms: f(8),
                uptime_ms: f(9),
                downtime_ms: f(10),
                byte_seconds: f(11),
                last_result_ms: f(12),
                last_answered: f(13) != 0,
                condemned_ms: f(14),
                trial: (f(15), f(16)),
                vetted_ms: f(17),
            }),
            // Counts became recent as of the last result; a condemnation (for good, then)
            // starts its readmission wait at that result, with a clean record.
            Self::LEGACY_LEN => {
                let condemned = f(8) != 0;
                Some(Credit {
                    passed: f(0),
                    failed: f(1),
                    missed: f(2),
                    recent: if condemned {
                        [0.0; 4]
                    } else {
                        [f(0) as f64, f(1) as f64, f(2) as f64, 0.0]
                    },
                    recent_ms: f(6),
                    uptime_ms: f(3),
                    downtime_ms: f(4),
                    byte_seconds: f(5),
                    last_result_ms: f(6),
                    last_answered: f(7) != 0,
                    condemned_ms: if condemned { f(6).max(1) } else { 0 },
                    ..Credit::default()
                })
            }
            _ => None,
        }
    }

    /// Records a challenge result at `now`.
    pub(crate) fn record(&mut self, outcome: &Outcome, now: u64, rules: &CreditRules) {
        *self = self.decayed(now, rules);
        let since = now.saturating_sub(self.last_result_ms);
        let answered = !matches!(outcome, Outcome::Missed(_));
        if self.last_result_ms > 0 {
            match (self.last_answered, answered) {
                (true, true) => self.uptime_ms += since,
                (false, false) => self.downtime_ms += since,
                _ => {}
            }
        }
        let slot = match outcome {
            Outcome::Pass => {
                self.passed += 1;
                0
            }
            Outcome::Fail(_) => {
                self.failed += 1;
                1
            }
            Outcome::Missed(_) => {
                self.missed += 1;
                2
            }
            Outcome::Inconclusive(_) => {
                self.inconclusive += 1;
                3
            }
        };
        self.recent[slot] += 1.0;
        if *outcome == Outcome::Pass && self.vetted_ms == 0 && !self.written_off(now, rules) {
            let (passed, since) = self.trial;
            self.trial = (passed + 1, if passed == 0 { now } else { since });
            if self.trial.0 >= rules.vetting_audits
                && now.saturating_sub(self.trial.1) >= rules.vetting_ms
            {
                self.vetted_ms = now.max(1);
            }
        }
        self.last_result_ms = now;
        self.last_answered = answered;
    }

    /// Writes it off at `now`: a clean record, unvetted, admitted again after the wait.
    pub(crate) fn condemn(&mut self, now: u64) {
        self.recent = [0.0; 4];
        self.recent_ms = now;
        self.condemned_ms = now.max(1);
        self.trial = (0, 0);
        self.vetted_ms = 0;
    }
}

/// How a challenge went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Right answer in time.
    Pass,
    /// Wrong answer, bad proof, or the piece refused as unknown: lost at this holder.
    Fail(String),
    /// No answer by the deadline (down, unreachable, too slow).
    Missed(String),
    /// An answer that proves nothing either way: the provider refused the tracker's
    /// signature (a clock off, a provider restarted without this tracker in its list) or
    /// failed internally. It is no failure and weighs less than a miss in the credit; the
    /// piece is asked again soon, and moved if it stays unproven while other providers pass.
    Inconclusive(String),
}

impl Outcome {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Missed(_) => "missed",
            Outcome::Inconclusive(_) => "inconclusive",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            Outcome::Pass => String::new(),
            Outcome::Fail(why) | Outcome::Missed(why) | Outcome::Inconclusive(why) => why.clone(),
        }
    }

    /// The outcome of a provider's error answer.
    pub(crate) fn of_error(e: NetError) -> Outcome {
        match e {
            NetError::Unavailable(why) => Outcome::Missed(why),
            NetError::Unauthenticated(_)
            | NetError::Forbidden(_)
            | NetError::Internal(_)
            | NetError::NoCapacity(_)
            | NetError::Precondition(_) => Outcome::Inconclusive(e.to_string()),
            NetError::NotFound(_) | NetError::BadRequest(_) | NetError::Conflict(_) => {
                Outcome::Fail(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DAY: u64 = 24 * 3_600_000;

    fn rules() -> CreditRules {
        CreditRules {
            half_life_ms: 7 * DAY,
            vetting_audits: 10,
            vetting_ms: DAY,
            readmit_after_ms: 7 * DAY,
        }
    }

    #[test]
    fn credit_falls_with_failures_and_misses_and_round_trips() {
        let r = rules();
        let mut c = Credit::default();
        for t in 1..=10 {
            c.record(&Outcome::Pass, t * 1000, &r);
        }
        let good = c.score(20_000, &r);
        assert!(good > 990, "{good}");
        let mut missed = c;
        missed.record(&Outcome::Missed("down".into()), 20_000, &r);
        assert!(missed.score(20_000, &r) < good);
        let mut failed = c;
        failed.record(&Outcome::Fail("wrong".into()), 20_000, &r);
        assert!(failed.score(20_000, &r) < missed.score(20_000, &r));
        // An inconclusive answer costs less than a miss, and is not a failure.
        let mut unsure = c;
        unsure.record(&Outcome::Inconclusive("stale".into()), 20_000, &r);
        assert!(unsure.score(20_000, &r) > missed.score(20_000, &r));
        assert_eq!(unsure.recent_failures(20_000, &r), 0.0);
        assert_eq!(Credit::decode(&failed.encode()), Some(failed));
        failed.condemn(30_000);
        assert_eq!(failed.score(30_000, &r), 0);
    }

    #[test]
    fn old_failures_leave_the_window_and_a_condemned_provider_is_vetted_again() {
        let r = rules();
        let mut c = Credit::default();
        c.record(&Outcome::Fail("wrong".into()), DAY, &r);
        // Two failures a day apart count as two; the first, five half-lives later, as none.
        let mut soon = c;
        soon.record(&Outcome::Fail("wrong".into()), 2 * DAY, &r);
        assert!(soon.recent_failures(2 * DAY, &r) > 1.5);
        let mut late = c;
        late.record(&Outcome::Fail("wrong".into()), 36 * DAY, &r);
        assert!(late.recent_failures(36 * DAY, &r) < 1.1);
        // Vetting: ten passes, but not within a day of the first.
        let mut v = Credit::default();
        for i in 0..10 {
            v.record(&Outcome::Pass, DAY + i * 60_000, &r);
        }
        assert_eq!(v.vetted_ms, 0, "vetted in ten minutes");
        v.record(&Outcome::Pass, 2 * DAY + 1, &r);
        assert_eq!(v.vetted_ms, 2 * DAY + 1);
        // Condemned: no credit and no vetting for the wait; passes then do not count.
        v.condemn(3 * DAY);
        assert!(v.written_off(3 * DAY, &r));
        assert_eq!((v.score(5 * DAY, &r), v.vetted_ms), (0, 0));
        v.record(&Outcome::Pass, 5 * DAY, &r);
        assert_eq!(v.trial.0, 0);
        // After it, a clean record and a new vetting.
        let back = 10 * DAY;
        assert!(!v.written_off(back, &r));
        assert!(v.score(back, &r) > 900);
        for i in 0..11 {
            v.record(&Outcome::Pass, back + i * (DAY / 10) + 1, &r);
        }
        assert!(v.vetted_ms > back, "{v:?}");
    }

    #[test]
    fn a_provider_condemned_before_the_window_waits_then_is_vetted_again() {
        let r = rules();
        let mut legacy = Vec::new();
        // passed, failed, missed, uptime, downtime, byte-seconds, last result, answered,
        // condemned.
        for v in [1000u64, 2, 0, 0, 0, 0, 5 * DAY, 1, 1] {
            legacy.extend_from_slice(&v.to_le_bytes());
        }
        let c = Credit::decode(&legacy).unwrap();
        assert!(c.written_off(6 * DAY, &r));
        assert_eq!(c.score(6 * DAY, &r), 0);
        assert!(!c.written_off(13 * DAY, &r));
        assert_eq!(c.recent_failures(13 * DAY, &r), 0.0);
        assert_eq!(c.vetted_ms, 0);
    }
}
