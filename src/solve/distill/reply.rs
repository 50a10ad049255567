//! The request of one record and what is kept of the reply: the template filled in, thinking
//! stripped, the length capped, and the final answer redacted where the reply restates it.

use super::super::client::Completion;

/// The default request (`--template` replaces it). Placeholders: `{problem}`, `{solution}`,
/// `{answer}`, `{words}`.
pub const DEFAULT_TEMPLATE: &str = "\
Here is a competition math problem with a worked solution. Write a short memory of it for a \
solver who will later meet a similar but different problem.

Problem:
{problem}

Solution:
{solution}

Write at most {words} words, as three short lines:
Key idea: the insight that cracks the problem.
Technique: the method or standard result used, stated so it transfers to other problems.
Trap: the mistake or overlooked case to watch for.
Do not restate the final answer ({answer}) or any number computed from it, and do not retell \
the solution step by step.
";

/// Placeholders a template may use; `{solution}` is required (without it there is nothing to
/// distill).
pub const PLACEHOLDERS: [&str; 4] = ["problem", "solution", "answer", "words"];

/// What replaces `{answer}` in a reply that restated it.
pub const REDACTED: &str = "[answer]";

/// The template with each `{name}` replaced in one pass (so a `{solution}` inside the problem
/// text stays as it is).
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, close))
        });
        match hit {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The insight in a reply: the answer after any thinking, each line trimmed, at most
/// `2 * words` words (a reply far over the asked length is cut, and says so). Err says why
/// nothing usable came back.
pub fn clean(c: &Completion, words: usize) -> Result<(String, bool), String> {
    let text = c.content.as_str();
    let text = match text.rfind("</think>") {
        Some(end) => &text[end + "</think>".len()..],
        None if text.contains("<think>") => {
            return Err(format!(
                "the reply is all thinking (finish_reason {}): raise --max-tokens",
                finish(c)
            ))
        }
        None => text,
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return Err(format!(
            "no insight in the reply (finish_reason {}{})",
            finish(c),
            if c.reasoning.is_some() {
                "; only reasoning came back: raise --max-tokens"
            } else {
                ""
            }
        ));
    }
    let cap = words.saturating_mul(2).max(1);
    let mut kept = Vec::new();
    let mut count = 0;
    for line in lines {
        let left = cap - count;
        let ws: Vec<&str> = line.split_whitespace().collect();
        if ws.len() > left {
            kept.push(
                format!("{} ...", ws[..left].join(" "))
                    .trim_start()
                    .to_string(),
            );
            return Ok((kept.join("\n"), true));
        }
        count += ws.len();
        kept.push(ws.join(" "));
    }
    Ok((kept.join("\n"), false))
}

fn finish(c: &Completion) -> &str {
    c.finish_reason.as_ref().map_or("none", |f| f.as_str())
}

/// Replace every place `text` restates `answer` with [`REDACTED`]; the count. Numbers match as
/// whole numbers (`12` is not in `125`) and only from two digits on (a lone `3` is too often
/// something else); other answers match literally from four characters on.
pub fn redact(text: &str, answer: &str) -> (String, usize) {
    let a = answer.trim().trim_matches('$').trim();
    let numeric = !a.is_empty()
        && a.trim_start_matches('-')
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.');
    let digits = a.chars().filter(char::is_ascii_digit).count();
    if (numeric && digits < 2) || (!numeric && a.chars().count() < 4) {
        return (text.to_string(), 0);
    }
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with(a) && (!numeric || whole_number(text, i, i + a.len())) {
            out.push_str(REDACTED);
            count += 1;
            i += a.len();
            continue;
        }
        let c = rest.chars().next().expect("i is below len");
        out.push(c);
        i += c.len_utf8();
    }
    (out, count)
}

/// Whether `text[start..end]` is not part of a longer number.
fn whole_number(text: &str, start: usize, end: usize) -> bool {
    let before = text[..start].chars().next_back();
    let mut after = text[end..].chars();
    let (a1, a2) = (after.next(), after.next());
    let digit = |c: Option<char>| c.is_some_and(|c| c.is_ascii_digit());
    let decimal_after = a1 == Some('.') && digit(a2);
    !digit(before) && before != Some('.') && !digit(a1) && !decimal_after
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(content: &str) -> Completion {
        Completion {
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_template_is_filled_once() {
        let t = "P: {problem} S: {solution} {unknown} {words}";
        let got = fill(
            t,
            &[
                ("problem", "x {solution}"),
                ("solution", "y"),
                ("words", "60"),
            ],
        );
        assert_eq!(got, "P: x {solution} S: y {unknown} 60");
        assert!(DEFAULT_TEMPLATE.contains("{solution}") && DEFAULT_TEMPLATE.contains("{words}"));
    }

    #[test]
    fn the_documented_template_is_the_default() {
        let docs = include_str!("../../../docs/memory.md");
        for line in DEFAULT_TEMPLATE.lines().filter(|l| !l.is_empty()) {
            assert!(
                docs.contains(&format!("  {line}\n")),
                "docs/memory.md lacks {line:?}"
            );
        }
    }

    #[test]
    fn thinking_is_stripped_and_length_capped() {
        let (t, cut) = clean(
            &reply("<think>long musing</think>\n Key idea: pair terms. \n\n"),
            60,
        )
        .unwrap();
        assert_eq!((t.as_str(), cut), ("Key idea: pair terms.", false));
        assert!(clean(&reply("<think>never ends"), 60)
            .unwrap_err()
            .contains("all thinking"));
        assert!(clean(&reply("  \n"), 60).is_err());
        let long = "w ".repeat(50);
        let (t, cut) = clean(&reply(&format!("a b\n{long}")), 10).unwrap();
        assert!(cut);
        assert_eq!(t.split_whitespace().filter(|w| *w != "...").count(), 20);
    }

    #[test]
    fn a_restated_answer_is_redacted() {
        let (t, n) = redact(
            "The answer 36 comes from 6*6; not 360 or 1.36 or 36.5.",
            "36",
        );
        assert_eq!(
            t,
            "The answer [answer] comes from 6*6; not 360 or 1.36 or 36.5."
        );
        assert_eq!(n, 1);
        assert_eq!(redact("use 7 colours", "7").1, 0, "one digit: not checked");
        assert_eq!(redact("so x = -12 here", "-12").1, 1);
        let (t, n) = redact("it is \\frac{1}{2} again", "$\\frac{1}{2}$");
        assert_eq!((t.as_str(), n), ("it is [answer] again", 1));
    }
}
