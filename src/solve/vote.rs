//! Self-consistency voting over sampled answers, weighted by how much each sample deserves.
//!
//! Each vote carries a base weight (see [`sample_weight`]): a sample whose answer was computed
//! or checked by executed code counts 1.5, a truncated one (cut by max_tokens, the thinking
//! budget or a cancel) 0.5, an ordinary one 1. How the votes combine is the rule (`--vote`):
//!
//! - `majority`: the answer with the most base weight wins (with every weight 1 this is the
//!   plain majority vote);
//! - `entropy`: each sample weighs its base weight / its mean token entropy (floored at
//!   [`ENTROPY_FLOOR`]), so a few confident samples can outvote many unsure ones (the AIMO 3
//!   winners' confidence weighting);
//! - `count-then-entropy`: most base weight first, and among answers tied on it the lower mean
//!   entropy of their samples (AIMO 3's second place);
//! - `auto` (the default): `count-then-entropy` when the samples have log-probs, else
//!   `majority`.
//!
//! An entropy rule needs every voting sample's entropy; when one lacks it (a server without
//! log-probs) the problem is voted by `majority` and the trace says so. Remaining ties go to the
//! answer that reached its weight first (the earliest sample to complete it), which is
//! deterministic for a given order of completions and favours answers found quickly and often.

use serde::Serialize;

/// Weight of a sample whose answer was checked by code.
pub const CHECKED: f64 = 1.5;
/// Weight of a truncated sample.
pub const TRUNCATED: f64 = 0.5;
/// The least entropy (nats) a sample is credited with under `entropy`: a sample of only
/// near-certain tokens weighs at most 100 times its base weight, not infinitely much.
pub const ENTROPY_FLOOR: f64 = 0.01;
/// How the `majority` rule weighs samples, as recorded in the run key (the rule of exemplar
/// versions before `--vote`, so their traces still resume).
pub const RULE: &str = "weighted: code-checked x1.5, truncated x0.5";

/// `--vote`: how the answers of a problem's samples are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VoteRule {
    /// `count-then-entropy` when log-probs are present, else `majority`.
    #[default]
    Auto,
    Majority,
    Entropy,
    CountThenEntropy,
}

crate::named_enum!(VoteRule {
    Auto => "auto",
    Majority => "majority",
    Entropy => "entropy",
    CountThenEntropy => "count-then-entropy"
});

impl VoteRule {
    /// The rule applied to a problem, given whether every vote came with an entropy.
    pub fn applied(self, entropies: bool) -> VoteRule {
        match (self, entropies) {
            (_, false) | (VoteRule::Majority, _) => VoteRule::Majority,
            (VoteRule::Auto, true) => VoteRule::CountThenEntropy,
            (rule, true) => rule,
        }
    }

    /// The rule as recorded in the run key: `majority` keeps the key of earlier versions.
    pub fn key(self) -> String {
        match self {
            VoteRule::Majority => RULE.into(),
            rule => format!("{}; {RULE}", rule.name()),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Count {
    pub answer: u64,
    pub votes: usize,
    /// Summed base weights.
    pub weight: f64,
    /// Summed base weight / entropy of the votes that had one (the `entropy` rule's weight).
    pub confidence_weight: f64,
    pub entropy_sum: f64,
    pub entropy_votes: usize,
    /// Index of the vote that brought it to its current weight.
    pub order: usize,
}

impl Count {
    /// Mean token entropy of this answer's samples, when they all had one.
    pub fn mean_entropy(&self) -> Option<f64> {
        (self.entropy_votes == self.votes && self.votes > 0)
            .then(|| self.entropy_sum / self.votes as f64)
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    pub counts: Vec<Count>,
    pub votes: usize,
    /// The most a single sample can weigh (bounds what the samples left can add).
    pub max_weight: f64,
    pub rule: VoteRule,
    /// Some vote came without an entropy: the entropy rules fall back to `majority`.
    pub missing_entropy: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub answer: u64,
    pub votes: usize,
    /// In the applied rule's weight.
    pub weight: f64,
    pub runner_up_weight: f64,
    /// All answers' weight together, in the same unit.
    pub total_weight: f64,
    pub valid_votes: usize,
    pub rule: VoteRule,
}

impl Verdict {
    /// (leader - runner-up) / total weight: 1 when unanimous, 0 on a tie.
    pub fn margin(&self) -> f64 {
        (self.weight - self.runner_up_weight) / self.total_weight.max(1e-12)
    }
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
        Self::with_rule(max_weight, VoteRule::Majority)
    }

    pub fn with_rule(max_weight: f64, rule: VoteRule) -> Self {
        Self {
            max_weight,
            rule,
            ..Default::default()
        }
    }

    /// A vote without an entropy.
    pub fn add(&mut self, answer: u64, weight: f64) {
        self.add_scored(answer, weight, None);
    }

    /// A vote with its sample's mean token entropy, if known.
    pub fn add_scored(&mut self, answer: u64, weight: f64, entropy: Option<f64>) {
        let order = self.votes;
        self.votes += 1;
        self.missing_entropy |= entropy.is_none();
        let i = match self.counts.iter().position(|c| c.answer == answer) {
            Some(i) => i,
            None => {
                self.counts.push(Count {
                    answer,
                    ..Default::default()
                });
                self.counts.len() - 1
            }
        };
        let c = &mut self.counts[i];
        c.votes += 1;
        c.weight += weight;
        c.order = order;
        if let Some(h) = entropy {
            c.entropy_sum += h;
            c.entropy_votes += 1;
            c.confidence_weight += weight / h.max(ENTROPY_FLOOR);
        }
    }

    /// The rule this problem is voted by.
    pub fn applied(&self) -> VoteRule {
        self.rule.applied(!self.missing_entropy && self.votes > 0)
    }

    /// An answer's weight under the applied rule.
    pub fn weight_of(&self, c: &Count) -> f64 {
        match self.applied() {
            VoteRule::Entropy => c.confidence_weight,
            _ => c.weight,
        }
    }

    /// Answers best first under the applied rule.
    pub fn ranked(&self) -> Vec<&Count> {
        let rule = self.applied();
        let entropy = |c: &Count| c.mean_entropy().unwrap_or(f64::INFINITY);
        let mut r: Vec<&Count> = self.counts.iter().collect();
        r.sort_by(|a, b| {
            let by_weight = self.weight_of(b).total_cmp(&self.weight_of(a));
            let by_entropy = match rule {
                VoteRule::CountThenEntropy => entropy(a).total_cmp(&entropy(b)),
                _ => std::cmp::Ordering::Equal,
            };
            by_weight.then(by_entropy).then(a.order.cmp(&b.order))
        });
        r
    }

    pub fn verdict(&self) -> Option<Verdict> {
        let r = self.ranked();
        let first = r.first()?;
        Some(Verdict {
            answer: first.answer,
            votes: first.votes,
            weight: self.weight_of(first),
            runner_up_weight: r.get(1).map_or(0.0, |c| self.weight_of(c)),
            total_weight: r.iter().map(|c| self.weight_of(c)).sum(),
            valid_votes: self.votes,
            rule: self.applied(),
        })
    }

    /// Whether any vote weighed other than 1 (then the trace shows the weights).
    pub fn weighted(&self) -> bool {
        self.counts
            .iter()
            .any(|c| self.weight_of(c) != c.votes as f64)
    }

    /// Whether sampling can stop: the leader cannot be overtaken (nor tied) by the `remaining`
    /// samples, each weighing at most what the applied rule allows one sample; or it holds at
    /// least `agreement` of the planned samples' nominal weight (0 disables that rule).
    pub fn settled(&self, remaining: usize, planned: usize, agreement: f64) -> bool {
        let r = self.ranked();
        let Some(first) = r.first() else {
            return false;
        };
        let mut max = self.max_weight.max(1.0);
        if self.applied() == VoteRule::Entropy {
            max /= ENTROPY_FLOOR;
        }
        let runner_up = r.get(1).map_or(0.0, |c| self.weight_of(c));
        if self.weight_of(first) > runner_up + remaining as f64 * max {
            return true;
        }
        agreement > 0.0 && first.weight >= agreement * planned as f64
    }

    /// `--stop-at N`: some answer has N votes (0 disables it).
    pub fn agreed(&self, stop_at: usize) -> bool {
        stop_at > 0 && self.counts.iter().any(|c| c.votes >= stop_at)
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

    fn scored(rule: VoteRule, votes: &[(u64, f64)]) -> Tally {
        let mut t = Tally::with_rule(1.0, rule);
        for &(a, h) in votes {
            t.add_scored(a, 1.0, Some(h));
        }
        t
    }

    #[test]
    fn a_confident_minority_wins_by_entropy_and_loses_by_count_unless_tied() {
        let votes = [(7, 1.0), (7, 1.2), (3, 0.1)];
        let v = scored(VoteRule::Entropy, &votes).verdict().unwrap();
        assert_eq!((v.answer, v.rule), (3, VoteRule::Entropy));
        assert!((v.weight - 10.0).abs() < 1e-9 && v.margin() > 0.5);
        let v = scored(VoteRule::CountThenEntropy, &votes)
            .verdict()
            .unwrap();
        assert_eq!((v.answer, v.weight), (7, 2.0));
        // Tied on count: the lower entropy wins, although 7 reached its count first.
        let tied = [(7, 1.0), (3, 0.1)];
        assert_eq!(
            scored(VoteRule::CountThenEntropy, &tied)
                .verdict()
                .unwrap()
                .answer,
            3
        );
        assert_eq!(
            scored(VoteRule::Majority, &tied).verdict().unwrap().answer,
            7
        );
        assert_eq!(
            scored(VoteRule::Auto, &votes).applied(),
            VoteRule::CountThenEntropy
        );
    }

    #[test]
    fn without_entropies_every_rule_is_the_majority() {
        let mut t = Tally::with_rule(1.0, VoteRule::Entropy);
        t.add_scored(7, 1.0, Some(1.0));
        t.add_scored(7, 1.0, None);
        t.add_scored(3, 1.0, Some(0.1));
        let v = t.verdict().unwrap();
        assert_eq!((v.answer, v.rule), (7, VoteRule::Majority));
        assert_eq!(VoteRule::Majority.key(), RULE);
        assert_ne!(VoteRule::Auto.key(), RULE);
    }

    #[test]
    fn stop_at_counts_votes_and_entropy_is_hard_to_settle() {
        let t = scored(VoteRule::Entropy, &[(1, 0.5), (1, 0.5), (1, 0.5)]);
        assert!(t.agreed(3) && !t.agreed(4) && !t.agreed(0));
        // One more sample could be near-certain and outweigh three unsure ones.
        assert!(!t.settled(1, 4, 0.0));
        assert!(t.settled(0, 3, 0.0));
    }
}
