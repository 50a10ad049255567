//! Self-consistency voting over sampled answers, weighted by how much each sample deserves.
//!
//! Each vote carries a weight (see [`sample_weight`]): a sample whose answer was computed or
//! checked by executed code counts 1.5, a truncated one (cut by max_tokens, the thinking
//! budget or a cancel) 0.5, an ordinary one 1. The winner has the most weight; a tie goes to the
//! answer that reached that weight first (the earliest sample to complete it), which is
//! deterministic for a given order of completions and favours answers found quickly and often.
//! With every weight 1 this is the plain majority vote.

use serde::Serialize;

/// Weight of a sample whose answer was checked by code.
pub const CHECKED: f64 = 1.5;
/// Weight of a truncated sample.
pub const TRUNCATED: f64 = 0.5;
/// How the vote weighs samples, as recorded in the run key.
pub const RULE: &str = "weighted: code-checked x1.5, truncated x0.5";

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Count {
    pub answer: u64,
    pub votes: usize,
    pub weight: f64,
    /// Index of the vote that brought it to its current weight.
    pub order: usize,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    pub counts: Vec<Count>,
    pub votes: usize,
    /// The most a single sample can weigh (bounds what the samples left can add).
    pub max_weight: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub answer: u64,
    pub votes: usize,
    pub weight: f64,
    pub runner_up_weight: f64,
    pub valid_votes: usize,
}

/// A sample's weight: `checked` (its answer appeared in a tool output, or its code ran without
/// error) and `truncated` multiply.
pub fn sample_weight(checked: bool, truncated: bool) -> f64 {
    let mut w = 1.0;
    if checked {
        w *= CHECKED;
    }
    if truncated {
        w *= TRUNCATED;
    }
    w
}

impl Tally {
    pub fn new(max_weight: f64) -> Self {
        Self {
            max_weight,
            ..Default::default()
        }
    }

    pub fn add(&mut self, answer: u64, weight: f64) {
        let order = self.votes;
        self.votes += 1;
        match self.counts.iter_mut().find(|c| c.answer == answer) {
            Some(c) => {
                c.votes += 1;
                c.weight += weight;
                c.order = order;
            }
            None => self.counts.push(Count {
                answer,
                votes: 1,
                weight,
                order,
            }),
        }
    }

    fn ranked(&self) -> Vec<&Count> {
        let mut r: Vec<&Count> = self.counts.iter().collect();
        r.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.order.cmp(&b.order)));
        r
    }

    pub fn verdict(&self) -> Option<Verdict> {
        let r = self.ranked();
        let first = r.first()?;
        Some(Verdict {
            answer: first.answer,
            votes: first.votes,
            weight: first.weight,
            runner_up_weight: r.get(1).map_or(0.0, |c| c.weight),
            valid_votes: self.votes,
        })
    }

    /// Whether any vote weighed other than 1 (then the trace shows the weights).
    pub fn weighted(&self) -> bool {
        self.counts.iter().any(|c| c.weight != c.votes as f64)
    }

    /// Whether sampling can stop: the leader cannot be overtaken by the `remaining` samples
    /// (each weighing at most `max_weight`), or it holds at least `agreement` of the planned
    /// samples' nominal weight (0 disables that rule).
    pub fn settled(&self, remaining: usize, planned: usize, agreement: f64) -> bool {
        let Some(v) = self.verdict() else {
            return false;
        };
        let max = self.max_weight.max(1.0);
        if v.weight > v.runner_up_weight + remaining as f64 * max {
            return true;
        }
        agreement > 0.0 && v.weight >= agreement * planned as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_wins_and_ties_go_to_the_first_to_reach_the_count() {
        let mut t = Tally::new(1.0);
        for a in [5, 7, 7, 5] {
            t.add(a, 1.0);
        }
        // 7 reached two votes at vote #2, 5 only at vote #3.
        assert_eq!(t.verdict().unwrap().answer, 7);
        t.add(5, 1.0);
        let v = t.verdict().unwrap();
        assert_eq!(
            (v.answer, v.votes, v.runner_up_weight, v.valid_votes),
            (5, 3, 2.0, 5)
        );
        assert!(!t.weighted());
    }

    #[test]
    fn early_stop_when_the_leader_cannot_be_overtaken() {
        let mut t = Tally::new(1.0);
        t.add(3, 1.0);
        t.add(3, 1.0);
        assert!(!t.settled(2, 4, 0.0)); // 2 vs 0 with 2 left: could tie
        t.add(3, 1.0);
        assert!(t.settled(1, 4, 0.0)); // 3 vs 0 with 1 left
        let mut t = Tally::new(1.0);
        t.add(1, 1.0);
        t.add(1, 1.0);
        assert!(t.settled(6, 8, 0.25)); // holds 2 of 8 planned = 25%
        assert!(!Tally::new(1.0).settled(0, 4, 0.5));
    }

    #[test]
    fn checked_answers_outweigh_truncated_ones() {
        let mut t = Tally::new(CHECKED);
        t.add(9, sample_weight(false, true));
        t.add(9, sample_weight(false, true));
        t.add(4, sample_weight(true, false));
        // 1.5 beats 0.5 + 0.5 although 9 has more votes.
        let v = t.verdict().unwrap();
        assert_eq!((v.answer, v.weight, v.runner_up_weight), (4, 1.5, 1.0));
        assert!(t.weighted());
        // 1.5 vs 1.0 with one sample left that may weigh 1.5: not settled.
        assert!(!t.settled(1, 4, 0.0));
        assert_eq!(sample_weight(true, true), 0.75);
    }
}
