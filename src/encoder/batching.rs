//! Length-sorted batching under two budgets: texts of similar length share a batch so little
//! compute goes to padding, no batch's padded size exceeds the token budget, and no batch's
//! attention scores exceed the attention budget.

use super::attention::AttentionBlocks;

/// What one forward pass may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchBudget {
    /// Padded tokens: `items x longest`.
    pub tokens: usize,
    /// Bytes of attention scores held at a time: for each item, `heads x min(longest, block
    /// rows) x longest x 4` (items are padded to the batch's longest).
    pub attention_bytes: usize,
    /// Query heads of the model.
    pub heads: usize,
    /// How the model computes attention (BERT: unblocked).
    pub blocks: AttentionBlocks,
}

impl BatchBudget {
    /// A budget on padded tokens only.
    pub fn tokens_only(tokens: usize) -> Self {
        Self {
            tokens,
            attention_bytes: usize::MAX,
            heads: 1,
            blocks: AttentionBlocks::UNBLOCKED,
        }
    }

    /// Attention score bytes of one sequence padded to `len` tokens.
    pub fn score_bytes(&self, len: usize) -> usize {
        self.blocks.score_bytes(self.heads, len)
    }

    /// Whether `items` sequences padded to `longest` fit both budgets.
    pub fn fits(&self, items: usize, longest: usize) -> bool {
        longest.saturating_mul(items) <= self.tokens
            && self.score_bytes(longest).saturating_mul(items) <= self.attention_bytes
    }
}

/// Group item indices into batches. Items are taken longest first; a batch closes when one more
/// item would push it over either budget. An item over budget on its own gets a batch of its
/// own. Every index appears exactly once.
pub fn plan_batches(lengths: &[usize], budget: &BatchBudget) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Stable sort, longest first: a deterministic plan, and the biggest batch runs first so an
    // out-of-memory shows up at once rather than at the end of a long job.
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let len = lengths[i].max(1);
        let new_longest = longest.max(len);
        if !current.is_empty() && !budget.fits(current.len() + 1, new_longest) {
            batches.push(std::mem::take(&mut current));
            longest = 0;
        }
        longest = longest.max(len);
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_plan(lengths: &[usize], budget: &BatchBudget) -> Vec<Vec<usize>> {
        let batches = plan_batches(lengths, budget);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i].max(1)).max().unwrap();
            let tokens = longest * b.len();
            let scores = budget.score_bytes(longest) * b.len();
            assert!(
                b.len() == 1 || (tokens <= budget.tokens && scores <= budget.attention_bytes),
                "batch over budget ({tokens} tokens, {scores} score bytes): {b:?}"
            );
        }
        batches
    }

    #[test]
    fn every_index_once_and_budget_respected() {
        let lengths: Vec<usize> = (0..500).map(|i| (i * 37) % 300 + 1).collect();
        check_plan(&lengths, &BatchBudget::tokens_only(1000));
    }

    /// xorshift64*: a seeded generator, so a failure reproduces.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn random_length_mixes_respect_both_budgets() {
        let mut state = 0x5eed_u64;
        for case in 0..300 {
            let n = (next(&mut state) % 200) as usize;
            // Mostly short texts with a tail of long ones, up to 32k tokens.
            let lengths: Vec<usize> = (0..n)
                .map(|_| match next(&mut state) % 10 {
                    0 => (next(&mut state) % 32_768) as usize,
                    1..=3 => (next(&mut state) % 4096) as usize,
                    _ => (next(&mut state) % 512) as usize,
                })
                .collect();
            let rows = [None, Some(64), Some(512), Some(1024)][case % 4];
            let budget = BatchBudget {
                tokens: 1 + (next(&mut state) % 65_536) as usize,
                attention_bytes: 1 + (next(&mut state) % (8 << 30)) as usize,
                heads: 1 + (next(&mut state) % 32) as usize,
                blocks: AttentionBlocks { rows },
            };
            check_plan(&lengths, &budget);
        }
    }

    #[test]
    fn attention_budget_splits_batches_the_token_budget_allows() {
        // 8 texts of 4096 tokens fit 32768 padded tokens; with 32 heads and 512-row blocks each
        // holds 32 x 512 x 4096 x 4 = 256 MiB of scores, so a 1 GiB budget takes 4 at a time.
        let budget = BatchBudget {
            tokens: 32_768,
            attention_bytes: 1 << 30,
            heads: 32,
            blocks: AttentionBlocks { rows: Some(512) },
        };
        let batches = check_plan(&[4096; 8], &budget);
        assert_eq!(batches.len(), 2);
        assert!(batches.iter().all(|b| b.len() == 4));
        // Unblocked, one 4096-token text alone holds 2 GiB: over budget, so it runs alone.
        let unblocked = BatchBudget {
            blocks: AttentionBlocks::UNBLOCKED,
            ..budget
        };
        assert_eq!(check_plan(&[4096; 3], &unblocked).len(), 3);
    }

    #[test]
    fn oversized_item_runs_alone() {
        let batches = plan_batches(&[5000, 10, 10], &BatchBudget::tokens_only(100));
        assert_eq!(batches[0], vec![0]);
        assert_eq!(batches[1], vec![1, 2]);
    }

    #[test]
    fn empty_input_gives_no_batches() {
        assert!(plan_batches(&[], &BatchBudget::tokens_only(100)).is_empty());
    }
}
