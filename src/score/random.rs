//! The Random baseline (Appendix C.2: "sample B trajectories uniformly without replacement", seed 42 in the
//! paper) as a score: each candidate gets an independent uniform key in [0, 1) computed from
//! `(seed, problem_id, candidate_id)` alone, and selecting the top B keys is a uniform sample of B
//! candidates without replacement. Being a pure function of the ids, it does not depend on pool order,
//! on which other candidates were skipped, or on how the work was sharded.
//!
//! key = splitmix64_mix(splitmix64_mix(splitmix64_mix(seed) ⊕ problem_id) ⊕ candidate_id) >> 11, / 2^53
//! (ids as two's-complement u64). It is not numpy's generator, so the paper's exact draw is not
//! reproduced, only its distribution.

/// The splitmix64 output function (Steele et al.): a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// The candidate's random key in [0, 1).
pub fn random_key(seed: u64, problem_id: i64, candidate_id: i64) -> f64 {
    let h = mix64(mix64(mix64(seed) ^ problem_id as u64) ^ candidate_id as u64);
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_in_range_and_seed_dependent() {
        let a = random_key(42, 7, 3);
        assert_eq!(a, random_key(42, 7, 3));
        assert!((0.0..1.0).contains(&a));
        assert_ne!(a, random_key(43, 7, 3));
        assert_ne!(a, random_key(42, 3, 7));
        // Roughly uniform: the mean of many keys is near 1/2 and every top-1 index occurs.
        let mut wins = [0usize; 4];
        let mut sum = 0.0;
        for pid in 0..4000 {
            let keys: Vec<f64> = (0..4).map(|c| random_key(42, pid, c)).collect();
            sum += keys.iter().sum::<f64>();
            let best = (0..4).max_by(|&i, &j| keys[i].partial_cmp(&keys[j]).unwrap()).unwrap();
            wins[best] += 1;
        }
        assert!((sum / 16000.0 - 0.5).abs() < 0.01);
        assert!(wins.iter().all(|&w| (850..1150).contains(&w)), "{wins:?}");
    }
}
