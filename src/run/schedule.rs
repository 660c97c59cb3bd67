//! Packing trajectories into variable-length batches: sorted by length (longest first, so memory trouble
//! shows at once and the tail of the run is short work), filled greedily up to a token budget, no padding.

/// Indices of `lengths` grouped into batches of at most `token_budget` tokens (a trajectory longer than
/// the budget gets a batch of its own) and at most `max_seqs` sequences. Deterministic: ties in length keep
/// input order.
pub fn pack_by_length(lengths: &[usize], token_budget: usize, max_seqs: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut tokens = 0usize;
    for i in order {
        let len = lengths[i];
        if !current.is_empty() && (tokens + len > token_budget || current.len() >= max_seqs.max(1)) {
            batches.push(std::mem::take(&mut current));
            tokens = 0;
        }
        current.push(i);
        tokens += len;
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
    fn packs_within_budget_and_keeps_everything() {
        let lengths = [5, 100, 7, 7, 60, 1, 40];
        let b = pack_by_length(&lengths, 64, 16);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &b {
            let t: usize = batch.iter().map(|&i| lengths[i]).sum();
            assert!(t <= 64 || batch.len() == 1, "{batch:?}");
        }
        assert_eq!(b[0], vec![1]); // longer than the budget: alone, first
        assert_eq!(b[1], vec![4]);
        assert_eq!(b[2], vec![6, 2, 3, 0, 5]); // 40+7+7+5+1 = 60
    }

    #[test]
    fn respects_max_seqs() {
        let b = pack_by_length(&[1; 10], 1000, 3);
        assert_eq!(b.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![3, 3, 3, 1]);
    }
}
