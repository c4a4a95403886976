//! The key manager and the backend as the service sees them: every call
//! timed into this node's [`Calls`] (latency by operation and outcome),
//! which `/metrics` shows. Wrapped once, when the service is assembled, so
//! no call escapes the count.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use rekey_keys::{KeyBytes, KeyError, KeyId, KeyManager, Project};
use rekey_storage::{Backend, BlockIo, CloneKind};

use crate::metrics::Calls;

/// A key manager whose calls are timed.
#[derive(Debug)]
pub(crate) struct MeteredKeys {
    pub(crate) inner: Arc<dyn KeyManager>,
    pub(crate) calls: Arc<Calls>,
}

impl MeteredKeys {
    async fn timed<T>(&self, op: &'static str, f: impl std::future::Future<Output = Result<T, KeyError>>) -> Result<T, KeyError> {
        let began = Instant::now();
        let r = f.await;
        self.calls.key_manager(op, r.is_ok(), began.elapsed());
        r
    }
}

#[async_trait]
impl KeyManager for MeteredKeys {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn create_named_key(&self, project: &Project, name: Option<&str>, algorithm: &str, bit_length: u32) -> Result<KeyId, KeyError> {
        self.timed("create", self.inner.create_named_key(project, name, algorithm, bit_length)).await
    }
    async fn get_key(&self, project: &Project, id: &KeyId) -> Result<KeyBytes, KeyError> {
        self.timed("get", self.inner.get_key(project, id)).await
    }
    async fn store_named_key(
        &self,
        project: &Project,
        name: Option<&str>,
        key: &KeyBytes,
        algorithm: &str,
        bit_length: u32,
    ) -> Result<KeyId, KeyError> {
        self.timed("store", self.inner.store_named_key(project, name, key, algorithm, bit_length)).await
    }
    async fn find_named(&self, project: &Project, name: &str) -> Result<Option<KeyId>, KeyError> {
        self.timed("find", self.inner.find_named(project, name)).await
    }
    async fn list_named(&self, project: &Project, prefix: &str) -> Result<Vec<(KeyId, String)>, KeyError> {
        self.timed("list", self.inner.list_named(project, prefix)).await
    }
    async fn delete_key(&self, project: &Project, id: &KeyId) -> Result<(), KeyError> {
        // A key already gone is what a deletion wants: not an error.
        let began = Instant::now();
        let r = self.inner.delete_key(project, id).await;
        let ok = r.as_ref().map_or_else(|e| e.kind() == rekey_keys::ErrorKind::NotFound, |_| true);
        self.calls.key_manager("delete", ok, began.elapsed());
        r
    }
    async fn exists(&self, project: &Project, id: &KeyId) -> Result<bool, KeyError> {
        self.timed("exists", self.inner.exists(project, id)).await
    }
    async fn list(&self, project: &Project) -> Result<Vec<KeyId>, KeyError> {
        self.timed("list", self.inner.list(project)).await
    }
}

/// A backend whose calls are timed (opening a volume is; its reads and
/// writes are the data path, counted as bytes elsewhere).
#[derive(Debug)]
pub(crate) struct MeteredBackend {
    pub(crate) inner: Arc<dyn Backend>,
    pub(crate) calls: Arc<Calls>,
}

impl MeteredBackend {
    fn timed<T>(&self, op: &'static str, f: impl FnOnce() -> rekey_storage::Result<T>) -> rekey_storage::Result<T> {
        let began = Instant::now();
        let r = f();
        self.calls.backend(op, r.is_ok(), began.elapsed());
        r
    }
}

impl Backend for MeteredBackend {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn create(&self, id: &str, size_bytes: u64) -> rekey_storage::Result<()> {
        self.timed("create", || self.inner.create(id, size_bytes))
    }
    fn delete(&self, id: &str) -> rekey_storage::Result<()> {
        self.timed("delete", || self.inner.delete(id))
    }
    fn extend(&self, id: &str, new_size: u64) -> rekey_storage::Result<()> {
        self.timed("extend", || self.inner.extend(id, new_size))
    }
    fn size(&self, id: &str) -> rekey_storage::Result<u64> {
        self.timed("size", || self.inner.size(id))
    }
    fn exists(&self, id: &str) -> rekey_storage::Result<bool> {
        self.timed("exists", || self.inner.exists(id))
    }
    fn list(&self) -> rekey_storage::Result<Vec<String>> {
        self.timed("list", || self.inner.list())
    }
    fn location(&self, id: &str) -> rekey_storage::Result<String> {
        self.inner.location(id)
    }
    fn clone_volume(&self, src_id: &str, new_id: &str) -> rekey_storage::Result<CloneKind> {
        self.timed("clone_volume", || self.inner.clone_volume(src_id, new_id))
    }
    fn open(&self, id: &str) -> rekey_storage::Result<Box<dyn BlockIo>> {
        self.timed("open", || self.inner.open(id))
    }
    fn create_snapshot(&self, vol_id: &str, snap_id: &str) -> rekey_storage::Result<()> {
        self.timed("create_snapshot", || self.inner.create_snapshot(vol_id, snap_id))
    }
    fn delete_snapshot(&self, snap_id: &str) -> rekey_storage::Result<()> {
        self.timed("delete_snapshot", || self.inner.delete_snapshot(snap_id))
    }
    fn snapshots(&self, vol_id: &str) -> rekey_storage::Result<Vec<String>> {
        self.timed("snapshots", || self.inner.snapshots(vol_id))
    }
    fn clone_from_snapshot(&self, snap_id: &str, new_id: &str) -> rekey_storage::Result<CloneKind> {
        self.timed("clone_from_snapshot", || self.inner.clone_from_snapshot(snap_id, new_id))
    }
    fn open_snapshot(&self, snap_id: &str) -> rekey_storage::Result<Box<dyn BlockIo>> {
        self.timed("open_snapshot", || self.inner.open_snapshot(snap_id))
    }
    fn session(&self) -> Option<String> {
        self.inner.session()
    }
    fn fence(&self, session: &str) -> rekey_storage::Result<()> {
        self.timed("fence", || self.inner.fence(session))
    }
}
