//! Windows and the assigners that put elements into them, as Flink's
//! `TumblingEventTimeWindows`, `SlidingEventTimeWindows`, `EventTimeSessionWindows`,
//! `GlobalWindows` (and their processing-time twins).
//!
//! Sliding windows share work by slicing (as Flink's window slicing and Arroyo do): an
//! element is added to one *pane* of `gcd(size, slide)` milliseconds, and a window is
//! assembled from its panes when it fires. Tumbling windows are sliding windows whose
//! slide is their size, so each window is one pane.

use std::fmt;

/// A window: the half-open interval `[start, end)` of event (or processing) time, or
/// the global window that holds every element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The one window of global (and count) windows.
    pub const GLOBAL: Window = Window { start: i64::MIN, end: i64::MAX };

    pub fn new(start: i64, end: i64) -> Self {
        Window { start, end }
    }

    /// The largest timestamp that belongs to the window (Flink's `maxTimestamp`):
    /// its event-time timer fires when the watermark reaches it.
    pub fn max_timestamp(&self) -> i64 {
        if *self == Window::GLOBAL { i64::MAX } else { self.end - 1 }
    }

    /// Whether the windows overlap or touch (Flink's `TimeWindow.intersects`), which is
    /// when session windows merge.
    pub fn intersects(&self, other: &Window) -> bool {
        self.start <= other.end && self.end >= other.start
    }

    /// The smallest window covering both.
    pub fn cover(&self, other: &Window) -> Window {
        Window { start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    /// 16 bytes that sort like the windows (by start, then end): the namespace of the
    /// window's state and timers.
    pub fn encode(&self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&((self.start as u64) ^ (1 << 63)).to_be_bytes());
        bytes[8..].copy_from_slice(&((self.end as u64) ^ (1 << 63)).to_be_bytes());
        bytes
    }

    /// Reverses [`Window::encode`]; `None` if `bytes` is not an encoded window.
    pub fn decode(bytes: &[u8]) -> Option<Window> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let start = (u64::from_be_bytes(bytes[..8].try_into().ok()?) ^ (1 << 63)) as i64;
        let end = (u64::from_be_bytes(bytes[8..].try_into().ok()?) ^ (1 << 63)) as i64;
        Some(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Window::GLOBAL { f.write_str("the global window") } else { write!(f, "[{}, {})", self.start, self.end) }
    }
}

/// The start of the window of length `every` (aligned to `offset`) that contains
/// `timestamp` (Flink's `TimeWindow.getWindowStartWithOffset`).
pub fn aligned_start(timestamp: i64, offset: i64, every: i64) -> i64 {
    timestamp - (timestamp - offset).rem_euclid(every)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Tumbling and sliding windows, assembled from panes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sliding {
    pub size: i64,
    pub slide: i64,
    pub offset: i64,
    /// The pane length: `gcd(size, slide)`.
    pub pane: i64,
}

impl Sliding {
    pub fn new(size: i64, slide: i64, offset: i64) -> Self {
        Sliding { size, slide, offset: offset.rem_euclid(slide), pane: gcd(size, slide) }
    }

    /// The pane an element at `timestamp` is added to.
    pub fn pane_of(&self, timestamp: i64) -> Window {
        let start = aligned_start(timestamp, self.offset, self.pane);
        Window::new(start, start + self.pane)
    }

    /// The last window (the one that ends latest) that contains `timestamp`.
    pub fn last_window(&self, timestamp: i64) -> Window {
        let start = aligned_start(timestamp, self.offset, self.slide);
        Window::new(start, start + self.size)
    }

    /// Every window that contains `timestamp`, earliest first.
    pub fn windows_of(&self, timestamp: i64) -> impl Iterator<Item = Window> + '_ {
        let last = self.last_window(timestamp).start;
        // Starts are aligned to the slide, at most `timestamp`, and after `timestamp - size`.
        let count = (last - (timestamp - self.size) - 1) / self.slide + 1;
        (0..count).rev().map(move |i| {
            let start = last - i * self.slide;
            Window::new(start, start + self.size)
        })
    }

    /// The panes a window is assembled from, in time order.
    pub fn panes_of(&self, window: Window) -> impl Iterator<Item = Window> + '_ {
        (0..self.size / self.pane).map(move |i| {
            let start = window.start + i * self.pane;
            Window::new(start, start + self.pane)
        })
    }

    /// The panes no window after `window` needs: those that start within its first
    /// slide. Removed when `window` is cleaned up (windows are cleaned up in order).
    pub fn panes_retired_by(&self, window: Window) -> impl Iterator<Item = Window> + '_ {
        (0..self.slide / self.pane).map(move |i| {
            let start = window.start + i * self.pane;
            Window::new(start, start + self.pane)
        })
    }
}

/// The sessions of one key, merged as Flink's `MergingWindowAssigner` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sessions {
    /// Disjoint, in start order.
    pub windows: Vec<Window>,
}

/// What adding a session window did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// The session the element belongs to now.
    pub window: Window,
    /// Existing sessions it absorbed (their state and timers move to `window`).
    pub absorbed: Vec<Window>,
}

impl Sessions {
    /// Where adding `window` would put it: the cover of it and every session it
    /// intersects, transitively (sessions are disjoint, so one pass suffices).
    pub fn merge_of(&self, window: Window) -> Merge {
        let mut merged = window;
        let mut absorbed = Vec::new();
        for existing in &self.windows {
            if existing.intersects(&merged) {
                merged = merged.cover(existing);
                absorbed.push(*existing);
            }
        }
        // A cover that grew may reach sessions skipped before it grew.
        loop {
            let more: Vec<Window> = self
                .windows
                .iter()
                .filter(|w| !absorbed.contains(w) && w.intersects(&merged))
                .copied()
                .collect();
            if more.is_empty() {
                break;
            }
            for w in more {
                merged = merged.cover(&w);
                absorbed.push(w);
            }
        }
        absorbed.sort();
        Merge { window: merged, absorbed }
    }

    /// Applies a merge computed by [`Sessions::merge_of`].
    pub fn apply(&mut self, merge: &Merge) {
        self.windows.retain(|w| !merge.absorbed.contains(w));
        let at = self.windows.partition_point(|w| *w < merge.window);
        self.windows.insert(at, merge.window);
    }

    pub fn remove(&mut self, window: Window) {
        self.windows.retain(|w| *w != window);
    }

    pub fn encode(&self) -> Vec<u8> {
        self.windows.iter().flat_map(|w| w.encode()).collect()
    }

    pub fn decode(bytes: &[u8]) -> Option<Sessions> {
        if !bytes.len().is_multiple_of(16) {
            return None;
        }
        let windows = bytes.chunks(16).map(Window::decode).collect::<Option<Vec<_>>>()?;
        Some(Sessions { windows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_encode_in_order() {
        let ws = [Window::new(-10, 0), Window::new(-10, 5), Window::new(0, 10), Window::GLOBAL];
        for w in ws {
            assert_eq!(Window::decode(&w.encode()), Some(w));
        }
        let mut encoded: Vec<_> = ws.iter().map(Window::encode).collect();
        encoded.sort();
        let decoded: Vec<_> = encoded.iter().map(|b| Window::decode(b).unwrap()).collect();
        assert_eq!(decoded, [Window::GLOBAL, Window::new(-10, 0), Window::new(-10, 5), Window::new(0, 10)]);
        assert_eq!(Window::GLOBAL.max_timestamp(), i64::MAX);
        assert_eq!(Window::new(0, 10).max_timestamp(), 9);
    }

    #[test]
    fn tumbling_windows_align_to_the_offset() {
        let t = Sliding::new(60_000, 60_000, 0);
        assert_eq!(t.windows_of(59_999).collect::<Vec<_>>(), [Window::new(0, 60_000)]);
        assert_eq!(t.windows_of(60_000).collect::<Vec<_>>(), [Window::new(60_000, 120_000)]);
        assert_eq!(t.windows_of(-1).collect::<Vec<_>>(), [Window::new(-60_000, 0)]);
        assert_eq!(t.pane_of(61_000), Window::new(60_000, 120_000));
        let shifted = Sliding::new(60_000, 60_000, 15_000);
        assert_eq!(shifted.windows_of(10_000).collect::<Vec<_>>(), [Window::new(-45_000, 15_000)]);
    }

    #[test]
    fn sliding_windows_are_assembled_from_panes() {
        let s = Sliding::new(10, 4, 0);
        assert_eq!(s.pane, 2);
        // 13 is in [4, 14), [8, 18) and [12, 22), as Flink's SlidingEventTimeWindows says.
        let windows: Vec<_> = s.windows_of(13).collect();
        assert_eq!(windows, [Window::new(4, 14), Window::new(8, 18), Window::new(12, 22)]);
        assert_eq!(s.last_window(13), Window::new(12, 22));
        assert_eq!(s.pane_of(13), Window::new(12, 14));
        let panes: Vec<_> = s.panes_of(Window::new(4, 14)).collect();
        assert_eq!(panes.first(), Some(&Window::new(4, 6)));
        assert_eq!(panes.len(), 5);
        // Every pane of a window is retired by exactly one window.
        let retired: Vec<_> = s.panes_retired_by(Window::new(4, 14)).collect();
        assert_eq!(retired, [Window::new(4, 6), Window::new(6, 8)]);
        for t in -20..20 {
            assert!(s.windows_of(t).all(|w| w.start <= t && t < w.end));
            assert_eq!(s.windows_of(t).count(), 2 + usize::from((t - 0).rem_euclid(4) < 2));
        }
    }

    #[test]
    fn sessions_merge_transitively() {
        let mut s = Sessions::default();
        for w in [Window::new(0, 10), Window::new(20, 30), Window::new(40, 50)] {
            let m = s.merge_of(w);
            assert!(m.absorbed.is_empty());
            s.apply(&m);
        }
        // [9, 21) bridges the first two sessions; [30, 40) touches the last two.
        let m = s.merge_of(Window::new(9, 21));
        assert_eq!(m, Merge { window: Window::new(0, 30), absorbed: vec![Window::new(0, 10), Window::new(20, 30)] });
        s.apply(&m);
        let m = s.merge_of(Window::new(30, 40));
        assert_eq!(m.window, Window::new(0, 50));
        s.apply(&m);
        assert_eq!(s.windows, [Window::new(0, 50)]);
        assert_eq!(Sessions::decode(&s.encode()), Some(s));
    }
}
