//! Memory forms: what a retrieved neighbour shows the model (`--rag format=`), written once
//! here for the prompt's reference block and for a tool's output alike.
//!
//! - `chat` / `context`: the neighbour's problem and its full worked solution;
//! - `problem`: its problem and final answer, no solution (nothing to copy step by step);
//! - `insight`: its problem and the condensed memory `solve distill` stored with it (key idea,
//!   technique, trap); a neighbour without one is shown as `problem` (see [`Example::sent_as`]).
//!
//! See docs/memory.md for when each form is expected to help.

use super::prompt::{Example, RagFormat};

impl Example {
    /// The form this neighbour is actually shown in: `insight` falls back to `problem` when the
    /// record has no insight.
    pub fn sent_as(&self, format: RagFormat) -> RagFormat {
        match format {
            RagFormat::Insight if !self.has_insight() => RagFormat::Problem,
            f => f,
        }
    }

    /// Whether the record carries a non-empty insight.
    pub fn has_insight(&self) -> bool {
        self.insight
            .as_deref()
            .is_some_and(|i| !i.trim().is_empty())
    }
}

/// One neighbour as text in `format` (`chat` is rendered as `context`: a tool's output or a
/// reference block is one text). Stable: `--tools retrieve` returns these as its output.
pub fn neighbour_text(e: &Example, format: RagFormat) -> String {
    let problem = e.problem.trim();
    match e.sent_as(format) {
        RagFormat::Chat | RagFormat::Context => {
            format!("Problem: {problem}\nSolution: {}", e.solution.trim())
        }
        RagFormat::Problem => match e.answer.trim() {
            "" => format!("Problem: {problem}"),
            a => format!("Problem: {problem}\nFinal answer: {a}"),
        },
        RagFormat::Insight => format!(
            "Problem: {problem}\nInsight: {}",
            e.insight.as_deref().unwrap_or("").trim()
        ),
    }
}

/// The line that introduces a block of neighbours in `format`.
fn heading(format: RagFormat) -> &'static str {
    match format {
        RagFormat::Chat | RagFormat::Context => {
            "Here are solved problems similar to the one you must solve."
        }
        RagFormat::Problem => {
            "Here are problems similar to the one you must solve, with their final answers."
        }
        RagFormat::Insight => {
            "Here are problems similar to the one you must solve, each with the key idea, \
             technique and trap that its solution taught."
        }
    }
}

/// The neighbours as one numbered block (`### Example N`), ending with a blank line: the
/// reference block of a `context`/`problem`/`insight` prompt, or a tool's output.
pub fn neighbours_block(examples: &[Example], format: RagFormat) -> String {
    let mut text = format!("{}\n\n", heading(format));
    for (i, e) in examples.iter().enumerate() {
        text.push_str(&format!(
            "### Example {}\n{}\n\n",
            i + 1,
            neighbour_text(e, format)
        ));
    }
    text
}

/// How many of `examples` would be shown as `problem` for lack of an insight under `format`.
pub fn insight_fallbacks(examples: &[Example], format: RagFormat) -> usize {
    examples
        .iter()
        .filter(|e| e.sent_as(format) != format)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(insight: Option<&str>) -> Example {
        Example {
            id: "a".into(),
            score: 0.9,
            problem: "What is 6 times 7?".into(),
            solution: "Multiply: $6 \\cdot 7 = \\boxed{42}$.".into(),
            answer: "42".into(),
            insight: insight.map(str::to_string),
        }
    }

    #[test]
    fn each_form_shows_what_it_promises() {
        let e = ex(Some("Key idea: repeated addition."));
        let chat = neighbour_text(&e, RagFormat::Chat);
        assert_eq!(chat, neighbour_text(&e, RagFormat::Context));
        assert!(chat.contains("Solution: Multiply"));
        let p = neighbour_text(&e, RagFormat::Problem);
        assert_eq!(p, "Problem: What is 6 times 7?\nFinal answer: 42");
        let i = neighbour_text(&e, RagFormat::Insight);
        assert_eq!(
            i,
            "Problem: What is 6 times 7?\nInsight: Key idea: repeated addition."
        );
        assert!(!i.contains("42") && !i.contains("Multiply"));
    }

    #[test]
    fn a_neighbour_without_insight_falls_back_to_problem() {
        for missing in [None, Some("  ")] {
            let e = ex(missing);
            assert_eq!(e.sent_as(RagFormat::Insight), RagFormat::Problem);
            assert_eq!(
                neighbour_text(&e, RagFormat::Insight),
                neighbour_text(&e, RagFormat::Problem)
            );
        }
        let both = [ex(None), ex(Some("idea"))];
        assert_eq!(insight_fallbacks(&both, RagFormat::Insight), 1);
        assert_eq!(insight_fallbacks(&both, RagFormat::Problem), 0);
    }

    #[test]
    fn the_context_block_is_numbered() {
        let block = neighbours_block(&[ex(None), ex(None)], RagFormat::Context);
        assert!(block.starts_with("Here are solved problems similar to the one you must solve.\n\n### Example 1\nProblem: "));
        assert!(block.contains("### Example 2\n") && block.ends_with("\n\n"));
    }
}
