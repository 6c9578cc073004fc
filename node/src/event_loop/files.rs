//! Files in the event loop: sending a file (import into the blob store, then an ordinary message
//! that describes it) and serving `/confab/file/1` (hash list pages and chunks) from the blob
//! store. Disk work runs on blocking threads and comes back as [`StoreDone`]; at most
//! [`MAX_FILE_SERVES`] requests are served at once, the others get `Busy`.
//!
//! Whoever knows a file's root may fetch it (the root is the capability, as in iroh-blobs): the
//! root travels only inside messages to the people they were sent to.

use std::path::PathBuf;

use confab_protocol::file::{FileRequest, FileResponse};
use confab_protocol::{Attachment, AttachmentKind};

use super::*;
use crate::files::fetcher::Inbound;
use crate::files::media::{self, Kind};

/// The description of a file for its message (name as the sender has it, kind from content).
fn describe(
    path: &std::path::Path,
    root: confab_protocol::ContentHash,
) -> Result<Attachment, String> {
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let info = media::probe(path).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    Ok(Attachment {
        name: crate::files::names::sanitize(&name),
        size,
        mime: info.mime.to_owned(),
        hash: root,
        kind: match info.kind {
            Kind::Image => AttachmentKind::Image,
            Kind::Audio => AttachmentKind::Audio,
            Kind::Video => AttachmentKind::Video,
            Kind::File => AttachmentKind::File,
        },
        width: info.dimensions.map(|d| d.0),
        height: info.dimensions.map(|d| d.1),
        duration_ms: info
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        thumbnail: info.thumbnail,
    })
}

impl EventLoop {
    /// A client sends a file: import it (off the loop), then send the message describing it.
    pub(super) fn handle_send_file(
        &mut self,
        to: Conversation,
        path: PathBuf,
        caption: Option<String>,
        reply: Reply<Result<MessageId, SendError>>,
    ) {
        let blobs = self.blobs.clone();
        // In an encrypted conversation only the file's ciphertext enters the blob store.
        let key = self.is_encrypted(&to).then(crate::files::sealed::new_key);
        self.run_store_op(async move {
            let result = tokio::task::spawn_blocking(move || match key {
                None => {
                    let root = blobs.import(&path).map_err(|e| e.to_string())?;
                    Ok((describe(&path, root)?, None))
                }
                Some(key) => {
                    let sealed = blobs
                        .dir()
                        .join(format!("sealed-{:016x}.tmp", rand::random::<u64>()));
                    let imported = crate::files::sealed::encrypt_file(&path, &sealed, &key)
                        .map_err(|e| format!("cannot encrypt the file: {e}"))
                        .and_then(|size| {
                            let root = blobs.import(&sealed).map_err(|e| e.to_string())?;
                            Ok((root, size))
                        });
                    let _ = std::fs::remove_file(&sealed);
                    let (root, size) = imported?;
                    // Described from the plaintext (kind, thumbnail: inside the sealed
                    // message); its hash and size are the ciphertext's, which is what moves.
                    let mut attachment = describe(&path, root)?;
                    attachment.size = size;
                    Ok((attachment, Some(key)))
                }
            })
            .await
            .unwrap_or_else(|e| Err(format!("the import stopped: {e}")));
            StoreDone::Imported {
                to,
                caption,
                result,
                reply,
            }
        });
    }

    /// `/confab/file/1` traffic: answers go to the downloads, requests are served from the blob
    /// store.
    pub(super) fn handle_file_event(
        &mut self,
        event: request_response::Event<FileRequest, FileResponse>,
    ) {
        let rr = &mut self.swarm.behaviour_mut().file;
        let inbound = self.fetcher.handle_event(rr, event);
        self.drain_fetch_events();
        let Some(Inbound {
            peer,
            request,
            channel,
        }) = inbound
        else {
            return;
        };
        if self.serving >= MAX_FILE_SERVES || self.store_ops.len() >= MAX_PENDING_STORE_OPS {
            tracing::debug!("busy: not serving a file request from {peer} now");
            let _ = self
                .swarm
                .behaviour_mut()
                .file
                .send_response(channel, FileResponse::Busy);
            return;
        }
        self.serving += 1;
        let blobs = self.blobs.clone();
        self.run_store_op(async move {
            let response = tokio::task::spawn_blocking(move || blobs.answer(request))
                .await
                .unwrap_or(FileResponse::Busy);
            StoreDone::FileServed { channel, response }
        });
    }
}
