//! `get`: the session's side of a download: open the file jailed, learn
//! its digest (cached, or from the pool), then hand the reactor the file
//! range to send.

use std::sync::Arc;

use super::jail::{self, PathError};
use super::transfer::{self, Done, Download, blocking, send_range};
use super::{Cx, Phase, Session, Transfer, request};
use crate::codec::frame;

impl Session {
    /// `get`: open the file jailed, then `ready` once its digest is known.
    pub(super) fn start_get(
        &mut self,
        path: &str,
        offset: u64,
        cx: &mut Cx<'_>,
    ) -> Result<(), PathError> {
        let Phase::Serving(account) = &self.phase else {
            return Ok(());
        };
        let rel = jail::resolve(&account.cwd, path)?;
        let fd = account.home.open_at(&rel, rustix::fs::OFlags::RDONLY)?;
        let download = Download::new(fd, offset).map_err(|e| PathError::Io(e.to_string()))?;
        let meta = download
            .file
            .metadata()
            .map_err(|e| PathError::Io(e.to_string()))?;
        if meta.is_dir() {
            return Err(PathError::IsADirectory);
        }
        if !meta.is_file() {
            return Err(PathError::NotAFile);
        }
        if offset > download.end {
            return Err(PathError::Io(format!(
                "offset {offset} is past the end of the file ({} bytes)",
                download.end
            )));
        }
        // The lock is let go before the answer is written.
        let cached = cx.shared().files.lock().digest(&download.key);
        match cached {
            Some(digest) => self.start_sending(download, digest, cx),
            None => {
                let (file, size) = (Arc::clone(&download.file), download.end);
                let hashing = blocking(cx, &self.job, move || {
                    Done::Digest(transfer::hash_file(&file, size))
                });
                if hashing.is_err() {
                    cx.write_with(|out| frame::encode_error(BUSY, Some("busy"), out));
                    return Ok(());
                }
                self.transfer = Transfer::Hashing(download);
            }
        }
        Ok(())
    }

    /// `ready`, then the bytes: the reactor sends the range as the client
    /// reads, in order with whatever is answered after it, so the next
    /// request can be served at once.
    pub(super) fn start_sending(&mut self, download: Download, digest: [u8; 32], cx: &mut Cx<'_>) {
        cx.write_with(|out| request::encode_get_ready(download.end, download.offset, &digest, out));
        send_range(cx, &download.file, download.offset, download.end);
        self.transfer = Transfer::AwaitingHeader;
    }
}

/// What a client hears when the helper pool's queue is full.
pub(super) const BUSY: &str = "the daemon is busy; try again";
