//! Exports by name, added and removed while the server runs.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::RngCore;
use rekey_luks::BlockIo;
use tokio::sync::{watch, Notify};

use crate::proto::{tflag, BlockSize, ExportInfo};

/// Largest READ or WRITE payload served; bigger requests are refused so one
/// request cannot make the server allocate without bound.
pub const MAX_REQUEST: u32 = 32 << 20;

/// One volume offered under one name.
pub struct Export {
    io: Arc<dyn BlockIo>,
    info: ExportInfo,
    /// Sub-`alignment` writes read-modify-write a sector; they are serialised
    /// so two of them touching different bytes of one sector cannot undo
    /// each other.
    alignment: u32,
    rmw: Mutex<()>,
    removed: watch::Sender<bool>,
    active: AtomicUsize,
    idle: Notify,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Export {
    /// Exports `io` as it is: for a LUKS volume this is the ciphertext, and
    /// the consumer decrypts (front-end).
    pub fn raw(io: Arc<dyn BlockIo>, read_only: bool) -> io::Result<Self> {
        Self::new(io, read_only, 1, 4096)
    }

    /// Exports a plaintext view (a `rekey_luks::Decrypted`), so the consumer
    /// never holds a key (back-end). `sector` is its encryption sector size.
    pub fn plaintext(io: Arc<dyn BlockIo>, sector: u32, read_only: bool) -> io::Result<Self> {
        Self::new(io, read_only, sector, sector.max(4096))
    }

    fn new(
        io: Arc<dyn BlockIo>,
        read_only: bool,
        alignment: u32,
        preferred: u32,
    ) -> io::Result<Self> {
        let size = io.size()?;
        let mut flags =
            tflag::HAS_FLAGS | tflag::SEND_FLUSH | tflag::SEND_FUA | tflag::CAN_MULTI_CONN;
        if read_only {
            flags |= tflag::READ_ONLY;
        } else {
            flags |= tflag::SEND_TRIM | tflag::SEND_WRITE_ZEROES;
        }
        // Every write goes straight to the backend and FLUSH syncs the whole
        // backend, so a flush on one connection covers writes done on all of
        // them: that is what CAN_MULTI_CONN promises.
        let block = BlockSize {
            minimum: alignment,
            preferred,
            maximum: MAX_REQUEST,
        };
        Ok(Export {
            io,
            info: ExportInfo { size, flags, block },
            alignment,
            rmw: Mutex::new(()),
            removed: watch::channel(false).0,
            active: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// What clients are told about this export.
    pub fn info(&self) -> ExportInfo {
        self.info
    }

    /// Whether writes are refused.
    pub fn read_only(&self) -> bool {
        self.info.flags & tflag::READ_ONLY != 0
    }

    pub(crate) fn io(&self) -> &dyn BlockIo {
        &*self.io
    }

    pub(crate) fn needs_rmw_lock(&self, offset: u64, len: u64) -> bool {
        let a = self.alignment as u64;
        // Sector sizes are powers of two.
        a > 1 && (offset | len) & (a - 1) != 0
    }

    pub(crate) fn rmw_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.rmw.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn removed(&self) -> watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// Counts a connection or request in flight until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.active.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Waits until no connection and no request of this export is left.
    pub async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub(crate) struct Busy(Arc<Export>);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The exports a server offers; cheap to clone, shared with the server.
#[derive(Debug, Clone, Default)]
pub struct Exports {
    map: Arc<Mutex<HashMap<String, Arc<Export>>>>,
}

/// An export of that name is already offered.
#[derive(Debug, thiserror::Error)]
#[error("an export of that name already exists")]
pub struct NameTaken;

impl Exports {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Export>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers `export` under `name` to new connections.
    pub fn add(&self, name: impl Into<String>, export: Export) -> Result<Arc<Export>, NameTaken> {
        let export = Arc::new(export);
        match self.lock().entry(name.into()) {
            std::collections::hash_map::Entry::Occupied(_) => Err(NameTaken),
            std::collections::hash_map::Entry::Vacant(v) => Ok(v.insert(export).clone()),
        }
    }

    /// Stops offering `name` and closes its open connections. Requests
    /// already running finish; await [`Export::drained`] on the result before
    /// touching the volume by other means.
    pub fn remove(&self, name: &str) -> Option<Arc<Export>> {
        let export = self.lock().remove(name)?;
        export.removed.send_replace(true);
        Some(export)
    }

    /// The export offered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Export>> {
        self.lock().get(name).cloned()
    }

    /// How many exports are offered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is offered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fresh export name: 128 random bits from the OS, as 32 hex digits, so
/// that holding the name is what grants access.
pub fn random_export_name() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
