//! A fixed-capacity set of disjoint physical address ranges.
//!
//! The frame allocator and the boot memory map need range arithmetic before
//! any heap exists, so this type never allocates.

/// Half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
}

impl Range {
    pub const fn new(start: u64, end: u64) -> Self {
        Range { start, end }
    }

    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    pub const fn overlaps(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside this range.
    pub const fn contains_range(&self, other: &Range) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

pub const CAPACITY: usize = 128;

/// Error returned when a set would need more than [`CAPACITY`] ranges.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// Sorted, disjoint, non-adjacent ranges.
#[derive(Clone)]
pub struct RangeSet {
    ranges: [Range; CAPACITY],
    len: usize,
}

impl Default for RangeSet {
    fn default() -> Self {
        Self::new()
    }
}

impl RangeSet {
    pub const fn new() -> Self {
        RangeSet {
            ranges: [Range::new(0, 0); CAPACITY],
            len: 0,
        }
    }

    pub fn as_slice(&self) -> &[Range] {
        &self.ranges[..self.len]
    }

    pub fn total(&self) -> u64 {
        self.as_slice().iter().map(Range::len).sum()
    }

    /// Adds `r`, merging it with ranges it overlaps or touches.
    pub fn add(&mut self, r: Range) -> Result<(), Full> {
        if r.is_empty() {
            return Ok(());
        }
        let mut merged = r;
        let mut out = [Range::default(); CAPACITY];
        let mut n = 0;
        let mut placed = false;
        for &x in self.as_slice() {
            if x.end < merged.start {
                push(&mut out, &mut n, x)?;
            } else if merged.end < x.start {
                if !placed {
                    push(&mut out, &mut n, merged)?;
                    placed = true;
                }
                push(&mut out, &mut n, x)?;
            } else {
                merged = Range::new(merged.start.min(x.start), merged.end.max(x.end));
            }
        }
        if !placed {
            push(&mut out, &mut n, merged)?;
        }
        self.ranges = out;
        self.len = n;
        Ok(())
    }

    /// Removes every address of `r` from the set.
    pub fn remove(&mut self, r: Range) -> Result<(), Full> {
        if r.is_empty() {
            return Ok(());
        }
        let mut out = [Range::default(); CAPACITY];
        let mut n = 0;
        for &x in self.as_slice() {
            if !x.overlaps(&r) {
                push(&mut out, &mut n, x)?;
                continue;
            }
            if x.start < r.start {
                push(&mut out, &mut n, Range::new(x.start, r.start))?;
            }
            if r.end < x.end {
                push(&mut out, &mut n, Range::new(r.end, x.end))?;
            }
        }
        self.ranges = out;
        self.len = n;
        Ok(())
    }

    /// Keeps only whole `align`-sized blocks of every range.
    pub fn shrink_to_alignment(&mut self, align: u64) {
        let mut n = 0;
        for i in 0..self.len {
            let x = self.ranges[i];
            let start = align_up(x.start, align);
            let end = align_down(x.end, align);
            if start < end {
                self.ranges[n] = Range::new(start, end);
                n += 1;
            }
        }
        self.len = n;
    }

    /// Takes `size` bytes aligned to `align` from the lowest range that has
    /// room, and returns their start.
    pub fn take(&mut self, size: u64, align: u64) -> Option<u64> {
        self.take_where(size, align, |_| true)
    }

    /// Like [`take`](Self::take), restricted to blocks that end at or below `limit`.
    pub fn take_below(&mut self, size: u64, align: u64, limit: u64) -> Option<u64> {
        self.take_where(size, align, |r| r.end <= limit)
    }

    fn take_where(&mut self, size: u64, align: u64, ok: impl Fn(&Range) -> bool) -> Option<u64> {
        if size == 0 {
            return None;
        }
        let found = self.as_slice().iter().find_map(|x| {
            let start = align_up(x.start, align);
            let block = Range::new(start, start.checked_add(size)?);
            (block.end <= x.end && ok(&block)).then_some(block)
        })?;
        self.remove(found).ok()?;
        Some(found.start)
    }
}

fn push(out: &mut [Range; CAPACITY], n: &mut usize, r: Range) -> Result<(), Full> {
    if *n == CAPACITY {
        return Err(Full);
    }
    out[*n] = r;
    *n += 1;
    Ok(())
}

pub const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

pub const fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rs: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::new();
        for &(a, b) in rs {
            s.add(Range::new(a, b)).unwrap();
        }
        s
    }

    fn pairs(s: &RangeSet) -> Vec<(u64, u64)> {
        s.as_slice().iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn add_merges_overlapping_and_touching() {
        let s = set(&[(10, 20), (30, 40), (20, 25), (35, 50), (0, 5)]);
        assert_eq!(pairs(&s), vec![(0, 5), (10, 25), (30, 50)]);
        let s = set(&[(10, 20), (0, 100)]);
        assert_eq!(pairs(&s), vec![(0, 100)]);
    }

    #[test]
    fn remove_splits() {
        let mut s = set(&[(0, 100)]);
        s.remove(Range::new(10, 20)).unwrap();
        s.remove(Range::new(90, 200)).unwrap();
        s.remove(Range::new(0, 1)).unwrap();
        assert_eq!(pairs(&s), vec![(1, 10), (20, 90)]);
        assert_eq!(s.total(), 79);
    }

    #[test]
    fn alignment_drops_partial_pages() {
        let mut s = set(&[(0x100, 0x2100), (0x3000, 0x3800)]);
        s.shrink_to_alignment(0x1000);
        assert_eq!(pairs(&s), vec![(0x1000, 0x2000)]);
    }

    #[test]
    fn take_honours_alignment_and_limit() {
        let mut s = set(&[(0x1000, 0x5000), (0x20_0000, 0x60_0000)]);
        assert_eq!(s.take(0x20_0000, 0x20_0000), Some(0x20_0000));
        assert_eq!(s.take(0x1000, 0x1000), Some(0x1000));
        assert_eq!(s.take_below(0x1000, 0x1000, 0x3000), Some(0x2000));
        assert_eq!(s.take_below(0x1000, 0x1000, 0x3000), None);
        assert_eq!(s.take(0x100_0000, 0x1000), None);
        assert_eq!(pairs(&s), vec![(0x3000, 0x5000), (0x40_0000, 0x60_0000)]);
    }

    #[test]
    fn capacity_is_reported_not_overrun() {
        let mut s = RangeSet::new();
        for i in 0..CAPACITY as u64 {
            s.add(Range::new(i * 10, i * 10 + 5)).unwrap();
        }
        assert_eq!(s.add(Range::new(100_000, 100_005)), Err(Full));
        assert_eq!(s.remove(Range::new(1, 2)), Err(Full));
        assert_eq!(s.as_slice().len(), CAPACITY);
    }
}
