//! Volume-key rekey of an attached back-end volume, under live I/O.
//!
//! rekey decrypts a back-end export itself, so it can re-encrypt the volume
//! while the consumer keeps using it: the export's data path
//! ([`crate::exports::SwapIo`]) is swapped for an
//! [`rekey_luks::reencrypt::live::Online`] view, which routes each request
//! by the re-encryption's boundary while the driver converts one locked
//! hotzone at a time; at the end the plain view under the new key goes back
//! in. The progress lives in the LUKS2 header (cryptsetup's format), so the
//! job's step, re-run after a crash or a restart, resumes from there and
//! serves the export again if the restart could not (a volume in the middle
//! of a re-encryption opens only with the new passphrase, which the job
//! holds).

use std::sync::Arc;

use rekey_luks::reencrypt::live::Online;
use rekey_luks::reencrypt::{self, OldKey, ReencryptOptions};
use rekey_luks::{BlockIo, PbkdfOptions, Volume as LuksVolume};
use zeroize::Zeroizing;

use crate::engine::blocking;
use crate::error::{Result, ServiceError};
use crate::exports::Carries;
use crate::model::AttachMode;
use crate::service::Service;

/// Bytes per crash-safe step: the longest a request into the range being
/// converted waits is one of these.
const HOTZONE: u64 = 1 << 20;

/// The exports of `volume`'s attachments this node serves: name, read-only.
/// An export served by another node fails the step (to be retried): only
/// the node in the data path can re-encrypt under it; converting the volume
/// offline there would write under a view that does not know.
pub(crate) async fn local_exports(svc: &Service, volume: &str) -> Result<Vec<(String, bool)>> {
    let node = svc.config.node_name();
    let mut local = vec![];
    for a in svc.attachments_of(volume).await? {
        let Some(name) = a.export_name else { continue };
        if a.node != node {
            return Err(ServiceError::Unavailable(format!(
                "volume {volume} is served to its consumer by node {}; its online re-encryption runs there",
                a.node
            )));
        }
        local.push((name, a.attach_mode == AttachMode::Ro));
    }
    Ok(local)
}

/// Re-encrypts `volume` under a fresh volume key whose only keyslot opens
/// with `new`, while `exports` keep serving it (started, resumed, or only
/// finished off). Returns the new keyslot.
pub(crate) async fn reencrypt_attached(
    svc: &Service,
    volume: &str,
    old: Zeroizing<String>,
    new: Zeroizing<String>,
    exports: &[(String, bool)],
) -> Result<u32> {
    let (backend, id, pass) = (svc.backend.clone(), volume.to_owned(), new.clone());
    let view = blocking(move || {
        let (old_b, new_b) = (old.as_bytes(), new.as_bytes());
        let v = LuksVolume::open(backend.open(&id)?)?;
        if reencrypt::in_progress(&v) {
            return Ok(Some(Online::resume(v, old_b, Some(new_b))?));
        }
        if v.unlock(old_b, None).is_err() && v.unlock(new_b, None).is_ok() {
            return Ok(None); // finished before a crash
        }
        let opts = ReencryptOptions { pbkdf: PbkdfOptions::minimal(), hotzone: HOTZONE, ..Default::default() };
        Ok(Some(Online::start(v, OldKey::Passphrase(old_b), new_b, &opts)?))
    })
    .await?;
    let mut slot = None;
    if let Some(online) = view {
        let online = Arc::new(online);
        let sector = online.sector_size() as u32;
        serve(svc, exports, online.clone(), sector).await?;
        tracing::info!(volume, "online re-encryption under the consumer's I/O");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        slot = Some(blocking(move || Ok(online.run(HOTZONE, threads, &|_, _| {})?.keyslot)).await?);
    }
    // The plain view under the new key goes back behind the exports.
    let (backend, id) = (svc.backend.clone(), volume.to_owned());
    let (plain, new_slot) = blocking(move || {
        let v = LuksVolume::open(backend.open(&id)?)?;
        let (s, _) = v.unlock(pass.as_bytes(), None)?;
        let plain = v.decrypted(pass.as_bytes())?;
        Ok((plain, s))
    })
    .await?;
    let sector = plain.sector_size() as u32;
    serve(svc, exports, Arc::new(plain), sector).await?;
    Ok(slot.unwrap_or(new_slot))
}

/// Puts `io` behind each export, offering it again where a restart could
/// not. The swap waits for the requests in flight on the view it replaces.
async fn serve(svc: &Service, exports: &[(String, bool)], io: Arc<dyn BlockIo>, sector: u32) -> Result<()> {
    for (name, read_only) in exports {
        match svc.exports.io(name) {
            Some(swap) => {
                let io = io.clone();
                blocking(move || swap.swap(io).map(drop).map_err(|e| ServiceError::Internal(format!("export swap: {e}")))).await?
            }
            None => {
                svc.exports.add(name, io.clone(), Carries::Plaintext { sector }, *read_only).await?;
            }
        }
    }
    Ok(())
}
