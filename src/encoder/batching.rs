//! Length-sorted, token-budget batching: texts of similar length share a batch so little compute
//! goes to padding, and no batch's padded size exceeds the budget.

/// Group item indices into batches. Items are taken longest first; a batch closes when one more
/// item would push `items x longest` (its padded token count) over `max_batch_tokens`. An item
/// longer than the budget gets a batch of its own. Every index appears exactly once.
pub fn plan_batches(lengths: &[usize], max_batch_tokens: usize) -> Vec<Vec<usize>> {
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
        if !current.is_empty() && new_longest * (current.len() + 1) > max_batch_tokens {
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

    #[test]
    fn every_index_once_and_budget_respected() {
        let lengths: Vec<usize> = (0..500).map(|i| (i * 37) % 300 + 1).collect();
        let batches = plan_batches(&lengths, 1000);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(
                b.len() == 1 || longest * b.len() <= 1000,
                "batch over budget: {b:?}"
            );
        }
    }

    #[test]
    fn oversized_item_runs_alone() {
        let batches = plan_batches(&[5000, 10, 10], 100);
        assert_eq!(batches[0], vec![0]);
        assert_eq!(batches[1], vec![1, 2]);
    }

    #[test]
    fn empty_input_gives_no_batches() {
        assert!(plan_batches(&[], 100).is_empty());
    }
}
