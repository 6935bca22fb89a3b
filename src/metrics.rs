//! Binary-classification metrics and operating-point selection, in plain Rust.
//!
//! Labels are 0 (not cyber) or 1 (cyber); a row is predicted positive when its probability is
//! `>= threshold`, exactly as [`crate::Classifier`] labels it. Precision with no predicted
//! positive, and F1 with precision and recall both 0, are 0 (scikit-learn's `zero_division=0`).

use crate::error::{Error, Result};

/// Counts of a binary confusion matrix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConfusionMatrix {
    /// Cyber rows predicted cyber.
    pub true_positives: u64,
    /// Non-cyber rows predicted cyber.
    pub false_positives: u64,
    /// Non-cyber rows predicted non-cyber.
    pub true_negatives: u64,
    /// Cyber rows predicted non-cyber.
    pub false_negatives: u64,
}

impl ConfusionMatrix {
    /// Counts the outcomes of `probability >= threshold` against `labels`.
    pub fn new(probabilities: &[f32], labels: &[u8], threshold: f32) -> ConfusionMatrix {
        let mut m = ConfusionMatrix::default();
        for (&p, &label) in probabilities.iter().zip(labels) {
            match (label != 0, p >= threshold) {
                (true, true) => m.true_positives += 1,
                (false, true) => m.false_positives += 1,
                (false, false) => m.true_negatives += 1,
                (true, false) => m.false_negatives += 1,
            }
        }
        m
    }

    /// Rows counted.
    pub fn total(&self) -> u64 {
        self.true_positives + self.false_positives + self.true_negatives + self.false_negatives
    }

    /// Share of rows labelled correctly.
    pub fn accuracy(&self) -> f64 {
        ratio(self.true_positives + self.true_negatives, self.total())
    }

    /// Share of predicted-cyber rows that are cyber.
    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    /// Share of cyber rows predicted cyber.
    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        // 2TP / (2TP + FP + FN) is the harmonic mean without the rounding of two divisions.
        ratio(
            2 * self.true_positives,
            2 * self.true_positives + self.false_positives + self.false_negatives,
        )
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Everything the model card reports for one threshold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    /// The threshold the labels were made with.
    pub threshold: f32,
    /// See [`ConfusionMatrix::accuracy`].
    pub accuracy: f64,
    /// See [`ConfusionMatrix::precision`].
    pub precision: f64,
    /// See [`ConfusionMatrix::recall`].
    pub recall: f64,
    /// See [`ConfusionMatrix::f1`].
    pub f1: f64,
    /// Area under the ROC curve; independent of the threshold.
    pub auc: f64,
    /// The counts behind the ratios.
    pub confusion: ConfusionMatrix,
}

impl Metrics {
    /// Scores `probabilities` against `labels` (0 or 1) at `threshold`.
    ///
    /// Fails when the lengths differ, a label is not 0 or 1, a probability is not finite, or
    /// either class is absent (AUC is undefined then).
    pub fn compute(probabilities: &[f32], labels: &[u8], threshold: f32) -> Result<Metrics> {
        check(probabilities, labels)?;
        let confusion = ConfusionMatrix::new(probabilities, labels, threshold);
        Ok(Metrics {
            threshold,
            accuracy: confusion.accuracy(),
            precision: confusion.precision(),
            recall: confusion.recall(),
            f1: confusion.f1(),
            auc: roc_auc(probabilities, labels)?,
            confusion,
        })
    }
}

fn check(probabilities: &[f32], labels: &[u8]) -> Result<()> {
    if probabilities.len() != labels.len() {
        return Err(Error::invalid_argument(format!(
            "{} probabilities but {} labels",
            probabilities.len(),
            labels.len()
        )));
    }
    if let Some(i) = labels.iter().position(|&l| l > 1) {
        return Err(Error::invalid_argument(format!(
            "label {i} is {}; labels must be 0 or 1",
            labels[i]
        )));
    }
    if let Some(i) = probabilities.iter().position(|p| !p.is_finite()) {
        return Err(Error::invalid_argument(format!(
            "probability {i} is {}; every score must be finite",
            probabilities[i]
        )));
    }
    let positives = labels.iter().filter(|&&l| l == 1).count();
    if positives == 0 || positives == labels.len() {
        return Err(Error::invalid_argument(format!(
            "{positives} of {} labels are positive; metrics need both classes",
            labels.len()
        )));
    }
    Ok(())
}

/// Area under the ROC curve by the rank (Mann–Whitney U) method; tied scores share their
/// average rank, so a tie between a positive and a negative counts one half.
///
/// Fails on the conditions of [`Metrics::compute`].
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> Result<f64> {
    check(scores, labels)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives. Ranks are kept doubled so they
    // stay integers: a tie group spanning ranks i+1..=j has average rank (i+1+j)/2.
    let mut doubled_rank_sum: u128 = 0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let positives_in_group = order[i..j].iter().filter(|&&k| labels[k] == 1).count() as u128;
        doubled_rank_sum += positives_in_group * (i as u128 + 1 + j as u128);
        i = j;
    }
    let positives = labels.iter().filter(|&&l| l == 1).count() as u128;
    let negatives = labels.len() as u128 - positives;
    // U = R - P(P+1)/2; doubled throughout, then divided once at the end.
    let doubled_u = doubled_rank_sum - positives * (positives + 1);
    Ok(doubled_u as f64 / (2 * positives * negatives) as f64)
}

/// What a threshold is chosen for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// The lowest threshold whose precision is at least this (most recall at that precision).
    Precision(f64),
    /// The highest threshold whose recall is at least this (the fewest false positives at that
    /// recall). At 0, a threshold above every score (or 1, when a score is 1 already): nothing
    /// need be called cyber.
    Recall(f64),
    /// The threshold with the highest F1 (the highest such threshold on ties).
    MaxF1,
}

/// Picks a threshold on labelled (validation) data for `target`.
///
/// The threshold returned sits halfway between the lowest score labelled positive and the next
/// lower score, so rounding differences between backends do not move rows across it; a cut that
/// takes in every row sits halfway to 0, and one that takes in none (recall 0) halfway to 1 (at
/// most 1).
/// Returns `Ok(None)` when no threshold reaches the target. Fails on the conditions of
/// [`Metrics::compute`].
pub fn choose_threshold(scores: &[f32], labels: &[u8], target: Target) -> Result<Option<f32>> {
    check(scores, labels)?;
    if let Target::Precision(x) | Target::Recall(x) = target
        && !(0.0..=1.0).contains(&x)
    {
        return Err(Error::invalid_argument(format!(
            "target is {x}; expected a number in [0, 1]"
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // Highest score first: lowering the threshold past each distinct score adds that tie group.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    if target == Target::Recall(0.0) {
        // Recall 0 is met before any row is taken in: halfway from the highest score to 1, or 1
        // itself, the highest threshold there is, when nothing up to 1 lies above that score
        // (then rows scored 1 are still taken in).
        return Ok(Some(cut_between(1.0, scores[order[0]])));
    }
    let positives = labels.iter().filter(|&&l| l == 1).count() as u64;
    let mut matrix = ConfusionMatrix {
        true_negatives: labels.len() as u64 - positives,
        false_negatives: positives,
        ..ConfusionMatrix::default()
    };
    // (index in `order` where the tie group ends, score to beat) of the best cut so far.
    let mut best: Option<(usize, f64)> = None;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] == 1 {
                matrix.true_positives += 1;
                matrix.false_negatives -= 1;
            } else {
                matrix.false_positives += 1;
                matrix.true_negatives -= 1;
            }
            j += 1;
        }
        match target {
            Target::Precision(p) if matrix.precision() >= p => best = Some((j, 0.0)),
            Target::Recall(r) if matrix.recall() >= r => {
                best = Some((j, 0.0));
                break;
            }
            Target::MaxF1 => {
                let f1 = matrix.f1();
                if best.is_none_or(|(_, top)| f1 > top) {
                    best = Some((j, f1));
                }
            }
            _ => {}
        }
        i = j;
    }
    Ok(best.map(|(end, _)| {
        let lowest_in = scores[order[end - 1]];
        match order.get(end) {
            // Every row taken in: halfway to 0, the lowest probability (exact in f32, or 0); a
            // score at or below 0 is not a probability, and the cut stays on it.
            None if lowest_in > 0.0 => lowest_in / 2.0,
            None => lowest_in,
            Some(&next) => cut_between(lowest_in, scores[next]),
        }
    }))
}

/// A threshold above `below` and at most `above`: halfway between them, or `above` itself where
/// the float32 midpoint rounds onto either.
fn cut_between(above: f32, below: f32) -> f32 {
    let mid = ((f64::from(above) + f64::from(below)) / 2.0) as f32;
    if mid > below && mid <= above {
        mid
    } else {
        above
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_matrix_and_ratios() {
        let p = [0.9, 0.8, 0.4, 0.3, 0.6, 0.1];
        let y = [1, 1, 1, 0, 0, 0];
        let m = Metrics::compute(&p, &y, 0.5).unwrap();
        assert_eq!(
            m.confusion,
            ConfusionMatrix {
                true_positives: 2,
                false_positives: 1,
                true_negatives: 2,
                false_negatives: 1
            }
        );
        assert_eq!(m.accuracy, 4.0 / 6.0);
        assert_eq!(m.precision, 2.0 / 3.0);
        assert_eq!(m.recall, 2.0 / 3.0);
        assert_eq!(m.f1, 2.0 / 3.0);
        // Positives 0.9, 0.8, 0.4 against negatives 0.6, 0.3, 0.1: 8 of 9 pairs ordered right.
        assert_eq!(m.auc, 8.0 / 9.0);
    }

    #[test]
    fn threshold_is_inclusive() {
        let m = ConfusionMatrix::new(&[0.5, 0.49], &[1, 0], 0.5);
        assert_eq!((m.true_positives, m.true_negatives), (1, 1));
    }

    #[test]
    fn auc_counts_ties_as_one_half() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[1, 0]).unwrap(), 0.5);
        // One positive tied with one of two negatives, above the other: (1 + 0.5) / 2.
        assert_eq!(roc_auc(&[0.7, 0.7, 0.2], &[1, 0, 0]).unwrap(), 0.75);
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &[0, 0, 1, 1]).unwrap(), 1.0);
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3, 0.4], &[1, 1, 0, 0]).unwrap(), 0.0);
    }

    #[test]
    fn auc_matches_pair_counting() {
        // A deterministic pseudo-random set with many ties, checked against the O(n²) definition.
        let mut state = 12345u32;
        let mut next = || {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            state >> 16
        };
        let scores: Vec<f32> = (0..300).map(|_| (next() % 20) as f32 / 20.0).collect();
        let labels: Vec<u8> = (0..300).map(|_| u8::from(next() % 3 == 0)).collect();
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for (i, &yi) in labels.iter().enumerate() {
            for (j, &yj) in labels.iter().enumerate() {
                if yi == 1 && yj == 0 {
                    pairs += 1.0;
                    wins += match scores[i].partial_cmp(&scores[j]).unwrap() {
                        std::cmp::Ordering::Greater => 1.0,
                        std::cmp::Ordering::Equal => 0.5,
                        std::cmp::Ordering::Less => 0.0,
                    };
                }
            }
        }
        let auc = roc_auc(&scores, &labels).unwrap();
        assert!(
            (auc - wins / pairs).abs() < 1e-12,
            "{auc} vs {}",
            wins / pairs
        );
    }

    #[test]
    fn zero_division_is_zero() {
        let m = Metrics::compute(&[0.1, 0.2], &[1, 0], 0.5).unwrap();
        assert_eq!((m.precision, m.recall, m.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(Metrics::compute(&[0.1], &[1, 0], 0.5).is_err());
        assert!(Metrics::compute(&[0.1, 0.2], &[1, 2], 0.5).is_err());
        assert!(Metrics::compute(&[0.1, 0.2], &[1, 1], 0.5).is_err());
        assert!(Metrics::compute(&[f32::NAN, 0.2], &[1, 0], 0.5).is_err());
        assert!(choose_threshold(&[0.1, 0.2], &[1, 0], Target::Precision(1.5)).is_err());
    }

    #[test]
    fn thresholds_for_each_target() {
        let p = [0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3];
        let y = [1, 1, 0, 1, 0, 1, 0, 0];
        let cases = [
            // Precision 1 holds down to 0.9; the cut sits between 0.9 and 0.8.
            (Target::Precision(1.0), 0.85),
            // Precision 0.75 is reached again at 0.7 (3 of 4); the lowest such cut wins.
            (Target::Precision(0.75), 0.65),
            // Recall 0.75 first holds at 0.7.
            (Target::Recall(0.75), 0.65),
            // F1: 2/3 down to 0.9, 6/8 down to 0.7 (TP 3, FP 1, FN 1), 8/10 down to 0.5 (TP 4, FP 2).
            (Target::MaxF1, 0.45),
            // Recall 1 needs every positive: down to 0.5.
            (Target::Recall(1.0), 0.45),
        ];
        for (target, expected) in cases {
            let t = choose_threshold(&p, &y, target).unwrap().unwrap();
            assert!((t - expected).abs() < 1e-6, "{target:?}: {t}");
            let matrix = ConfusionMatrix::new(&p, &y, t);
            match target {
                Target::Precision(goal) => assert!(matrix.precision() >= goal),
                Target::Recall(goal) => assert!(matrix.recall() >= goal),
                Target::MaxF1 => assert_eq!(matrix.f1(), 0.8),
            }
        }
    }

    #[test]
    fn the_ends_of_the_range_keep_a_margin_too() {
        let p = [0.9, 0.4, 0.2];
        let y = [0, 1, 1];
        // Recall 1 takes in every row: halfway to 0, not on the lowest score, where a backend
        // rounding that row down would drop it.
        assert_eq!(
            choose_threshold(&p, &y, Target::Recall(1.0)).unwrap(),
            Some(0.1)
        );
        assert_eq!(
            choose_threshold(&p, &y, Target::Precision(0.0)).unwrap(),
            Some(0.1)
        );
        assert_eq!(
            choose_threshold(&[0.0, 0.5], &[1, 0], Target::Recall(1.0)).unwrap(),
            Some(0.0)
        );
        // Not probabilities: a cut on a negative lowest score stays on it, below none.
        assert_eq!(
            choose_threshold(&[-1.0, 2.0], &[1, 0], Target::Recall(1.0)).unwrap(),
            Some(-1.0)
        );
        // Recall 0 takes in no row: halfway to 1 above the highest score, or 1 itself.
        assert_eq!(
            choose_threshold(&p, &y, Target::Recall(0.0)).unwrap(),
            Some(0.95)
        );
        let t = choose_threshold(&p, &y, Target::Recall(0.0))
            .unwrap()
            .unwrap();
        assert_eq!(ConfusionMatrix::new(&p, &y, t).true_positives, 0);
        assert_eq!(
            choose_threshold(&[1.0, 0.5], &[1, 0], Target::Recall(0.0)).unwrap(),
            Some(1.0)
        );
    }

    #[test]
    fn unreachable_precision_is_none() {
        let t = choose_threshold(&[0.9, 0.1], &[0, 1], Target::Precision(0.9)).unwrap();
        assert_eq!(t, None);
    }

    #[test]
    fn ties_move_together() {
        // The two 0.8 rows cannot be split; with both in precision is 1/2.
        let t = choose_threshold(&[0.8, 0.8, 0.2], &[1, 0, 0], Target::Precision(0.6)).unwrap();
        assert_eq!(t, None);
    }
}
