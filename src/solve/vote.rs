//! Self-consistency voting over sampled answers.
//!
//! The winner is the answer with the most votes; a tie goes to the answer that reached that
//! count first (the earliest sample to complete it), which is deterministic for a given order of
//! completions and favours answers that were found quickly and often.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
    /// (answer, votes, index of the vote that first brought it to its current count)
    pub counts: Vec<(u64, usize, usize)>,
    pub votes: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    pub answer: u64,
    pub votes: usize,
    pub runner_up_votes: usize,
    pub valid_votes: usize,
}

impl Tally {
    pub fn add(&mut self, answer: u64) {
        let order = self.votes;
        self.votes += 1;
        match self.counts.iter_mut().find(|(a, _, _)| *a == answer) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 = order;
            }
            None => self.counts.push((answer, 1, order)),
        }
    }

    fn ranked(&self) -> Vec<(u64, usize, usize)> {
        let mut r = self.counts.clone();
        r.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
        r
    }

    pub fn verdict(&self) -> Option<Verdict> {
        let r = self.ranked();
        let (answer, votes, _) = *r.first()?;
        Some(Verdict {
            answer,
            votes,
            runner_up_votes: r.get(1).map_or(0, |x| x.1),
            valid_votes: self.votes,
        })
    }

    /// Whether sampling can stop: the leader cannot be overtaken by the `remaining` samples,
    /// or it holds at least `agreement` of the samples planned (0 disables that rule).
    pub fn settled(&self, remaining: usize, planned: usize, agreement: f64) -> bool {
        let Some(v) = self.verdict() else {
            return false;
        };
        if v.votes > v.runner_up_votes + remaining {
            return true;
        }
        agreement > 0.0 && v.votes as f64 >= agreement * planned as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_wins_and_ties_go_to_the_first_to_reach_the_count() {
        let mut t = Tally::default();
        for a in [5, 7, 7, 5] {
            t.add(a);
        }
        // 7 reached two votes at vote #2, 5 only at vote #3.
        assert_eq!(t.verdict().unwrap().answer, 7);
        t.add(5);
        assert_eq!(
            t.verdict().unwrap(),
            Verdict {
                answer: 5,
                votes: 3,
                runner_up_votes: 2,
                valid_votes: 5
            }
        );
    }

    #[test]
    fn early_stop_when_the_leader_cannot_be_overtaken() {
        let mut t = Tally::default();
        t.add(3);
        t.add(3);
        assert!(!t.settled(2, 4, 0.0)); // 2 vs 0 with 2 left: could tie
        t.add(3);
        assert!(t.settled(1, 4, 0.0)); // 3 vs 0 with 1 left
        let mut t = Tally::default();
        t.add(1);
        t.add(1);
        assert!(t.settled(6, 8, 0.25)); // holds 2 of 8 planned = 25%
        assert!(!Tally::default().settled(0, 4, 0.5));
    }
}
