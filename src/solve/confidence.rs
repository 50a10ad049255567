//! How sure a sample was, from the token log-probabilities the server returns
//! (`logprobs: true, top_logprobs: K` in chat completions; vLLM, SGLang and llama.cpp send them
//! streamed in `choices[0].logprobs.content`, one entry per token;
//! llama.cpp merges the byte pieces of one character into one entry, so `tokens` may be a little
//! below the completion's token count).
//!
//! Per token: the entropy of the top-K alternatives, renormalised to sum to one (a server
//! returns only K of the vocabulary, so the rest of the mass is unknown; renormalising keeps the
//! value a true entropy, between 0 and ln K), and the chosen token's log-probability. Per
//! sample: their means. A low mean entropy is a confident sample; the `entropy` vote weighs
//! each sample by its inverse (the AIMO 3 winners' confidence weighting).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Sums over the tokens seen so far (all rounds of a sample add into one).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TokenStats {
    /// Tokens that came with a finite log-probability.
    pub tokens: usize,
    pub logprob_sum: f64,
    /// Tokens that came with top-K alternatives (their entropy is known).
    pub entropy_tokens: usize,
    pub entropy_sum: f64,
    /// The most alternatives one token came with.
    pub top_k: usize,
}

/// A sample's confidence as written to its trace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// Tokens with log-probabilities.
    pub tokens: usize,
    /// Mean entropy (nats) of the top-K alternatives per token; None without alternatives.
    pub mean_entropy: Option<f64>,
    /// Mean log-probability of the chosen tokens.
    pub mean_logprob: f64,
    /// K: alternatives per token the server returned.
    pub top_k: usize,
}

impl TokenStats {
    /// Add the tokens of one `logprobs` object (`{"content": [{"logprob", "top_logprobs"}]}`),
    /// streamed or whole. Anything else (null, a missing field) adds nothing.
    pub fn add_logprobs(&mut self, logprobs: &Value) {
        let Some(tokens) = logprobs.get("content").and_then(Value::as_array) else {
            return;
        };
        for t in tokens {
            if let Some(lp) = t
                .get("logprob")
                .and_then(Value::as_f64)
                .filter(|l| l.is_finite())
            {
                self.tokens += 1;
                self.logprob_sum += lp;
            }
            let top: Vec<f64> = t
                .get("top_logprobs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| a.get("logprob").and_then(Value::as_f64))
                .collect();
            if let Some(h) = entropy(&top) {
                self.entropy_tokens += 1;
                self.entropy_sum += h;
                self.top_k = self.top_k.max(top.len());
            }
        }
    }

    /// Another round's tokens (a tool continuation, the conclusion) into this sample's.
    pub fn merge(&mut self, other: &TokenStats) {
        self.tokens += other.tokens;
        self.logprob_sum += other.logprob_sum;
        self.entropy_tokens += other.entropy_tokens;
        self.entropy_sum += other.entropy_sum;
        self.top_k = self.top_k.max(other.top_k);
    }

    /// The means, or None when no token came with a log-probability.
    pub fn summary(&self) -> Option<Confidence> {
        if self.tokens == 0 && self.entropy_tokens == 0 {
            return None;
        }
        Some(Confidence {
            tokens: self.tokens.max(self.entropy_tokens),
            mean_entropy: (self.entropy_tokens > 0)
                .then(|| self.entropy_sum / self.entropy_tokens as f64),
            mean_logprob: self.logprob_sum / self.tokens.max(1) as f64,
            top_k: self.top_k,
        })
    }
}

/// Entropy (nats) of the distribution the log-probabilities give, renormalised over them; None
/// when there is none finite.
pub fn entropy(logprobs: &[f64]) -> Option<f64> {
    let finite: Vec<f64> = logprobs.iter().copied().filter(|l| l.is_finite()).collect();
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if finite.is_empty() {
        return None;
    }
    // Shifted by the largest for numerical safety; the shift cancels in the normalisation.
    let weights: Vec<f64> = finite.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = weights.iter().sum();
    let h = weights
        .iter()
        .map(|w| w / z)
        .filter(|p| *p > 0.0)
        .map(|p| -p * p.ln())
        .sum::<f64>();
    Some(h.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_top_k_is_renormalised() {
        assert_eq!(entropy(&[0.0]), Some(0.0));
        let two = entropy(&[(0.5f64).ln(), (0.5f64).ln()]).unwrap();
        assert!((two - std::f64::consts::LN_2).abs() < 1e-12);
        // Only part of the mass returned: the same as a uniform pair after renormalising.
        let part = entropy(&[(0.1f64).ln(), (0.1f64).ln()]).unwrap();
        assert!((part - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(entropy(&[f64::NEG_INFINITY]), None);
        assert_eq!(entropy(&[]), None);
    }

    #[test]
    fn stats_sum_over_tokens_and_rounds() {
        let lp = serde_json::json!({"content": [
            {"token": "a", "logprob": -0.5, "top_logprobs": [
                {"token": "a", "logprob": (0.5f64).ln()}, {"token": "b", "logprob": (0.5f64).ln()}]},
            {"token": "b", "logprob": -1.5, "top_logprobs": [{"token": "b", "logprob": 0.0}]},
            {"token": "c", "logprob": null}
        ]});
        let mut s = TokenStats::default();
        s.add_logprobs(&lp);
        s.add_logprobs(&Value::Null);
        let c = s.summary().unwrap();
        assert_eq!((c.tokens, c.top_k), (2, 2));
        assert!((c.mean_logprob + 1.0).abs() < 1e-12);
        assert!((c.mean_entropy.unwrap() - std::f64::consts::LN_2 / 2.0).abs() < 1e-12);
        let mut all = TokenStats::default();
        all.merge(&s);
        all.merge(&s);
        assert_eq!(all.summary().unwrap().tokens, 4);
        assert_eq!(TokenStats::default().summary(), None);
    }
}
