//! Turning a problem and its retrieved neighbours into chat messages.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::client::{Message, Role};

pub const DEFAULT_SYSTEM: &str = "detailed thinking on";
/// The built-in user turn for the default `--answer-range 0..99999` (see
/// [`default_user_template`]).
pub const DEFAULT_USER_TEMPLATE: &str =
    "{problem}\n\nSolve the problem. The final answer is an integer from 0 to 99999; put it \
     inside \\boxed{}.\nIf your result is above 99999, negative or not an integer, reduce it \
     modulo 100000 only if the problem asks for that remainder; otherwise re-read the problem \
     and check your work, since the intended answer lies in that range.";

/// The built-in user turn: the answer format, the valid range, and what to do with a result
/// beyond it. AIMO 3 problems ask for a remainder themselves when the true value is large, so
/// the model is told not to reduce on its own.
pub fn default_user_template(range: &std::ops::RangeInclusive<u64>) -> String {
    let (lo, hi) = (*range.start(), *range.end());
    if (lo, hi) == (0, 99999) {
        return DEFAULT_USER_TEMPLATE.to_string();
    }
    let reduce = match (lo, hi.checked_add(1)) {
        (0, Some(m)) => format!("reduce it modulo {m} only if the problem asks for that remainder"),
        _ => "do not reduce it on your own".to_string(),
    };
    format!(
        "{{problem}}\n\nSolve the problem. The final answer is an integer from {lo} to {hi}; put \
         it inside \\boxed{{}}.\nIf your result is above {hi}, below {lo} or not an integer, \
         {reduce}; otherwise re-read the problem and check your work, since the intended \
         answer lies in that range."
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RagFormat {
    /// Each neighbour as a user turn (its problem) and an assistant turn (its solution).
    Chat,
    /// All neighbours as one block of reference problems inside the user message.
    Context,
    /// Each neighbour's problem and final answer, no solution, in one block of the user message.
    Problem,
    /// Each neighbour's problem and its condensed memory (the record's `insight`, written by
    /// `solve distill`), in one block; a neighbour without one is sent as `problem`.
    Insight,
}

impl RagFormat {
    pub fn name(self) -> &'static str {
        match self {
            RagFormat::Chat => "chat",
            RagFormat::Context => "context",
            RagFormat::Problem => "problem",
            RagFormat::Insight => "insight",
        }
    }
}

/// `--rag k=4,min-score=0.3,exclude-above=0.98,format=chat,share=0.5,search=on`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagSpec {
    pub k: usize,
    pub min_score: Option<f32>,
    pub exclude_above: Option<f32>,
    pub format: RagFormat,
    /// `share=S`: the examples go into this share of a problem's samples, none into the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// `search=on|off`: offer the `search_similar_problems` tool in this arm (default: as
    /// `--tools` says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<bool>,
}

impl RagSpec {
    /// Whether sample `index` gets the examples: with `share=S`, sample i does when
    /// ceil((i+1)S) > ceil(iS), which spreads them evenly (S=0.5: samples 0, 2, 4, ...) and
    /// gives ceil(N*S) of the first N samples, whatever N early stopping leaves.
    pub fn examples_in_sample(&self, index: usize) -> bool {
        let Some(s) = self.share else { return true };
        // A hair below each integer keeps 0.1 * 10 from rounding up to 2.
        let ceil = |x: f64| (x - 1e-9).ceil();
        ceil((index + 1) as f64 * s) > ceil(index as f64 * s)
    }
}

impl std::str::FromStr for RagSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut spec = RagSpec {
            k: 4,
            min_score: None,
            exclude_above: None,
            format: RagFormat::Chat,
            share: None,
            search: None,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .with_context(|| format!("--rag {s:?}: expected key=value, got {part:?}"))?;
            let number = |v: &str| -> Result<f32> {
                v.parse()
                    .with_context(|| format!("--rag {key}={v:?}: not a number"))
            };
            match key {
                "k" => {
                    spec.k = value
                        .parse()
                        .with_context(|| format!("--rag k={value:?}: not a count"))?
                }
                "min-score" => spec.min_score = Some(similarity(key, number(value)?)?),
                "exclude-above" => spec.exclude_above = Some(similarity(key, number(value)?)?),
                "format" => {
                    spec.format = match value {
                        "chat" => RagFormat::Chat,
                        "context" => RagFormat::Context,
                        "problem" => RagFormat::Problem,
                        "insight" => RagFormat::Insight,
                        other => bail!(
                            "--rag format={other:?}: expected chat, context, problem or insight"
                        ),
                    }
                }
                "share" => {
                    let v: f64 = value
                        .parse()
                        .with_context(|| format!("--rag share={value:?}: not a number"))?;
                    if !(0.0..=1.0).contains(&v) {
                        bail!("--rag share={value}: expected a share between 0 and 1");
                    }
                    spec.share = Some(v);
                }
                "search" => {
                    spec.search = Some(match value {
                        "on" => true,
                        "off" => false,
                        other => bail!("--rag search={other:?}: expected on or off"),
                    })
                }
                other => bail!(
                    "--rag: unknown key {other:?} (keys: k, min-score, exclude-above, format, \
                     share, search)"
                ),
            }
        }
        Ok(spec)
    }
}

/// A cosine similarity bound: within [-1, 1].
fn similarity(key: &str, v: f32) -> Result<f32> {
    if !(-1.0..=1.0).contains(&v) {
        bail!("--rag {key}={v}: a cosine similarity, between -1 and 1");
    }
    Ok(v)
}

/// A retrieved solved problem, as it goes into the prompt and the trace.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Example {
    pub id: String,
    pub score: f32,
    pub problem: String,
    pub solution: String,
    /// The record's final answer ("" when it has none).
    pub answer: String,
    /// The record's condensed memory (`solve distill`), if it has one.
    pub insight: Option<String>,
}

impl Example {
    /// The solution, ending with its `\boxed{answer}` so the model sees the expected form.
    pub fn solution_with_box(&self, answer: Option<&str>) -> String {
        let s = self.solution.trim();
        if s.contains("\\boxed") {
            return s.to_string();
        }
        match answer.filter(|a| !a.is_empty()) {
            Some(a) => format!("{s}\n\nThe final answer is $\\boxed{{{a}}}$."),
            None => s.to_string(),
        }
    }
}

pub struct PromptBuilder {
    pub system: Option<String>,
    pub user_template: String,
    pub format: RagFormat,
}

impl PromptBuilder {
    pub fn user_turn(&self, problem: &str) -> String {
        self.user_template.replace("{problem}", problem.trim())
    }

    pub fn messages(&self, problem: &str, examples: &[Example]) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some(s) = &self.system {
            out.push(Message::new(Role::System, s.clone()));
        }
        match self.format {
            RagFormat::Chat => {
                for e in examples {
                    out.push(Message::new(Role::User, self.user_turn(&e.problem)));
                    out.push(Message::new(Role::Assistant, e.solution.clone()));
                }
                out.push(Message::new(Role::User, self.user_turn(problem)));
            }
            format => {
                let mut text = String::new();
                if !examples.is_empty() {
                    text.push_str(&super::memory::neighbours_block(examples, format));
                    text.push_str("### Your problem\n");
                }
                text.push_str(&self.user_turn(problem));
                out.push(Message::new(Role::User, text));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn rag_spec_parses_and_rejects() {
        let s: RagSpec = "k=4".parse().unwrap();
        assert_eq!((s.k, s.format), (4, RagFormat::Chat));
        let s: RagSpec = "k=2,min-score=0.3,exclude-above=0.98,format=context"
            .parse()
            .unwrap();
        assert_eq!(s.min_score, Some(0.3));
        assert_eq!(s.exclude_above, Some(0.98));
        assert_eq!(s.format, RagFormat::Context);
        for f in ["problem", "insight"] {
            let s: RagSpec = format!("k=1,format={f}").parse().unwrap();
            assert_eq!(s.format.name(), f);
        }
        assert!("format=solution"
            .parse::<RagSpec>()
            .unwrap_err()
            .to_string()
            .contains("chat, context, problem or insight"));
        assert_eq!("k=0".parse::<RagSpec>().unwrap().k, 0);
        assert!("k=four"
            .parse::<RagSpec>()
            .unwrap_err()
            .to_string()
            .contains("k=\"four\""));
        assert!("depth=3"
            .parse::<RagSpec>()
            .unwrap_err()
            .to_string()
            .contains("unknown key"));
    }

    #[test]
    fn share_spreads_examples_over_samples() {
        let s: RagSpec = "k=2,share=0.5,search=on".parse().unwrap();
        assert_eq!((s.share, s.search), (Some(0.5), Some(true)));
        let with: Vec<usize> = (0..8).filter(|&i| s.examples_in_sample(i)).collect();
        assert_eq!(with, vec![0, 2, 4, 6]);
        let tenth: RagSpec = "share=0.1".parse().unwrap();
        assert_eq!((0..10).filter(|&i| tenth.examples_in_sample(i)).count(), 1);
        let none: RagSpec = "share=0".parse().unwrap();
        assert!(!(0..8).any(|i| none.examples_in_sample(i)));
        assert!((0..8).all(|i| RagSpec::from_str("k=1").unwrap().examples_in_sample(i)));
        for bad in ["share=1.5", "share=x", "search=maybe"] {
            assert!(bad.parse::<RagSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn chat_format_alternates_example_turns() {
        let b = PromptBuilder {
            system: Some(DEFAULT_SYSTEM.into()),
            user_template: DEFAULT_USER_TEMPLATE.into(),
            format: RagFormat::Chat,
        };
        let ex = Example {
            id: "a".into(),
            score: 0.9,
            problem: "1+1?".into(),
            solution: "It is \\boxed{2}.".into(),
            ..Default::default()
        };
        let m = b.messages("2+2?", &[ex]);
        let roles: Vec<&str> = m.iter().map(|m| m.role.name()).collect();
        assert_eq!(roles, vec!["system", "user", "assistant", "user"]);
        assert!(m[3].content.starts_with("2+2?"));
        assert!(m[2].content.ends_with("\\boxed{2}."));
    }

    #[test]
    fn the_default_template_names_the_range_and_when_to_reduce() {
        let t = default_user_template(&(0..=99999));
        assert_eq!(t, DEFAULT_USER_TEMPLATE);
        assert!(t.starts_with("{problem}\n\n") && t.contains("\\boxed{}"));
        assert!(t.contains("from 0 to 99999") && t.contains("modulo 100000 only if"));
        let t = default_user_template(&(0..=999));
        assert!(t.contains("from 0 to 999;") && t.contains("modulo 1000 only if"));
        let t = default_user_template(&(1..=9));
        assert!(t.contains("from 1 to 9;") && t.contains("do not reduce"));
        assert_eq!(t.matches("{problem}").count(), 1);
    }
}
