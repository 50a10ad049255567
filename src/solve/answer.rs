//! Pulling the final integer answer out of a model's completion.
//!
//! The answer is the content of the last `\boxed{...}` (braces matched, so `\boxed{\text{12}}`
//! works), preferring boxes after the reasoning block (`</think>`) when there are any. The
//! content is normalised (`$`, spaces, `\,`, `\!`, `\text{}`, `\mathrm{}`, thousands separators,
//! leading zeros, a trailing `.0`) and must then be a plain non-negative integer in range;
//! fractions, decimals, negatives and expressions are rejected with a reason.
//!
//! Completions are untrusted and can be megabytes long, so nothing here may panic or take more
//! than linear time on any input. The scanner works on bytes: every byte it looks for (`\`, `{`,
//! `}`, ASCII whitespace and letters) is ASCII, and in UTF-8 an ASCII byte never occurs inside a
//! multi-byte character, so every position it slices at is a character boundary.

use std::ops::RangeInclusive;

/// Commands whose argument is an answer box.
const BOX_TAGS: [&str; 2] = ["\\boxed", "\\fbox"];

/// Marks the end of the reasoning block; boxes before it are drafts.
const THINK_END: &str = "</think>";

/// Longest box content (in chars, after trimming) worth parsing: an integer answer is short, and
/// the cap keeps parsing and the recorded rejection small whatever the model wrote.
const MAX_ANSWER_CHARS: usize = 200;

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
    Boxes::new(text).map(str::to_string).collect()
}

/// The final answer of a completion, or why there is none.
pub fn extract_answer(text: &str, range: &RangeInclusive<u64>) -> Result<u64, Rejected> {
    let last = last_box(text).ok_or(Rejected::NoBox)?;
    let value = parse_integer(last).ok_or_else(|| Rejected::NotAnInteger(recorded(last)))?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Rejected::OutOfRange(value))
    }
}

/// A boxed string as a non-negative integer, after removing LaTeX noise.
pub fn parse_integer(raw: &str) -> Option<u64> {
    if is_too_long(raw) {
        return None;
    }
    let s = unwrap_commands(trim_for_parse(raw).to_string());
    let s = remove_noise(s);
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.trim_matches(|c| c == '{' || c == '}');
    let s = s.strip_suffix(".0").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    let digits = strip_thousands_separators(s)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || digits.len() > 18 {
        return None;
    }
    digits.parse().ok()
}

/// The box holding the answer: the last one after `</think>`, else the last one anywhere.
fn last_box(text: &str) -> Option<&str> {
    let after_think = text
        .rfind(THINK_END)
        .and_then(|p| text.get(p + THINK_END.len()..));
    after_think
        .and_then(|t| Boxes::new(t).last())
        .or_else(|| Boxes::new(text).last())
}

/// Iterator over box contents, borrowed from the text. One left-to-right pass in all: a matched
/// box resumes the scan after its closing brace, and an unbalanced one ends it.
struct Boxes<'a> {
    text: &'a str,
    /// Byte offset where the scan resumes; always a char boundary.
    pos: usize,
}

impl<'a> Boxes<'a> {
    fn new(text: &'a str) -> Self {
        Boxes { text, pos: 0 }
    }
}

impl<'a> Iterator for Boxes<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        loop {
            let at = self.pos + find_byte(bytes.get(self.pos..)?, b'\\')?;
            let Some(tag) = BOX_TAGS
                .iter()
                .find(|t| bytes[at..].starts_with(t.as_bytes()))
            else {
                self.pos = at + 1;
                continue;
            };
            let arg = skip_ascii_whitespace(bytes, at + tag.len());
            if bytes.get(arg) == Some(&b'{') {
                let Some(close) = closing_brace(bytes, arg + 1) else {
                    // Unbalanced: a truncated completion, and every later box is inside it.
                    self.pos = bytes.len();
                    return None;
                };
                self.pos = close + 1;
                return self.text.get(arg + 1..close);
            }
            // `\boxed 5` without braces: the argument is the next alphanumeric token, if any
            // (`\boxed ∞` has none and is skipped).
            let end = arg
                + bytes[arg..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric())
                    .count();
            self.pos = end;
            if end > arg {
                return self.text.get(arg..end);
            }
        }
    }
}

/// Offset of the first `needle` in `haystack`.
fn find_byte(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// First offset at or after `from` that is not ASCII whitespace (LaTeX allows
/// `\boxed \n {42}`); `bytes.len()` if there is none.
fn skip_ascii_whitespace(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    from + rest.iter().take_while(|b| b.is_ascii_whitespace()).count()
}

/// Offset of the `}` closing a group whose `{` is just before `from`, or `None` if the text ends
/// first. Iterative, so 5,000-deep nesting is as cheap as none.
fn closing_brace(bytes: &[u8], from: usize) -> Option<usize> {
    // Starts at 1 for the opening brace and is never decremented past 0: we return at 0.
    let mut depth = 1usize;
    for (k, &b) in bytes.get(from..)?.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(from + k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `raw` is beyond [`MAX_ANSWER_CHARS`] once trimmed, counting no further than needed.
fn is_too_long(raw: &str) -> bool {
    raw.trim().chars().nth(MAX_ANSWER_CHARS).is_some()
}

/// The string recorded in [`Rejected::NotAnInteger`]: the box content as written, clipped (and
/// marked with `…`) when it is too long to be an answer.
fn recorded(raw: &str) -> String {
    if raw.chars().nth(MAX_ANSWER_CHARS).is_none() {
        return raw.to_string();
    }
    let trimmed = raw.trim();
    let mut clipped: String = trimmed.chars().take(MAX_ANSWER_CHARS).collect();
    if clipped.len() < trimmed.len() {
        clipped.push('…');
    }
    clipped
}

/// `raw` without surrounding whitespace, except its first trailing whitespace char: all
/// whitespace is dropped later anyway, but `\ ` is noise, so a trailing backslash must keep the
/// space after it to parse as before. Bounds the work on content padded with megabytes of it.
fn trim_for_parse(raw: &str) -> &str {
    let s = raw.trim_start();
    let body = s.trim_end().len();
    let keep = s[body..].chars().next().map_or(0, char::len_utf8);
    &s[..body + keep]
}

/// Replaces `\text{..}`, `\textbf{..}`, `\mathrm{..}`, `\mathbf{..}` and `\displaystyle{..}` by
/// their content (braces matched). Only called on short strings (see [`MAX_ANSWER_CHARS`]), and
/// each round removes a command, so the loop is bounded.
fn unwrap_commands(mut s: String) -> String {
    for command in [
        "\\text",
        "\\textbf",
        "\\mathrm",
        "\\mathbf",
        "\\displaystyle",
    ] {
        let open = format!("{command}{{");
        while let Some(p) = s.find(&open) {
            let from = p + open.len();
            let Some(close) = closing_brace(s.as_bytes(), from) else {
                break;
            };
            // Both ranges are ASCII (`\command{` and `}`), so on char boundaries.
            s.replace_range(close..=close, "");
            s.replace_range(p..from, "");
        }
    }
    s
}

/// Drops LaTeX spacing, math delimiters, degree and percent signs.
fn remove_noise(mut s: String) -> String {
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
        if s.contains(noise) {
            s = s.replace(noise, "");
        }
    }
    s
}

/// `1,200` or `10,000,000` without commas (groups of three only); `None` for other comma use.
fn strip_thousands_separators(s: &str) -> Option<String> {
    if !s.contains(',') {
        return Some(s.to_string());
    }
    let mut groups = s.split(',');
    let first = groups.next().unwrap_or_default();
    let ok = !first.is_empty() && first.len() <= 3 && groups.all(|g| g.len() == 3);
    ok.then(|| s.replace(',', ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn awkward_but_small_inputs() {
        let cases: &[(&str, Result<u64, Rejected>)] = &[
            // A non-ASCII char right after `\boxed` used to slice inside it and panic.
            ("\\boxed ∞", Err(Rejected::NoBox)),
            ("\\boxed∞", Err(Rejected::NoBox)),
            ("\\boxed{5} and then \\boxed ∞", Ok(5)),
            ("\\boxed 😀 \\boxed{3}", Ok(3)),
            ("\\boxed é", Err(Rejected::NoBox)),
            ("\\boxed", Err(Rejected::NoBox)),
            ("\\fbox", Err(Rejected::NoBox)),
            ("\\boxed   ", Err(Rejected::NoBox)),
            ("\\", Err(Rejected::NoBox)),
            ("\\boxed{}", Err(Rejected::NotAnInteger(String::new()))),
            ("\\boxed{ }", Err(Rejected::NotAnInteger(" ".into()))),
            ("\\boxed{5} \\boxed{", Ok(5)),
            ("}}}\\boxed{5}}}}", Ok(5)),
            ("\\boxed{\\text{\\text{\\mathrm{7}}}}", Ok(7)),
            ("\\boxed{\\text{7}", Err(Rejected::NoBox)),
            ("\\boxed{\\text{7}\\text{}", Err(Rejected::NoBox)),
            ("\\boxed{5\\ }", Ok(5)),
            // Whitespace of any kind may separate `\boxed` from its argument, as in LaTeX.
            ("\\boxed\n{42}", Ok(42)),
            ("\\boxed \t\r\n {42}", Ok(42)),
            ("\\boxed\t7", Ok(7)),
            // CRLF line ends.
            ("So:\r\n\\boxed{\r\n42\r\n}\r\n", Ok(42)),
            ("<think>\r\n\\boxed{1}\r\n</think>\r\n\\boxed{2}\r\n", Ok(2)),
            // NUL bytes around (and inside) a box.
            ("\0\0\\boxed{42}\0", Ok(42)),
            (
                "\0</think>\0\\boxed{\0}",
                Err(Rejected::NotAnInteger("\0".into())),
            ),
            // `</think>` inside a box: the box still counts, as a whole.
            (
                "\\boxed{</think>5}",
                Err(Rejected::NotAnInteger("</think>5".into())),
            ),
            ("</think>", Err(Rejected::NoBox)),
            ("\\boxed{7}</think>", Ok(7)),
        ];
        for (text, want) in cases {
            assert_eq!(&extract_answer(text, &RANGE), want, "{text:?}");
        }
        assert_eq!(boxed_contents("\\boxed ∞ \\fbox é"), Vec::<String>::new());
        assert_eq!(
            boxed_contents("\\boxed{a}\\boxed b\\fbox{c}"),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn deep_braces() {
        let depth = 5_000;
        let nested = format!("\\boxed{{{}7{}}}", "{".repeat(depth), "}".repeat(depth));
        let got = extract_answer(&nested, &RANGE);
        assert!(
            matches!(&got, Err(Rejected::NotAnInteger(s)) if s.chars().count() <= MAX_ANSWER_CHARS + 1),
            "{got:?}"
        );
        let texts = format!(
            "\\boxed{{{}7{}}}",
            "\\text{".repeat(depth),
            "}".repeat(depth + 1)
        );
        assert!(matches!(
            extract_answer(&texts, &RANGE),
            Err(Rejected::NotAnInteger(_))
        ));
        assert_eq!(parse_integer(&"\\text{".repeat(depth)), None);
        let unclosed = format!("\\boxed{{{}7", "{".repeat(depth));
        assert_eq!(extract_answer(&unclosed, &RANGE), Err(Rejected::NoBox));
        let boxes = format!("{}7{}", "\\boxed{".repeat(depth), "}".repeat(depth));
        assert_eq!(boxed_contents(&boxes).len(), 1);
    }

    #[test]
    fn megabyte_inputs() {
        let mb = 1 << 20;
        let opens = "\\boxed{".repeat(mb / 7);
        assert_eq!(extract_answer(&opens, &RANGE), Err(Rejected::NoBox));
        assert_eq!(boxed_contents(&opens), Vec::<String>::new());
        let after_good = format!("\\boxed{{3}}{opens}");
        assert_eq!(extract_answer(&after_good, &RANGE), Ok(3));
        let bare = "\\boxed ".repeat(mb / 7);
        assert_eq!(extract_answer(&bare, &RANGE), Err(Rejected::NoBox));

        let plain = "Let us think step by step, x^2 + y^2 = z^2. ".repeat(mb / 44);
        assert_eq!(extract_answer(&plain, &RANGE), Err(Rejected::NoBox));

        let long = format!("<think>{plain}{plain}</think>The answer is \\boxed{{42}}");
        assert!(long.len() > 2 * mb);
        assert_eq!(extract_answer(&long, &RANGE), Ok(42));
        let long = format!("{plain}{plain}\\boxed{{42}}");
        assert_eq!(extract_answer(&long, &RANGE), Ok(42));

        let huge_box = format!("\\boxed{{{}}}", "1".repeat(mb));
        let Err(Rejected::NotAnInteger(s)) = extract_answer(&huge_box, &RANGE) else {
            panic!("a megabyte of digits is not an answer");
        };
        assert_eq!(s, format!("{}…", "1".repeat(MAX_ANSWER_CHARS)));
        let padded = format!("\\boxed{{{}42{}}}", " ".repeat(mb), "\n".repeat(mb));
        assert_eq!(extract_answer(&padded, &RANGE), Ok(42));
    }

    #[test]
    fn answer_length_cap() {
        // LaTeX thin spaces pad an answer to exactly the cap, then one char past it.
        let at_cap = format!("{}42", "\\,".repeat(MAX_ANSWER_CHARS / 2 - 1));
        assert_eq!(at_cap.chars().count(), MAX_ANSWER_CHARS);
        assert_eq!(parse_integer(&at_cap), Some(42));
        assert_eq!(parse_integer(&format!("  {at_cap}  ")), Some(42));
        assert_eq!(parse_integer(&format!("${at_cap}")), None);
        let short_junk = "x".repeat(MAX_ANSWER_CHARS);
        assert_eq!(
            extract_answer(&format!("\\boxed{{{short_junk}}}"), &RANGE),
            Err(Rejected::NotAnInteger(short_junk))
        );
    }

    /// Fragments that `\boxed` shapes are built from, hazards included.
    const FRAGMENTS: &[&str] = &[
        "\\boxed",
        "\\fbox",
        "\\boxed{",
        "{",
        "}",
        " ",
        "\n",
        "\r\n",
        "\t",
        "0",
        "4",
        "2",
        "9",
        "12",
        ",",
        ".",
        ".0",
        "-",
        "\\text{",
        "\\textbf{",
        "\\mathrm{",
        "\\displaystyle",
        "\\,",
        "\\!",
        "\\ ",
        "{,}",
        "$",
        "^\\circ",
        "%",
        "</think>",
        "<think>",
        "∞",
        "é",
        "😀",
        "\0",
        "\\",
        "x",
        "\\frac",
    ];

    fn fragment_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(FRAGMENTS).prop_map(str::to_string),
            1 => any::<char>().prop_map(String::from),
        ];
        prop::collection::vec(piece, 0..80).prop_map(|v| v.concat())
    }

    /// Arbitrary text that cannot open, close or escape anything.
    fn inert_text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            any::<char>().prop_filter("inert", |c| !matches!(c, '\\' | '{' | '}')),
            0..200,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    /// Every way a well-formed box can write `n`.
    fn well_formed_box(n: u64, style: usize) -> String {
        // `n` is below 100,000, so one separator at most.
        let grouped = if n >= 1000 {
            format!("{},{:03}", n / 1000, n % 1000)
        } else {
            n.to_string()
        };
        match style % 6 {
            0 => format!("\\boxed{{{n}}}"),
            1 => format!("$\\boxed{{{n}}}$"),
            2 => format!("\\boxed{{\\text{{{n}}}}}"),
            3 => format!("\\boxed{{ {grouped} }}"),
            4 => format!("\\boxed {n}"),
            _ => format!("\\fbox{{{n}.0}}"),
        }
    }

    /// Braces in a box's content are balanced (or it is a bare token).
    fn balanced(s: &str) -> bool {
        let mut depth = 0i64;
        s.chars().all(|c| {
            depth += match c {
                '{' => 1,
                '}' => -1,
                _ => 0,
            };
            depth >= 0
        }) && depth == 0
    }

    fn check_invariants(text: &str) {
        let boxes = boxed_contents(text);
        for b in &boxes {
            assert!(balanced(b), "{b:?} from {text:?}");
        }
        match extract_answer(text, &RANGE) {
            Ok(v) => assert!(RANGE.contains(&v)),
            Err(Rejected::NoBox) => assert!(boxes.is_empty()),
            Err(Rejected::NotAnInteger(s)) => {
                assert!(s.chars().count() <= MAX_ANSWER_CHARS + 1)
            }
            Err(Rejected::OutOfRange(v)) => assert!(!RANGE.contains(&v)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>(), chars in prop::collection::vec(any::<char>(), 0..300)) {
            let chars: String = chars.into_iter().collect();
            for t in [&text, &chars] {
                check_invariants(t);
                let _ = parse_integer(t);
            }
        }

        #[test]
        fn box_shapes_never_panic(text in fragment_soup()) {
            check_invariants(&text);
            for b in boxed_contents(&text) {
                let _ = parse_integer(&b);
            }
            let _ = parse_integer(&text);
        }

        #[test]
        fn appended_box_is_recovered(prefix in inert_text(), suffix in inert_text(), n in 0u64..=99_999, style in 0usize..6) {
            // A bare token ends at the first non-alphanumeric char: keep it from running on.
            let sep = if style % 6 == 4 { " " } else { "" };
            let text = format!("{prefix}{}{sep}{suffix}", well_formed_box(n, style));
            prop_assert_eq!(extract_answer(&text, &RANGE), Ok(n));
        }

        #[test]
        fn final_box_after_thinking_wins(draft in fragment_soup(), text in inert_text(), n in 0u64..=99_999, style in 0usize..6) {
            // Whatever mess the reasoning holds, a box after the last `</think>` is the answer.
            let text = text.replace(THINK_END, "");
            let answer = format!("<think>{draft}</think>{text}{} ", well_formed_box(n, style));
            prop_assert_eq!(extract_answer(&answer, &RANGE), Ok(n));
        }

        #[test]
        fn integers_parse(n in 0u64..1_000_000_000_000_000_000, style in 0usize..3) {
            let raw = match style {
                0 => n.to_string(),
                1 => format!(" ${n}$ "),
                _ => format!("\\text{{{n}}}"),
            };
            prop_assert_eq!(parse_integer(&raw), Some(n));
        }
    }
}
