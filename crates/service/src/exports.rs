//! The NBD exports of attachments: one [`rekey_nbd::Server`] per node,
//! opened at the first export, and one export per attachment under an
//! unguessable name.
//!
//! Every export reads and writes through a [`SwapIo`], so the volume's
//! data path behind a live export can be replaced (an online
//! re-encryption puts its own view in, and the plain one back at the end)
//! without the consumer's connection noticing.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use rekey_luks::BlockIo;
use rekey_nbd::{Export, ListenAddr, Server, TlsConfig};

use crate::config::NbdConfig;
use crate::error::{Result, ServiceError};

/// A [`BlockIo`] whose inner one can be replaced while requests run.
///
/// Each request holds the read side of the lock for its whole duration, so
/// [`SwapIo::swap`] waits for the requests in flight and holds new ones back
/// until the new inner view is in: no request ever straddles two views.
pub struct SwapIo {
    inner: RwLock<Arc<dyn BlockIo>>,
}

impl std::fmt::Debug for SwapIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwapIo")
    }
}

impl SwapIo {
    /// Serves `io` until swapped.
    pub fn new(io: Arc<dyn BlockIo>) -> Self {
        SwapIo { inner: RwLock::new(io) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Arc<dyn BlockIo>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts `io` behind the export and returns the view it replaces. The
    /// size must stay the same: the consumer was told it at connect time.
    pub fn swap(&self, io: Arc<dyn BlockIo>) -> io::Result<Arc<dyn BlockIo>> {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if io.size()? != g.size()? {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a swapped-in view must keep the export's size"));
        }
        Ok(std::mem::replace(&mut *g, io))
    }

    /// The view served now.
    pub fn current(&self) -> Arc<dyn BlockIo> {
        self.read().clone()
    }
}

impl BlockIo for SwapIo {
    fn size(&self) -> io::Result<u64> {
        self.read().size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read().read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.read().write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.read().flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        self.read().discard(offset, len)
    }
    // Under the same guard as the call, so a swap to the online view (whose
    // requests may wait for a hotzone) cannot slip in between.
    fn read_at_nowait(&self, buf: &mut [u8], offset: u64) -> Option<io::Result<()>> {
        self.read().read_at_nowait(buf, offset)
    }
    fn write_at_nowait(&self, buf: &[u8], offset: u64) -> Option<io::Result<()>> {
        self.read().write_at_nowait(buf, offset)
    }
}

/// What an export carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carries {
    /// The volume's raw bytes (front-end: the consumer decrypts).
    Ciphertext,
    /// A decrypted view with this encryption sector size (back-end).
    Plaintext {
        /// Encryption sector size in bytes.
        sector: u32,
    },
}

/// Where consumers reach this node's NBD server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdEndpoint {
    /// Host to put in connection info.
    pub host: String,
    /// TCP port bound.
    pub port: u16,
    /// Unix socket served beside TCP, if configured.
    pub socket: Option<PathBuf>,
    /// Whether connections must start TLS.
    pub tls: bool,
}

struct Listening {
    endpoint: NbdEndpoint,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        for t in &self._tasks {
            t.abort();
        }
    }
}

/// This node's NBD server and its exports, by export name.
pub struct ExportManager {
    config: NbdConfig,
    registry: rekey_nbd::Exports,
    ios: Mutex<HashMap<String, Arc<SwapIo>>>,
    listening: tokio::sync::Mutex<Option<Listening>>,
    changes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for ExportManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportManager").field("exports", &self.registry.len()).finish_non_exhaustive()
    }
}

impl ExportManager {
    /// No server yet; it is bound by the first [`ExportManager::add`].
    pub fn new(config: NbdConfig) -> Self {
        ExportManager {
            config,
            registry: rekey_nbd::Exports::new(),
            ios: Mutex::new(HashMap::new()),
            listening: tokio::sync::Mutex::new(None),
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// Held by every attachment change on this node, so two requests for
    /// one attachment cannot both make an export for it.
    pub(crate) async fn serialize(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    fn ios(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SwapIo>>> {
        self.ios.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses, at start-up, TLS credentials that cannot be loaded, so that
    /// a bad `[nbd] tls_dir` stops the service instead of failing attaches.
    pub fn check(&self) -> Result<()> {
        self.tls().map(drop)
    }

    fn tls(&self) -> Result<Option<TlsConfig>> {
        match &self.config.tls_dir {
            Some(dir) => TlsConfig::from_dir(dir)
                .map(Some)
                .map_err(|e| ServiceError::Config(format!("[nbd] tls_dir {}: {e}", dir.display()))),
            None => Ok(None),
        }
    }

    /// Binds the server (TCP, and the Unix socket if configured) unless it
    /// is bound; returns where consumers reach it.
    pub async fn endpoint(&self) -> Result<NbdEndpoint> {
        let mut l = self.listening.lock().await;
        if let Some(l) = l.as_ref() {
            return Ok(l.endpoint.clone());
        }
        let tls = self.tls()?;
        let unavailable = |what: String, e: io::Error| ServiceError::Unavailable(format!("NBD server: cannot listen on {what}: {e}"));
        let tcp = Server::bind(&ListenAddr::Tcp(self.config.listen), self.registry.clone())
            .await
            .map_err(|e| unavailable(self.config.listen.to_string(), e))?;
        let addr: SocketAddr = tcp.local_addr().unwrap_or(self.config.listen);
        let mut servers = vec![tcp];
        if let Some(path) = &self.config.socket {
            let unix = Server::bind(&ListenAddr::Unix(path.clone()), self.registry.clone())
                .await
                .map_err(|e| unavailable(path.display().to_string(), e))?;
            servers.push(unix);
        }
        let tasks = servers
            .into_iter()
            .map(|s| {
                let s = match &tls {
                    Some(t) => s.with_tls(t.clone()),
                    None => s,
                };
                tokio::spawn(s.run())
            })
            .collect();
        let endpoint = NbdEndpoint {
            host: self.config.host.clone().unwrap_or_else(|| addr.ip().to_string()),
            port: addr.port(),
            socket: self.config.socket.clone(),
            tls: tls.is_some(),
        };
        tracing::info!(%addr, socket = ?self.config.socket, tls = endpoint.tls, "NBD server listening");
        *l = Some(Listening { endpoint: endpoint.clone(), _tasks: tasks });
        Ok(endpoint)
    }

    /// Offers `io` under `name` (binding the server first if needed).
    pub async fn add(&self, name: &str, io: Arc<dyn BlockIo>, carries: Carries, read_only: bool) -> Result<NbdEndpoint> {
        let endpoint = self.endpoint().await?;
        let swap = Arc::new(SwapIo::new(io));
        let served: Arc<dyn BlockIo> = swap.clone();
        let export = match carries {
            Carries::Ciphertext => Export::raw(served, read_only),
            Carries::Plaintext { sector } => Export::plaintext(served, sector, read_only),
        }
        .map_err(|e| ServiceError::Internal(format!("export: {e}")))?;
        self.registry
            .add(name, export)
            .map_err(|_| ServiceError::Conflict(format!("an export named {name} exists already")))?;
        self.ios().insert(name.to_owned(), swap);
        Ok(endpoint)
    }

    /// Stops offering `name`: its connections are closed and the requests
    /// running finish before this returns. False if it was not offered.
    pub async fn remove(&self, name: &str) -> bool {
        self.ios().remove(name);
        match self.registry.remove(name) {
            Some(export) => {
                export.drained().await;
                true
            }
            None => false,
        }
    }

    /// Whether `name` is offered.
    pub fn contains(&self, name: &str) -> bool {
        self.registry.get(name).is_some()
    }

    /// The swappable data path behind export `name`: what an online
    /// re-encryption replaces ([`SwapIo::swap`]) while the consumer stays
    /// connected.
    pub fn io(&self, name: &str) -> Option<Arc<SwapIo>> {
        self.ios().get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rekey_luks::MemIo;

    #[test]
    fn swap_keeps_the_size_and_hands_back_the_old_view() {
        let a: Arc<dyn BlockIo> = Arc::new(MemIo::from_bytes(vec![1u8; 4096]));
        let b: Arc<dyn BlockIo> = Arc::new(MemIo::from_bytes(vec![2u8; 4096]));
        let s = SwapIo::new(a);
        let mut buf = [0u8; 4];
        s.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1; 4]);
        let old = s.swap(b).unwrap();
        s.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [2; 4]);
        old.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [1; 4]);
        assert!(s.swap(Arc::new(MemIo::from_bytes(vec![0u8; 512]))).is_err(), "a view of another size is refused");
    }
}
