//! Never the test problem: which corpus records are the same problem as one of a set (the
//! problems being solved, or evaluation queries). A record is a twin of a problem when it has
//! the same id, the same normalised text (lowercased, every run of punctuation and whitespace
//! folded to one space), or a word 5-gram Jaccard overlap at or above a threshold (a copy with
//! a changed word or two, reformatted LaTeX, an added sentence).
//!
//! Used by `solve --exclude` (twins are never retrieved) and `embed eval-retrieval` (how many
//! queries have a twin in the corpus).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Default `--exclude-overlap`: half the word 5-grams of the two texts (union) shared. Distinct
/// problems of one template ("Find the remainder when ... is divided by 7") stay far below it;
/// a copy with a changed number or an added sentence stays above it.
pub const DEFAULT_OVERLAP: f64 = 0.5;

/// Words per n-gram. Texts shorter than this are one n-gram of all their words.
pub const NGRAM: usize = 5;

/// Why a record is the same problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Twin {
    SameId,
    SameText,
    /// Word n-gram Jaccard overlap at or above the threshold.
    Overlap {
        jaccard: f64,
    },
}

impl Twin {
    /// The bucket this twin is counted in: `same id`, `same text` or `overlap`.
    pub fn kind(&self) -> &'static str {
        match self {
            Twin::SameId => "same id",
            Twin::SameText => "same text",
            Twin::Overlap { .. } => "overlap",
        }
    }
}

/// A record found to be the same problem as `problem` (the id in the set it was checked
/// against).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinMatch {
    pub problem: String,
    #[serde(flatten)]
    pub why: Twin,
}

/// Lowercased words, punctuation and whitespace folded: the text two copies of a problem share.
pub fn normalise(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// FNV-1a hashes of the word n-grams of a normalised text (one n-gram of all words when
/// shorter).
fn grams(normalised: &str) -> HashSet<u64> {
    let words: Vec<&str> = normalised.split(' ').filter(|w| !w.is_empty()).collect();
    let hash = |ws: &[&str]| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in ws.join(" ").bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    if words.len() < NGRAM {
        return (!words.is_empty())
            .then(|| hash(&words))
            .into_iter()
            .collect();
    }
    words.windows(NGRAM).map(hash).collect()
}

/// A set of problems, indexed for twin look-ups: by id, by normalised text, and an inverted
/// index of n-grams (so a look-up touches only problems that share an n-gram).
pub struct TwinIndex {
    names: Vec<String>,
    by_id: HashSet<String>,
    by_text: HashMap<String, usize>,
    sizes: Vec<usize>,
    postings: HashMap<u64, Vec<u32>>,
    overlap: f64,
}

impl TwinIndex {
    /// `(id, text)` problems; `overlap` is the Jaccard threshold (above 1: n-grams never match).
    pub fn new(problems: impl IntoIterator<Item = (String, String)>, overlap: f64) -> Self {
        let mut t = Self {
            names: Vec::new(),
            by_id: HashSet::new(),
            by_text: HashMap::new(),
            sizes: Vec::new(),
            postings: HashMap::new(),
            overlap,
        };
        for (id, text) in problems {
            let row = t.names.len();
            let norm = normalise(&text);
            let g = grams(&norm);
            for h in &g {
                t.postings.entry(*h).or_default().push(row as u32);
            }
            t.sizes.push(g.len());
            t.by_text.entry(norm).or_insert(row);
            t.by_id.insert(id.clone());
            t.names.push(id);
        }
        t
    }

    /// The problems of a file (`id` and `problem`, or `text`; csv, jsonl or parquet).
    pub fn load(path: &Path, overlap: f64) -> Result<Self> {
        let mut problems = Vec::new();
        for record in crate::corpus::records_with_ids(path) {
            let (loc, id, fields) = record?;
            let text = crate::corpus::field_as_text(&fields, "problem")
                .or_else(|| crate::corpus::field_as_text(&fields, "text"))
                .filter(|t| !t.trim().is_empty())
                .with_context(|| format!("{loc}: missing \"problem\" (or \"text\")"))?;
            problems.push((id, text));
        }
        if problems.is_empty() {
            bail!("{}: no problems", path.display());
        }
        Ok(Self::new(problems, overlap))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn overlap(&self) -> f64 {
        self.overlap
    }

    /// The problem of the set that the record `(id, text)` is a twin of, if any: same id first,
    /// then same text, then the highest n-gram overlap at or above the threshold.
    pub fn find(&self, id: &str, text: &str) -> Option<TwinMatch> {
        if self.by_id.contains(id) {
            return Some(TwinMatch {
                problem: id.to_string(),
                why: Twin::SameId,
            });
        }
        let norm = normalise(text);
        if let Some(&row) = self.by_text.get(&norm) {
            return Some(TwinMatch {
                problem: self.names[row].clone(),
                why: Twin::SameText,
            });
        }
        if self.overlap > 1.0 {
            return None;
        }
        let g = grams(&norm);
        let mut shared: HashMap<u32, usize> = HashMap::new();
        for h in &g {
            for &row in self.postings.get(h).map_or(&[][..], Vec::as_slice) {
                *shared.entry(row).or_insert(0) += 1;
            }
        }
        let jaccard =
            |row: u32, s: usize| s as f64 / (g.len() + self.sizes[row as usize] - s) as f64;
        shared
            .into_iter()
            .map(|(row, s)| (jaccard(row, s), row))
            .filter(|&(j, _)| j >= self.overlap)
            .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
            .map(|(jaccard, row)| TwinMatch {
                problem: self.names[row as usize].clone(),
                why: Twin::Overlap { jaccard },
            })
    }
}

/// Twins counted by kind, for the log and reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TwinCounts {
    pub same_id: usize,
    pub same_text: usize,
    pub overlap: usize,
}

impl TwinCounts {
    pub fn add(&mut self, t: &Twin) {
        match t {
            Twin::SameId => self.same_id += 1,
            Twin::SameText => self.same_text += 1,
            Twin::Overlap { .. } => self.overlap += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.same_id + self.same_text + self.overlap
    }

    /// `3 same id, 1 same text, 2 word 5-gram overlap >= 0.5`
    pub fn describe(&self, threshold: f64) -> String {
        format!(
            "{} same id, {} same text, {} word {NGRAM}-gram overlap >= {threshold}",
            self.same_id, self.same_text, self.overlap
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> TwinIndex {
        TwinIndex::new(
            [
                (
                    "p1".to_string(),
                    "Find the remainder when $2^{100}$ is divided by 7.".to_string(),
                ),
                (
                    "p2".to_string(),
                    "A circle of radius 3 is inscribed in a square. What is the area of the \
                     region inside the square but outside the circle?"
                        .to_string(),
                ),
            ],
            DEFAULT_OVERLAP,
        )
    }

    #[test]
    fn normalising_folds_case_punctuation_and_space() {
        assert_eq!(
            normalise("  Find, the  REMAINDER:\n$2^{100}$! "),
            "find the remainder 2 100"
        );
    }

    #[test]
    fn twins_by_id_text_and_overlap() {
        let s = set();
        let by = |id: &str, text: &str| s.find(id, text).map(|m| (m.problem, m.why.kind()));
        assert_eq!(by("p1", "anything"), Some(("p1".into(), "same id")));
        assert_eq!(
            by("x", "find the remainder when 2^{100} is divided by 7"),
            Some(("p1".into(), "same text"))
        );
        let copy = "A circle of radius 3 is inscribed in a square. What is the area of the region \
                    inside the square but outside the circle? Express it in terms of pi.";
        assert_eq!(by("y", copy), Some(("p2".into(), "overlap")));
        // Same template, other numbers and words: a different problem.
        let other = "A circle of radius 5 is inscribed in an equilateral triangle. Find the \
                     perimeter of the triangle.";
        assert_eq!(by("z", other), None);
        assert_eq!(
            by("z", "Find the remainder when 3^50 is divided by 11."),
            None
        );
    }

    #[test]
    fn jaccard_is_exact_and_thresholded() {
        // 6 words: 2 five-grams each; one shared of 3 distinct: Jaccard 1/3.
        let t = TwinIndex::new([("a".to_string(), "w1 w2 w3 w4 w5 w6".to_string())], 0.3);
        match t.find("b", "w1 w2 w3 w4 w5 x").unwrap().why {
            Twin::Overlap { jaccard } => assert!((jaccard - 1.0 / 3.0).abs() < 1e-12),
            other => panic!("{other:?}"),
        }
        let t = TwinIndex::new([("a".to_string(), "w1 w2 w3 w4 w5 w6".to_string())], 0.34);
        assert!(t.find("b", "w1 w2 w3 w4 w5 x").is_none());
    }
}
