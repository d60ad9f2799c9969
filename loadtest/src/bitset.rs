//! A fixed-size bit set over client indexes.

/// Bits `0..len`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// All clear, able to hold `len` bits.
    pub fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// Set bit `i`; returns whether it was already set.
    pub fn set(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        match self.words.get_mut(w) {
            Some(word) => {
                let was = *word & b != 0;
                *word |= b;
                was
            }
            None => false,
        }
    }

    /// Clear bit `i`.
    pub fn clear(&mut self, i: usize) {
        if let Some(word) = self.words.get_mut(i / 64) {
            *word &= !(1u64 << (i % 64));
        }
    }

    /// Whether bit `i` is set.
    pub fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    /// Number of set bits.
    pub fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// `self & other`.
    pub fn and(&self, other: &BitSet) -> BitSet {
        BitSet {
            words: self
                .words
                .iter()
                .zip(&other.words)
                .map(|(a, b)| a & b)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_count_and() {
        let mut a = BitSet::new(130);
        assert!(!a.set(0));
        assert!(a.set(0));
        a.set(129);
        assert!(a.get(129) && !a.get(128));
        assert_eq!(a.count(), 2);
        let mut b = BitSet::new(130);
        b.set(129);
        assert_eq!(a.and(&b).count(), 1);
        a.clear(129);
        assert_eq!(a.count(), 1);
        assert!(!a.set(500)); // out of range is ignored
    }
}
