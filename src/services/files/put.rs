//! `put`: the session's side of an upload, from the request to `ready`,
//! and from the last byte to the commit (see the diagram in `transfer.rs`).
//! The transitions the pool's answers cause are in `Session::on_done`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::jail::{self, Home, PathError};
use super::quota::Reservation;
use super::transfer::{self, Done, Upload, blocking};
use super::{Cx, Phase, Session, Transfer, request, staging, storage_error};
use crate::codec::frame;

impl Session {
    /// `put`: everything that can be checked before `ready` is checked
    /// here (path, parent, a directory in the way, quota).
    pub(super) fn start_put(
        &mut self,
        path: &str,
        size: u64,
        sha256: [u8; 32],
        cx: &mut Cx<'_>,
    ) -> Result<(), PathError> {
        let Phase::Serving(account) = &self.phase else {
            return Ok(());
        };
        let rel = jail::resolve(&account.cwd, path)?;
        let (parent, name) = account.home.open_parent(&rel)?;
        let credit = match Home::stat_in(&parent, name) {
            Ok(meta) if meta.is_dir => return Err(PathError::IsADirectory),
            Ok(meta) if meta.is_file => meta.size,
            Ok(_) | Err(PathError::NotFound) => 0,
            Err(e) => return Err(e),
        };
        let id = staging::upload_id(&rel, size, &sha256);
        let (user, home_path, limit) = (
            account.name.clone(),
            account.home_path.clone(),
            account.quota,
        );
        // One lock of the daemon's books for the check and the
        // reservation together: connections of the user on other reactors
        // reserve under the same lock, so no two can both see the same free
        // bytes and together pass the quota.
        let reserved = {
            let mut files = cx.shared().files.lock();
            let dir = files.staging_dir(&user);
            let book = files.book(&user, &home_path);
            if book.is_active(&id) {
                return Err(PathError::Io(
                    "an upload of this file is already under way".to_string(),
                ));
            }
            for old in book.superseded(&rel, &id) {
                book.release(&old);
                staging::remove(&dir, &old);
            }
            let reservation = Reservation {
                path: rel.clone(),
                charge: size.saturating_sub(credit),
                active: true,
            };
            book.reserve(&id, reservation, limit).map(|()| dir)
        };
        let dir = match reserved {
            Ok(dir) => dir,
            Err(over) => {
                cx.write_with(|out| request::encode_over_quota(over.free, out));
                return Ok(());
            }
        };
        let record = staging::Record {
            path: rel.clone(),
            size,
            sha256: crate::codec::hex::encode(&sha256),
            credit,
        };
        let opened = staging::write_record(&dir, &id, &record)
            .and_then(|()| staging::open_part(&dir, &id))
            .and_then(|(file, len)| {
                if len > size {
                    file.set_len(0)?;
                    return Ok((file, 0));
                }
                Ok((file, len))
            });
        let (file, staged) = match opened {
            Ok(found) => found,
            Err(e) => {
                cx.shared()
                    .files
                    .lock()
                    .book(&user, &home_path)
                    .release(&id);
                staging::remove(&dir, &id);
                return Err(PathError::Io(storage_error(&e)));
            }
        };
        let upload = Box::new(Upload {
            id,
            path: rel,
            size,
            sha256,
            file: Arc::new(file),
            dir,
            written: staged,
            hasher: Sha256::new(),
        });
        if staged == 0 {
            self.ready_to_receive(upload, cx);
        } else {
            // Resuming: the prefix on disk is hashed again, so the final
            // check covers the whole file.
            let file = Arc::clone(&upload.file);
            let hashing = blocking(cx, &self.job, move || {
                Done::Prefix(transfer::hash_prefix(&file, staged))
            });
            self.transfer = Transfer::Preparing(upload);
            if hashing.is_err() {
                self.busy(cx);
            }
        }
        Ok(())
    }

    /// Sends `ready` for an upload whose staged prefix is hashed.
    pub(super) fn ready_to_receive(&mut self, upload: Box<Upload>, cx: &mut Cx<'_>) {
        let offset = upload.written;
        cx.write_with(|out| request::encode_put_ready(offset, out));
        self.transfer = Transfer::Receiving(upload);
        if let Transfer::Receiving(u) = &self.transfer
            && u.remaining() == 0
        {
            self.finish_upload(cx);
        }
    }

    /// All bytes are in: check the digest, then commit on the pool.
    pub(super) fn finish_upload(&mut self, cx: &mut Cx<'_>) {
        let Transfer::Receiving(upload) =
            std::mem::replace(&mut self.transfer, Transfer::AwaitingHeader)
        else {
            return;
        };
        let digest: [u8; 32] = upload.hasher.clone().finalize().into();
        if digest != upload.sha256 {
            self.transfer = Transfer::Receiving(upload);
            self.fail_upload("checksum mismatch", cx);
            return;
        }
        let Phase::Serving(account) = &self.phase else {
            return;
        };
        // The target's directory is found again now: a symlink swapped in
        // during the transfer is refused here.
        let target = account
            .home
            .open_parent(&upload.path)
            .map(|(parent, name)| (parent, name.to_string()));
        let staging_dir = rustix::fs::open(
            &upload.dir,
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        );
        let (parent, name, staging_dir): (OwnedFd, String, OwnedFd) = match (target, staging_dir) {
            (Ok((parent, name)), Ok(dir)) => (parent, name, dir),
            (Err(e), _) => {
                self.transfer = Transfer::Receiving(upload);
                self.fail_upload(&e.to_string(), cx);
                return;
            }
            (_, Err(e)) => {
                self.transfer = Transfer::Receiving(upload);
                self.fail_upload(&storage_error(&e.into()), cx);
                return;
            }
        };
        let file = Arc::clone(&upload.file);
        let part = staging::part_name(&upload.id);
        let committing = blocking(cx, &self.job, move || {
            Done::Committed(transfer::commit(&file, &staging_dir, &part, &parent, &name))
        });
        if committing.is_err() {
            // Every byte is staged and checked; a later put of the same
            // file resumes at its end and commits then.
            self.transfer = Transfer::Receiving(upload);
            self.busy(cx);
            return;
        }
        self.transfer = Transfer::Committing(upload);
    }

    /// The pool's queue is full: the upload stays on record, resumable,
    /// and the client hears `busy`.
    fn busy(&mut self, cx: &mut Cx<'_>) {
        self.interrupt(cx);
        cx.write_with(|out| frame::encode_error(super::get::BUSY, Some("busy"), out));
    }

    /// The upload cannot succeed: its bytes and its reservation go, and the
    /// client gets `reason`. The caller decides what the transfer becomes.
    pub(super) fn fail_upload(&mut self, reason: &str, cx: &mut Cx<'_>) {
        let upload = match std::mem::replace(&mut self.transfer, Transfer::AwaitingHeader) {
            Transfer::Receiving(u) | Transfer::Preparing(u) | Transfer::Committing(u) => u,
            other => {
                self.transfer = other;
                return;
            }
        };
        staging::remove(&upload.dir, &upload.id);
        if let Phase::Serving(account) = &self.phase {
            let (name, home) = (account.name.clone(), account.home_path.clone());
            cx.shared()
                .files
                .lock()
                .book(&name, &home)
                .release(&upload.id);
        }
        log::info!(
            "files: {}: upload of /{} failed: {reason}",
            self.who(),
            upload.path
        );
        cx.write_with(|out| frame::encode_error(reason, None, out));
    }
}
