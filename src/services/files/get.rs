//! `get`: the session's side of a download: open the file jailed, learn
//! its digest (cached, or from the pool), then send it chunk by chunk as
//! the client's output drains.

use std::sync::Arc;

use super::jail::{self, PathError};
use super::transfer::{self, Done, Download, blocking, send_range};
use super::{Cx, Phase, Session, Transfer, request};

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
        match cx.shared().files.digest(&download.key) {
            Some(digest) => self.start_sending(download, digest, cx),
            None => {
                let (file, size) = (Arc::clone(&download.file), download.end);
                blocking(cx, move || Done::Digest(transfer::hash_file(&file, size)));
                self.transfer = Transfer::Hashing(download);
            }
        }
        Ok(())
    }

    pub(super) fn start_sending(&mut self, download: Download, digest: [u8; 32], cx: &mut Cx<'_>) {
        cx.write_with(|out| request::encode_get_ready(download.end, download.offset, &digest, out));
        self.transfer = Transfer::Sending(download);
        self.pump(cx);
    }

    /// Sends the next chunk of a download; back to requests when done.
    pub(super) fn pump(&mut self, cx: &mut Cx<'_>) {
        let Transfer::Sending(download) = &mut self.transfer else {
            return;
        };
        match send_range(cx, &download.file, download.offset, download.end) {
            Ok(sent) => download.offset += sent,
            Err(e) => {
                // The client was promised N bytes that cannot all be sent:
                // the connection cannot go on in step.
                log::warn!("files: {}: download failed: {e}", self.who());
                self.close(cx);
                cx.abort();
                return;
            }
        }
        if download.offset >= download.end {
            self.transfer = Transfer::AwaitingHeader;
            self.process(cx);
        }
    }
}
