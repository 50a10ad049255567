//! Durations on the command line: `5h`, `90m`, `45s`, `1h30m` or plain seconds.

use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Longest duration accepted: anything longer is a typo, not a plan.
const MAX_DURATION_SECS: f64 = 30.0 * 24.0 * 3600.0;

/// Parse `5h`, `90m`, `45s`, `1h30m` or plain seconds. Negative, NaN, infinite and absurdly
/// long (over 30 days) values are refused with the reason, never a panic.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s.is_empty() {
        bail!("duration is empty: give seconds, or 5h, 90m, 45s");
    }
    let total = match s.parse::<f64>() {
        Ok(secs) => secs,
        Err(_) => sum_units(s)?,
    };
    if total.is_nan() || total < 0.0 {
        bail!("duration {s:?}: must be a non-negative number of seconds (or 5h, 90m, 45s)");
    }
    if total > MAX_DURATION_SECS {
        bail!("duration {s:?}: longer than 30 days; give h, m or s (e.g. 5h)");
    }
    Ok(Duration::from_secs_f64(total))
}

fn sum_units(s: &str) -> Result<f64> {
    let mut total = 0f64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => bail!("duration {s:?}: unknown unit {c:?} (use h, m, s)"),
        };
        let v: f64 = num
            .parse()
            .with_context(|| format!("duration {s:?}: missing number before {c:?}"))?;
        total += v * unit;
        num.clear();
    }
    if !num.is_empty() {
        bail!("duration {s:?}: trailing number without unit");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5h").unwrap(), Duration::from_secs(18000));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        for bad in [
            "-1", "NaN", "inf", "-inf", "1e300", "99999h", "", "h", "5h-",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
