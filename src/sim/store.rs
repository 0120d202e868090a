//! One stream's log (insertion times, in insertion order) and the paging rules over it.
//!
//! Everything here is pure: the caller passes the current time, so the rules can be tested
//! without a clock or a socket.

use std::ops::Range;

use time::OffsetDateTime;

use super::cursor::{Cursor, CursorError};
use crate::stream::Stream;

/// How long the API keeps events: older ones are never served, and older start times are clamped.
pub(crate) const RETENTION: time::Duration = time::Duration::days(120);

/// How far back a reset without `start_time` reaches from its end (or from now).
pub(crate) const DEFAULT_WINDOW: time::Duration = time::Duration::hours(1);

/// The page size of a reset without `limit`.
pub(crate) const DEFAULT_LIMIT: u16 = 100;

/// One stream's items, as insertion times; everything else about an item is regenerated from its index.
#[derive(Debug, Default)]
pub(crate) struct StreamLog {
    /// Insertion time of every item, in insertion order; never decreasing, so it can be bisected.
    inserted: Vec<OffsetDateTime>,
    /// Page requests so far that had items to serve, to pace the deliberately empty pages.
    pages_with_items: u64,
}

/// What one page request serves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    /// Indexes of the items in the page.
    pub(crate) items: Range<u64>,
    /// Insertion times of those items, in order.
    pub(crate) inserted: Vec<OffsetDateTime>,
    /// Whether more items exist in the window after this page.
    pub(crate) has_more: bool,
    /// Where the next request continues.
    pub(crate) next: Cursor,
}

impl StreamLog {
    /// How many items were ever inserted.
    pub(crate) fn len(&self) -> u64 {
        self.inserted.len() as u64
    }

    /// Every insertion time, in insertion order.
    pub(crate) fn inserted(&self) -> &[OffsetDateTime] {
        &self.inserted
    }

    /// The insertion time an item inserted at `at` gets: after the last one (by a nanosecond at
    /// least), so the log stays sorted and no two items share an insertion time, which the v3
    /// endpoint's exclusive `start_time` relies on.
    pub(crate) fn next_time(&self, at: OffsetDateTime) -> OffsetDateTime {
        next_after(self.inserted.last().copied(), at)
    }

    /// Appends items with the given insertion times, which must come from [`StreamLog::next_time`].
    pub(crate) fn extend(&mut self, times: &[OffsetDateTime]) {
        debug_assert!(
            times
                .first()
                .is_none_or(|first| self.next_time(*first) == *first)
        );
        self.inserted.extend_from_slice(times);
    }

    /// Serves the page `cursor` points at, as of `now`.
    ///
    /// Every `empty_page_every`-th request that has items to serve gets an empty page with
    /// `has_more: true` instead, whose cursor stays put and is marked so its next page is not empty.
    ///
    /// # Errors
    ///
    /// Fails with [`CursorError::Field`] when the cursor points past the end of the log, which a
    /// cursor from this simulator never does.
    pub(crate) fn page(
        &mut self,
        cursor: &Cursor,
        now: OffsetDateTime,
        empty_page_every: u32,
    ) -> Result<Page, CursorError> {
        let len = self.inserted.len();
        let position = usize::try_from(cursor.position).map_err(|_| CursorError::Field)?;
        if position > len {
            return Err(CursorError::Field);
        }
        let retention_floor = now.checked_sub(RETENTION).unwrap_or(now);
        let floor = cursor.start.max(retention_floor);
        let position = position.max(self.inserted.partition_point(|t| *t < floor));
        let window_end = match cursor.end {
            Some(end) => self.inserted.partition_point(|t| *t <= end),
            None => len,
        };
        let available = window_end.saturating_sub(position);

        if available > 0 && !cursor.no_empty && empty_page_every > 0 {
            self.pages_with_items += 1;
            if self
                .pages_with_items
                .is_multiple_of(u64::from(empty_page_every))
            {
                let next = Cursor {
                    position: position as u64,
                    no_empty: true,
                    ..cursor.clone()
                };
                let at = position as u64;
                return Ok(Page {
                    items: at..at,
                    inserted: Vec::new(),
                    has_more: true,
                    next,
                });
            }
        }

        let taken = available.min(usize::from(cursor.limit));
        let next_position = position + taken;
        Ok(Page {
            items: position as u64..next_position as u64,
            inserted: self.inserted[position..next_position].to_vec(),
            has_more: window_end > next_position,
            next: Cursor {
                position: next_position as u64,
                no_empty: false,
                ..cursor.clone()
            },
        })
    }
}

/// `at`, or a nanosecond after `last` if `at` is not later.
pub(crate) fn next_after(last: Option<OffsetDateTime>, at: OffsetDateTime) -> OffsetDateTime {
    match last {
        Some(last) if at <= last => last + time::Duration::NANOSECOND,
        _ => at,
    }
}

/// A v3 beta request for one page: a window of insertion times, or a position inside one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct V3Window {
    /// The window's start; `None` means an hour before its end (or before now).
    pub(crate) start: Option<OffsetDateTime>,
    /// Whether items inserted exactly at `start` belong to the window (the early beta).
    pub(crate) inclusive_start: bool,
    /// Items inserted at or after this instant are not served.
    pub(crate) end: Option<OffsetDateTime>,
    /// Where a page token points in the window; `None` for its first page.
    pub(crate) position: Option<u64>,
    pub(crate) limit: u16,
}

/// What a v3 request serves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct V3Page {
    pub(crate) items: Range<u64>,
    pub(crate) inserted: Vec<OffsetDateTime>,
    /// The position of the next page, when the window has more.
    pub(crate) next: Option<u64>,
}

impl StreamLog {
    /// Serves a v3 window page as of `now` (retention applies).
    pub(crate) fn v3_page(&self, window: &V3Window, now: OffsetDateTime) -> V3Page {
        let len = self.inserted.len();
        let retention_floor = now.checked_sub(RETENTION).unwrap_or(now);
        let floor = self.inserted.partition_point(|t| *t < retention_floor);
        let start = window.start.unwrap_or_else(|| {
            let reference = window.end.unwrap_or(now);
            reference.checked_sub(DEFAULT_WINDOW).unwrap_or(reference)
        });
        let first = if window.inclusive_start {
            self.inserted.partition_point(|t| *t < start)
        } else {
            self.inserted.partition_point(|t| *t <= start)
        };
        let lo = window
            .position
            .map_or(first, |position| usize::try_from(position).unwrap_or(len))
            .max(floor)
            .min(len);
        let hi = window
            .end
            .map_or(len, |end| self.inserted.partition_point(|t| *t < end))
            .max(lo);
        let taken = (hi - lo).min(usize::from(window.limit));
        V3Page {
            items: lo as u64..(lo + taken) as u64,
            inserted: self.inserted[lo..lo + taken].to_vec(),
            next: (lo + taken < hi).then_some((lo + taken) as u64),
        }
    }
}

/// The cursor a ResetCursor request starts from, with the API's defaults and retention clamp applied.
pub(crate) fn reset_cursor(
    stream: Stream,
    limit: Option<u16>,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Cursor {
    let start = start.unwrap_or_else(|| {
        let reference = end.unwrap_or(now);
        reference.checked_sub(DEFAULT_WINDOW).unwrap_or(reference)
    });
    let retention_floor = now.checked_sub(RETENTION).unwrap_or(now);
    Cursor {
        stream,
        position: 0,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        start: start.max(retention_floor),
        end,
        no_empty: false,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

    /// A log with one item per minute, the last one at `NOW`.
    fn log(n_items: i64) -> StreamLog {
        let mut log = StreamLog::default();
        let times: Vec<_> = (0..n_items)
            .map(|idx| NOW - time::Duration::minutes(n_items - 1 - idx))
            .collect();
        log.extend(&times);
        log
    }

    fn reset(limit: u16, start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> Cursor {
        reset_cursor(Stream::AuditEvents, Some(limit), start, end, NOW)
    }

    #[test]
    fn default_window_is_the_last_hour() {
        let mut log = log(200);
        let page = log
            .page(
                &reset_cursor(Stream::AuditEvents, None, None, None, NOW),
                NOW,
                0,
            )
            .unwrap();
        // Items at NOW-60min ..= NOW.
        assert_eq!(page.items, 139..200);
        assert!(!page.has_more);
        assert_eq!(page.next.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn pages_follow_insertion_order_and_stop_at_the_end_of_the_window() {
        let mut log = log(250);
        let start = Some(NOW - time::Duration::days(1));
        let first = log.page(&reset(100, start, None), NOW, 0).unwrap();
        assert_eq!((first.items.clone(), first.has_more), (0..100, true));
        let second = log.page(&first.next, NOW, 0).unwrap();
        let third = log.page(&second.next, NOW, 0).unwrap();
        assert_eq!((third.items.clone(), third.has_more), (200..250, false));
        // Reusing a finished cursor later serves what was inserted since.
        let later = NOW + time::Duration::minutes(5);
        log.extend(&[later]);
        let fourth = log.page(&third.next, later, 0).unwrap();
        assert_eq!((fourth.items, fourth.has_more), (250..251, false));

        let end = Some(NOW - time::Duration::minutes(49));
        let windowed = log.page(&reset(1000, start, end), NOW, 0).unwrap();
        assert_eq!((windowed.items.clone(), windowed.has_more), (0..201, false));
        assert_eq!(log.page(&windowed.next, later, 0).unwrap().items, 201..201);
    }

    #[test]
    fn retention_clamps_old_start_times_and_hides_old_items() {
        let mut log = StreamLog::default();
        log.extend(&[
            NOW - time::Duration::days(200),
            NOW - time::Duration::days(119),
            NOW,
        ]);
        let page = log
            .page(
                &reset(10, Some(datetime!(2020-01-01 0:00 UTC)), None),
                NOW,
                0,
            )
            .unwrap();
        assert_eq!(page.items, 1..3);
        let from_zero = Cursor {
            position: 0,
            ..page.next.clone()
        };
        assert_eq!(log.page(&from_zero, NOW, 0).unwrap().items, 1..3);
    }

    #[test]
    fn empty_pages_are_paced_and_never_repeat() {
        let mut log = log(10);
        let mut cursor = reset(3, Some(NOW - time::Duration::days(1)), None);
        let mut served = Vec::new();
        let mut n_empty = 0;
        for _ in 0..20 {
            let page = log.page(&cursor, NOW, 1).unwrap();
            if page.items.is_empty() && page.has_more {
                n_empty += 1;
                assert!(page.next.no_empty);
            }
            served.extend(page.items.clone());
            cursor = page.next;
            if !page.has_more {
                break;
            }
        }
        assert_eq!(served, (0..10).collect::<Vec<_>>());
        assert_eq!(n_empty, 4);
    }

    #[test]
    fn v3_windows_page_by_position_with_either_start_semantics() {
        let log = log(10);
        let at = |idx: i64| NOW - time::Duration::minutes(9 - idx);
        let window = |inclusive_start, position| V3Window {
            start: Some(at(3)),
            inclusive_start,
            end: Some(at(8)),
            position,
            limit: 3,
        };
        let first = log.v3_page(&window(false, None), NOW);
        assert_eq!((first.items.clone(), first.next), (4..7, Some(7)));
        let second = log.v3_page(&window(false, first.next), NOW);
        assert_eq!((second.items, second.next), (7..8, None));
        let inclusive = log.v3_page(&window(true, None), NOW);
        assert_eq!(inclusive.items, 3..6);
        // Equal insertion times never happen: a late insert moves a nanosecond past the last.
        assert_eq!(log.next_time(at(2)), NOW + time::Duration::NANOSECOND);
    }

    #[test]
    fn rejects_cursors_past_the_end() {
        let mut log = log(3);
        let cursor = Cursor {
            position: 4,
            ..reset(10, None, None)
        };
        assert_eq!(log.page(&cursor, NOW, 0), Err(CursorError::Field));
    }
}
