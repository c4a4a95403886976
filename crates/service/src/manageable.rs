//! What the back end holds that an admin could bring under management
//! (Cinder's manageable lists, 3.8): every volume and snapshot image, with
//! the rekey record it belongs to, if any. rekey adopts nothing: an image it
//! did not make has no key in the key manager, so none is safe to manage.

use std::sync::Arc;

use crate::db;
use crate::error::{Result, ServiceError};
use crate::service::Service;

/// One image of the back end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manageable {
    /// The back end's name for it (`volume-<id>`, `snapshot-<id>`).
    pub reference: String,
    /// Size, GiB rounded up.
    pub size_gb: u64,
    /// The rekey volume or snapshot it is, if any.
    pub cinder_id: Option<String>,
    /// For a snapshot: its volume's image name.
    pub source_reference: Option<String>,
}

impl Manageable {
    /// Why it is not safe to manage (every image has a reason: see the module).
    pub fn reason_not_safe(&self) -> &'static str {
        if self.cinder_id.is_some() {
            "already managed"
        } else {
            "rekey does not adopt images it did not make (no key for it)"
        }
    }
}

/// The back end's images: (volume id, snapshot id for a snapshot, bytes).
fn images(backend: &Arc<dyn rekey_storage::Backend>, snapshots: bool) -> Result<Vec<(String, Option<String>, u64)>> {
    let mut out = Vec::new();
    for vol in backend.list()? {
        if snapshots {
            for snap in backend.snapshots(&vol)? {
                let size = backend.open_snapshot(&snap)?.size().map_err(|e| ServiceError::Internal(format!("size of snapshot {snap}: {e}")))?;
                out.push((vol.clone(), Some(snap), size));
            }
        } else {
            out.push((vol.clone(), None, backend.size(&vol)?));
        }
    }
    Ok(out)
}

impl Service {
    /// The back end's volume (or, with `snapshots`, snapshot) images on
    /// `host`, which must be one of this deployment's volume services.
    pub async fn manageable(&self, host: &str, snapshots: bool) -> Result<Vec<Manageable>> {
        // `host@backend#pool` names the same service as `host@backend`.
        let service_host = host.split('#').next().unwrap_or(host);
        if self.list_services(Some(service_host), Some(crate::inventory::VOLUME_BINARY)).await?.is_empty() {
            return Err(ServiceError::not_found("Service", host));
        }
        let backend = self.backend.clone();
        let found = tokio::task::spawn_blocking(move || images(&backend, snapshots))
            .await
            .map_err(|e| ServiceError::Internal(format!("listing the back end: {e}")))??;
        let mut c = self.conn().await?;
        let mut out = Vec::with_capacity(found.len());
        for (vol, snap, bytes) in found {
            let (reference, known, source_reference) = match &snap {
                Some(s) => (format!("snapshot-{s}"), crate::paths::db::get_snapshot(&mut c, s).await?.is_some(), Some(format!("volume-{vol}"))),
                None => (format!("volume-{vol}"), db::get_volume(&mut c, &vol).await?.is_some(), None),
            };
            out.push(Manageable {
                reference,
                size_gb: bytes.div_ceil(1 << 30),
                cinder_id: known.then(|| snap.clone().unwrap_or_else(|| vol.clone())),
                source_reference,
            });
        }
        Ok(out)
    }
}
