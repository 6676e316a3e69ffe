//! Quota accounting: one [`Book`] per user, in the daemon's shared state,
//! so that every connection of a user counts against the same figures.
//!
//! `used` = bytes of the files in the home + the charge of every upload on
//! record (under way or interrupted), where an upload's charge is its
//! announced size less the size of the file it will replace. A reservation
//! is made before `ready` is sent; as the loop runs one callback at a time,
//! two connections of one user cannot both see the same free bytes and
//! overcommit them. Pure bookkeeping: no filesystem access here.

use std::collections::HashMap;

/// One upload's place in the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The target path (relative to the home).
    pub path: String,
    /// What it counts toward `used`.
    pub charge: u64,
    /// Whether a connection is uploading it now (an interrupted upload is
    /// not active, and can be resumed).
    pub active: bool,
}

/// A user's usage.
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// Bytes of the files in the home.
    pub files: u64,
    /// Uploads on record, by upload id.
    pub reservations: HashMap<String, Reservation>,
}

/// A reservation the quota cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverQuota {
    pub free: u64,
}

impl Book {
    /// Bytes used: files plus reservations.
    pub fn used(&self) -> u64 {
        self.reservations
            .values()
            .fold(self.files, |sum, r| sum.saturating_add(r.charge))
    }

    /// Records an upload as under way, checking `limit` when it is new. A
    /// resumed upload is already counted, so it always fits.
    pub fn reserve(
        &mut self,
        id: &str,
        reservation: Reservation,
        limit: Option<u64>,
    ) -> Result<(), OverQuota> {
        if let Some(known) = self.reservations.get_mut(id) {
            known.active = true;
            return Ok(());
        }
        if let Some(limit) = limit {
            let used = self.used();
            if used.saturating_add(reservation.charge) > limit {
                return Err(OverQuota {
                    free: limit.saturating_sub(used),
                });
            }
        }
        self.reservations.insert(id.to_string(), reservation);
        Ok(())
    }

    /// The connection uploading `id` went away: the upload stays on
    /// record, resumable.
    pub fn interrupt(&mut self, id: &str) {
        if let Some(r) = self.reservations.get_mut(id) {
            r.active = false;
        }
    }

    /// The upload failed and its bytes are gone.
    pub fn release(&mut self, id: &str) {
        self.reservations.remove(id);
    }

    /// The upload is in place: `size` bytes now in the home, replacing a
    /// file of `replaced` bytes.
    pub fn complete(&mut self, id: &str, size: u64, replaced: u64) {
        self.reservations.remove(id);
        self.files = self.files.saturating_sub(replaced).saturating_add(size);
    }

    /// A file of `size` bytes was removed.
    pub fn removed(&mut self, size: u64) {
        self.files = self.files.saturating_sub(size);
    }

    /// Interrupted uploads of `path` other than `keep`: a new upload of
    /// the same path supersedes them.
    pub fn superseded(&self, path: &str, keep: &str) -> Vec<String> {
        self.reservations
            .iter()
            .filter(|(id, r)| r.path == path && !r.active && id.as_str() != keep)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether a connection is uploading `id` now.
    pub fn is_active(&self, id: &str) -> bool {
        self.reservations.get(id).is_some_and(|r| r.active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(path: &str, charge: u64) -> Reservation {
        Reservation {
            path: path.to_string(),
            charge,
            active: true,
        }
    }

    #[test]
    fn reservations_count_until_completed_or_released() {
        let mut book = Book {
            files: 10,
            ..Book::default()
        };
        book.reserve("a", r("x", 5), Some(20)).unwrap();
        assert_eq!(book.used(), 15);
        assert_eq!(
            book.reserve("b", r("y", 6), Some(20)),
            Err(OverQuota { free: 5 })
        );
        book.reserve("b", r("y", 5), Some(20)).unwrap();
        assert_eq!(book.used(), 20);
        book.release("b");
        book.complete("a", 5, 0);
        assert_eq!((book.used(), book.files), (15, 15));
        book.removed(15);
        assert_eq!(book.used(), 0);
    }

    #[test]
    fn a_resumed_upload_is_not_counted_twice() {
        let mut book = Book::default();
        book.reserve("a", r("x", 8), Some(10)).unwrap();
        book.interrupt("a");
        assert!(!book.is_active("a"));
        book.reserve("a", r("x", 8), Some(10)).unwrap();
        assert!(book.is_active("a"));
        assert_eq!(book.used(), 8);
    }

    #[test]
    fn a_new_upload_supersedes_interrupted_ones_of_the_same_path() {
        let mut book = Book::default();
        book.reserve("old", r("x", 8), None).unwrap();
        book.reserve("busy", r("x", 8), None).unwrap();
        book.interrupt("old");
        assert_eq!(book.superseded("x", "new"), ["old"]);
        assert!(book.superseded("x", "old").is_empty());
    }
}
