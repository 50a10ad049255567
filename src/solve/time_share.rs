//! Each problem's share of the time: the time left divided by the problems left (so time a
//! problem does not use flows forward), clamped by `--problem-time MIN..MAX` as the AIMO 3
//! winners did (300 s..900 s of a 5 h budget): no problem starves, none eats the budget.

use anyhow::{bail, Result};
use std::time::Duration;

use super::duration::parse_duration;

/// `--problem-time MIN..MAX`; either side may be left open (`300s..`, `..15m`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProblemTime {
    pub min: Option<Duration>,
    pub max: Option<Duration>,
}

impl std::str::FromStr for ProblemTime {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let Some((a, b)) = s.split_once("..") else {
            bail!("{s:?}: expected MIN..MAX, e.g. 300s..900s (either side may be left out)");
        };
        let side = |v: &str| -> Result<Option<Duration>> {
            match v.trim() {
                "" => Ok(None),
                v => parse_duration(v)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("{s:?}: {e}")),
            }
        };
        let t = ProblemTime {
            min: side(a)?,
            max: side(b.trim_start_matches('='))?,
        };
        if let (Some(min), Some(max)) = (t.min, t.max) {
            if min > max {
                bail!("{s:?}: MIN is above MAX");
            }
        }
        Ok(t)
    }
}

impl std::fmt::Display for ProblemTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side =
            |d: Option<Duration>| d.map_or(String::new(), |d| format!("{}s", d.as_secs_f64()));
        write!(f, "{}..{}", side(self.min), side(self.max))
    }
}

impl ProblemTime {
    /// The time one problem may use: `left` (None without a budget) shared evenly over
    /// `problems` (this one and those after it), clamped to MIN..MAX, never beyond `left`.
    /// None: no limit at all.
    pub fn share(&self, left: Option<Duration>, problems: usize) -> Option<Duration> {
        let Some(left) = left else {
            return self.max;
        };
        let mut share = left / problems.max(1) as u32;
        if let Some(max) = self.max {
            share = share.min(max);
        }
        if let Some(min) = self.min {
            share = share.max(min);
        }
        Some(share.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_both_sides_and_open_ends() {
        let t: ProblemTime = "300s..900s".parse().unwrap();
        assert_eq!((t.min, t.max), (Some(secs(300)), Some(secs(900))));
        let t: ProblemTime = "5m..".parse().unwrap();
        assert_eq!((t.min, t.max), (Some(secs(300)), None));
        assert_eq!("..15m".parse::<ProblemTime>().unwrap().max, Some(secs(900)));
        for bad in ["300s", "900s..300s", "a..b", "-1..5"] {
            assert!(bad.parse::<ProblemTime>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(t.to_string(), "300s..");
    }

    #[test]
    fn the_share_is_clamped_and_never_beyond_the_time_left() {
        let t: ProblemTime = "300s..900s".parse().unwrap();
        // 5 h over 50 problems = 360 s: inside the clamp.
        assert_eq!(t.share(Some(secs(18000)), 50), Some(secs(360)));
        // Banked time: 3 h for 5 problems would be 2160 s each; at most 900.
        assert_eq!(t.share(Some(secs(10800)), 5), Some(secs(900)));
        // Little left for many: at least 300 s, but never more than what is left.
        assert_eq!(t.share(Some(secs(1000)), 10), Some(secs(300)));
        assert_eq!(t.share(Some(secs(100)), 10), Some(secs(100)));
        assert_eq!(t.share(None, 10), Some(secs(900)));
        assert_eq!(ProblemTime::default().share(None, 3), None);
        assert_eq!(
            ProblemTime::default().share(Some(secs(90)), 3),
            Some(secs(30))
        );
    }
}
