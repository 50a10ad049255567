//! Pulling the final integer answer out of a model's completion.
//!
//! The answer is the content of the last `\boxed{...}` (braces matched, so `\boxed{\text{12}}`
//! works), preferring boxes after the reasoning block (`</think>`) when there are any. The
//! content is normalised (`$`, spaces, `\,`, `\!`, `\text{}`, `\mathrm{}`, thousands separators,
//! leading zeros, a trailing `.0`) and must then be a plain non-negative integer in range;
//! fractions, decimals, negatives and expressions are rejected with a reason.

use std::ops::RangeInclusive;

/// Why a completion gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    NoBox,
    NotAnInteger(String),
    OutOfRange(u64),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::NoBox => write!(f, "no \\boxed{{}} answer"),
            Rejected::NotAnInteger(s) => write!(f, "boxed answer {s:?} is not an integer"),
            Rejected::OutOfRange(v) => write!(f, "boxed answer {v} is out of range"),
        }
    }
}

/// Contents of every `\boxed{...}` / `\fbox{...}` in `text`, in order, braces matched.
pub fn boxed_contents(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let tag = ["\\boxed", "\\fbox"].iter().find(|t| rest.starts_with(**t));
        let Some(tag) = tag else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let mut j = i + tag.len();
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if j < bytes.len() && bytes[j] == b'{' {
            let mut depth = 0usize;
            let start = j + 1;
            let mut end = None;
            for (k, c) in text[j..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j + k);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            match end {
                Some(e) => {
                    out.push(text[start..e].to_string());
                    i = e + 1;
                }
                None => break, // unbalanced: a truncated completion
            }
        } else {
            // `\boxed 5` without braces: the next token.
            let token: String = text[j..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if !token.is_empty() {
                out.push(token.clone());
            }
            i = j + token.len().max(1);
        }
    }
    out
}

/// The final answer of a completion, or why there is none.
pub fn extract_answer(text: &str, range: &RangeInclusive<u64>) -> Result<u64, Rejected> {
    // Prefer what follows the reasoning block: boxes inside it are drafts.
    let after_think = text
        .rfind("</think>")
        .map(|p| &text[p + "</think>".len()..]);
    let boxes = match after_think.map(boxed_contents) {
        Some(b) if !b.is_empty() => b,
        _ => boxed_contents(text),
    };
    let last = boxes.last().ok_or(Rejected::NoBox)?;
    let value = parse_integer(last).ok_or_else(|| Rejected::NotAnInteger(last.clone()))?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Rejected::OutOfRange(value))
    }
}

/// A boxed string as a non-negative integer, after removing LaTeX noise.
pub fn parse_integer(raw: &str) -> Option<u64> {
    let mut s = raw.to_string();
    // Unwrap \text{..}, \textbf{..}, \mathrm{..}, \mathbf{..} (keep their content).
    for wrapper in [
        "\\text",
        "\\textbf",
        "\\mathrm",
        "\\mathbf",
        "\\displaystyle",
    ] {
        while let Some(p) = s.find(&format!("{wrapper}{{")) {
            let open = p + wrapper.len();
            let inner = boxed_contents(&format!("\\boxed{}", &s[open..]));
            let Some(inner) = inner.first() else { break };
            let end = open + inner.len() + 2;
            s = format!("{}{}{}", &s[..p], inner, &s[end.min(s.len())..]);
        }
    }
    for noise in [
        "\\displaystyle",
        "\\!",
        "\\,",
        "\\;",
        "\\ ",
        "{,}",
        "$",
        "^\\circ",
        "^{\\circ}",
        "\\%",
        "%",
    ] {
        s = s.replace(noise, "");
    }
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.trim_matches(|c| c == '{' || c == '}');
    let s = s.strip_suffix(".0").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    // Thousands separators: 1,200 or 10,000,000 (groups of three only).
    let digits = if s.contains(',') {
        let groups: Vec<&str> = s.split(',').collect();
        let ok = !groups[0].is_empty()
            && groups[0].len() <= 3
            && groups[1..].iter().all(|g| g.len() == 3);
        if !ok {
            return None;
        }
        groups.concat()
    } else {
        s.to_string()
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || digits.len() > 18 {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANGE: RangeInclusive<u64> = 0..=99_999;

    #[test]
    fn real_model_style_outputs() {
        let cases: &[(&str, Result<u64, Rejected>)] = &[
            ("The answer is $\\boxed{42}$.", Ok(42)),
            (
                "<think>Maybe \\boxed{7}? No, recheck: 8.</think>\nSo the answer is \\boxed{8}.",
                Ok(8),
            ),
            (
                "<think>I get \\boxed{12}</think> Final: 12 (no box after thinking)",
                Ok(12),
            ),
            ("First \\boxed{3}, then corrected \\boxed{5}", Ok(5)),
            ("\\boxed{\\text{12}}", Ok(12)),
            ("\\boxed{\\textbf{204}}", Ok(204)),
            ("\\boxed{1,200}", Ok(1200)),
            ("\\boxed{10{,}000}", Ok(10000)),
            ("\\boxed{14,\\!400}", Ok(14400)),
            ("\\boxed{ 007 }", Ok(7)),
            ("\\boxed{25.0}", Ok(25)),
            ("$\\boxed{90^\\circ}$", Ok(90)),
            ("\\boxed 5", Ok(5)),
            ("\\fbox{17}", Ok(17)),
            ("\\boxed{{33}}", Ok(33)),
            (
                "\\boxed{\\dfrac{1}{2}}",
                Err(Rejected::NotAnInteger("\\dfrac{1}{2}".into())),
            ),
            (
                "\\boxed{\\frac{3}{4}}",
                Err(Rejected::NotAnInteger("\\frac{3}{4}".into())),
            ),
            ("\\boxed{-4}", Err(Rejected::NotAnInteger("-4".into()))),
            ("\\boxed{2.5}", Err(Rejected::NotAnInteger("2.5".into()))),
            ("\\boxed{x+1}", Err(Rejected::NotAnInteger("x+1".into()))),
            ("\\boxed{1,20}", Err(Rejected::NotAnInteger("1,20".into()))),
            ("\\boxed{123456}", Err(Rejected::OutOfRange(123456))),
            ("I think it is 42.", Err(Rejected::NoBox)),
            ("Truncated output \\boxed{4", Err(Rejected::NoBox)),
            ("", Err(Rejected::NoBox)),
        ];
        for (text, want) in cases {
            assert_eq!(&extract_answer(text, &RANGE), want, "{text:?}");
        }
    }

    #[test]
    fn nested_braces_and_unicode_do_not_confuse_the_scanner() {
        let t = "Let’s see: \\boxed{\\text{answer: }{\\bf 9}} – no, \\boxed{\\mathrm{99}}";
        assert_eq!(
            boxed_contents(t),
            vec!["\\text{answer: }{\\bf 9}", "\\mathrm{99}"]
        );
        assert_eq!(extract_answer(t, &RANGE), Ok(99));
    }

    #[test]
    fn custom_range() {
        assert_eq!(
            extract_answer("\\boxed{1000}", &(0..=999)),
            Err(Rejected::OutOfRange(1000))
        );
    }
}
