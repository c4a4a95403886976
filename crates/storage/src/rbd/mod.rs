//! The Ceph RBD backend: volumes are images in one pool, reached through
//! librbd directly (no krbd, no rbd-nbd), so rekeying needs no local block
//! device.
//!
//! Names, as Cinder's RBD driver spells them:
//!
//! ```text
//! volume-<id>                      image of volume <id>
//! volume-<vol>@snapshot-<id>       snapshot <id> of volume <vol> (protected)
//! volume-<src>@clone-<id>          the snapshot volume <id> was cloned from
//! volume-<id>.tmp                  a clone or copy in progress, renamed when done
//! rekey_snapshot.<id>              RADOS object naming snapshot <id>'s volume
//! ```
//!
//! Clones: by default a clone is copy-on-write. `clone_volume` takes a
//! snapshot `clone-<new>` of the source, protects it and `rbd_clone3`s it;
//! the clone reads through to that snapshot until it writes. The snapshot
//! lives as long as the clone is its child: deleting the clone removes it,
//! and deleting the source first flattens (copies the shared data into) its
//! remaining clones, so a clone never depends on a deleted volume. The same
//! holds for user snapshots: deleting one flattens the clones made from it.
//! Where layering is not available, or `full_copy_clones` is set, clones are
//! full copies (`rbd_copy3`, zero extents skipped) and reported as such.
//!
//! Crash safety: a clone or copy is made under `volume-<id>.tmp` and renamed;
//! a retried clone or a `delete` of the same id removes a leftover temporary.
//! Concurrency: a volume being cloned by this process cannot be deleted
//! (`Busy`); another client's clone holds the source open, and librbd
//! refuses to remove an image with watchers. Name changes of `<id>` are
//! made by one process at a time: the service runs each job on one node and
//! fences (`Backend::fence`) a node whose lease ran out before another
//! takes its jobs over.

mod ffi;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ffi::{Image, IoCtx, Unconnected};

use crate::config::RbdConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::id::validate_id;
use crate::{check_size, Backend, BlockIo, CloneKind, ReadOnly};

const NAME: &str = "rbd";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const CLONE_SNAP_PREFIX: &str = "clone-";
const INDEX_PREFIX: &str = "rekey_snapshot.";

const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const EBUSY: i32 = 16;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;
const EOPNOTSUPP: i32 = 95;
const ETIMEDOUT: i32 = 110;
const ECONNREFUSED: i32 = 111;
const ENOTCONN: i32 = 107;
const ESHUTDOWN: i32 = 108;
const EROFS: i32 = 30;
const ENOTEMPTY: i32 = 39;
const EPERM: i32 = 1;

/// Volumes as RBD images in one pool.
pub struct RbdBackend {
    ioctx: Arc<IoCtx>,
    config: RbdConfig,
    /// Volumes being cloned or copied from by this process, with a count.
    busy: Mutex<HashMap<String, usize>>,
}

impl std::fmt::Debug for RbdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdBackend").field("config", &self.config).finish_non_exhaustive()
    }
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Maps a librados/librbd error onto the crate's kinds.
fn rbd_error(what: impl Into<String>, e: io::Error) -> Error {
    let kind = match errno(&e) {
        ENOENT => ErrorKind::NotFound,
        EEXIST => ErrorKind::AlreadyExists,
        EBUSY | ENOTEMPTY => ErrorKind::Busy,
        EINVAL => ErrorKind::InvalidArgument,
        ENOSYS | EOPNOTSUPP => ErrorKind::Unsupported,
        ETIMEDOUT | ECONNREFUSED | ENOTCONN | ESHUTDOWN => ErrorKind::Unavailable,
        _ => ErrorKind::Io,
    };
    Error::io(what, e).with_kind(kind)
}

fn volume_image(id: &str) -> String {
    format!("volume-{id}")
}

fn temp_image(id: &str) -> String {
    format!("volume-{id}.tmp")
}

/// `f` again while it fails busy, for about 3 s: another client's
/// operation on the same image (a clone it is making from it) ends.
fn retry_busy<T>(f: impl Fn() -> Result<T>) -> Result<T> {
    let mut attempt = 0u64;
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::Busy && attempt < 6 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "image busy; trying again");
                std::thread::sleep(std::time::Duration::from_millis(150 * attempt));
            }
            r => return r,
        }
    }
}

fn snapshot_name(id: &str) -> String {
    format!("{SNAPSHOT_PREFIX}{id}")
}

fn clone_snap_name(id: &str) -> String {
    format!("{CLONE_SNAP_PREFIX}{id}")
}

fn index_object(snap_id: &str) -> String {
    format!("{INDEX_PREFIX}{snap_id}")
}

/// A bound on how long librados may wait, in seconds. `exact` bounds come
/// from explicit settings; otherwise a shorter value already in ceph.conf or
/// `$CEPH_ARGS` is kept (an operator may always ask for less, never for
/// unbounded).
#[derive(Debug, Clone, Copy)]
struct Bound {
    secs: u32,
    exact: bool,
}

impl Bound {
    fn exact(secs: u32) -> Self {
        Bound { secs: secs.max(1), exact: true }
    }

    fn at_most(secs: u32) -> Self {
        Bound { secs: secs.max(1), exact: false }
    }

    /// Sets `key` to this bound (or keeps a shorter configured value);
    /// returns the effective seconds.
    fn apply(self, cluster: &Unconnected, key: &str) -> io::Result<f64> {
        if !self.exact {
            let current = cluster.get(key).ok().and_then(|v| v.trim().parse::<f64>().ok());
            if let Some(c) = current.filter(|&c| c > 0.0 && c <= f64::from(self.secs)) {
                return Ok(c);
            }
        }
        cluster.set(key, &self.secs.to_string())?;
        Ok(f64::from(self.secs))
    }
}

fn connect(config: &RbdConfig) -> Result<Arc<IoCtx>> {
    connect_bounded(
        config,
        Bound::exact(config.connect_timeout_secs),
        Bound::exact(config.op_timeout_secs),
    )
}

/// Connects and opens the pool, with `client_mount_timeout` and
/// `rados_mon_op_timeout` bounded by `connect_bound` and
/// `rados_osd_op_timeout` by `op_bound`, so an unreachable cluster fails
/// instead of hanging.
fn connect_bounded(
    config: &RbdConfig,
    connect_bound: Bound,
    op_bound: Bound,
) -> Result<Arc<IoCtx>> {
    if config.pool.is_empty() || config.pool.contains(['/', '@', '\0']) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("invalid pool name {:?}", config.pool),
        ));
    }
    let user = config.ceph_user.strip_prefix("client.").unwrap_or(&config.ceph_user);
    let conf_desc = match &config.ceph_conf {
        Some(p) => p.display().to_string(),
        None => {
            std::env::var("CEPH_CONF").unwrap_or_else(|_| "Ceph's default ceph.conf".to_owned())
        }
    };
    let step_error = |step: &str, e: io::Error| {
        let kind = match step {
            "read config" | "read CEPH_ARGS" => ErrorKind::InvalidArgument,
            _ => ErrorKind::Io,
        };
        Error::io(format!("cannot {step} for the Ceph cluster of {conf_desc}"), e).with_kind(kind)
    };
    let unconnected = Unconnected::new(config.ceph_conf.as_deref(), user)
        .map_err(|(step, e)| step_error(step, e))?;
    let mut waited = 0.0f64;
    for (key, bound) in [
        ("client_mount_timeout", connect_bound),
        ("rados_mon_op_timeout", connect_bound),
        ("rados_osd_op_timeout", op_bound),
    ] {
        let secs = bound.apply(&unconnected, key).map_err(|e| step_error("set option", e))?;
        if key == "client_mount_timeout" {
            waited = secs;
        }
    }
    let cluster = unconnected.connect().map_err(|e| {
        Error::io(
            format!(
                "cannot connect to the Ceph cluster of {conf_desc} as client.{user} \
                 (waited up to {waited} s)"
            ),
            e,
        )
        .with_kind(ErrorKind::Unavailable)
    })?;
    IoCtx::new(Arc::new(cluster), &config.pool).map_err(|e| {
        if errno(&e) == ENOENT {
            Error::io(format!("pool {} does not exist", config.pool), e)
                .with_kind(ErrorKind::InvalidArgument)
        } else {
            rbd_error(format!("cannot open pool {}", config.pool), e)
        }
    })
}

impl RbdBackend {
    /// Connects to the cluster and opens the pool. Fails with `Unavailable`
    /// within `connect_timeout_secs` when no monitor answers.
    pub fn connect(config: &RbdConfig) -> Result<Self> {
        let ioctx = connect(config).map_err(|e| e.context(NAME, "connect", ""))?;
        Ok(RbdBackend { ioctx, config: config.clone(), busy: Mutex::new(HashMap::new()) })
    }

    /// The pool holding the volumes.
    pub fn pool(&self) -> &str {
        &self.config.pool
    }

    /// `POOL/IMAGE@SNAP` of the snapshot a copy-on-write clone reads
    /// through to; `None` for a volume that is not (or no longer) a clone.
    pub fn parent_of(&self, id: &str) -> Result<Option<String>> {
        (|| {
            validate_id(id)?;
            let image = self.open_image(id, None, true)?;
            let parent = image.parent().map_err(|e| rbd_error("cannot read parent", e))?;
            Ok(parent.map(|p| format!("{}/{}@{}", p.pool, p.image, p.snap)))
        })()
        .map_err(|e: Error| e.context(NAME, "parent_of", id))
    }

    fn lock_busy(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open_image(&self, id: &str, snap: Option<&str>, read_only: bool) -> Result<Image> {
        Image::open(&self.ioctx, &volume_image(id), snap, read_only).map_err(|e| {
            match (errno(&e), snap) {
                (ENOENT, None) => {
                    Error::new(ErrorKind::NotFound, format!("volume {id} does not exist"))
                }
                (ENOENT, Some(s)) => Error::new(
                    ErrorKind::NotFound,
                    format!("snapshot {s} of volume {id} does not exist"),
                ),
                _ => rbd_error(format!("cannot open image {}", volume_image(id)), e),
            }
        })
    }

    fn image_exists(&self, id: &str) -> Result<bool> {
        match Image::open(&self.ioctx, &volume_image(id), None, true) {
            Ok(_) => Ok(true),
            Err(e) if errno(&e) == ENOENT => Ok(false),
            Err(e) => Err(rbd_error(format!("cannot open image {}", volume_image(id)), e)),
        }
    }

    /// Removes a leftover `volume-<id>.tmp` of an interrupted clone.
    fn remove_temp(&self, id: &str) -> Result<()> {
        let tmp = temp_image(id);
        match self.ioctx.remove_image(&tmp) {
            Ok(()) => {
                tracing::info!(image = %tmp, "removed leftover temporary image");
                Ok(())
            }
            Err(e) if errno(&e) == ENOENT => Ok(()),
            Err(e) => Err(rbd_error(format!("cannot remove leftover {tmp}"), e)),
        }
    }

    /// The volume snapshot `snap_id` belongs to, from its index object.
    fn snapshot_volume(&self, snap_id: &str) -> Result<String> {
        match self.ioctx.read_object(&index_object(snap_id), 256) {
            Ok(bytes) => {
                let vol = String::from_utf8(bytes).unwrap_or_default();
                validate_id(&vol).map_err(|_| {
                    Error::new(
                        ErrorKind::Io,
                        format!("index object of snapshot {snap_id} is corrupt"),
                    )
                })?;
                Ok(vol)
            }
            Err(e) if errno(&e) == ENOENT => {
                Err(Error::new(ErrorKind::NotFound, format!("snapshot {snap_id} does not exist")))
            }
            Err(e) => Err(rbd_error(format!("cannot read index of snapshot {snap_id}"), e)),
        }
    }

    /// Volume id of a snapshot that really exists (a stale index whose
    /// snapshot is gone counts as not found, and is removed).
    fn existing_snapshot_volume(&self, snap_id: &str) -> Result<String> {
        let vol = self.snapshot_volume(snap_id)?;
        let exists = match self.open_image(&vol, None, true) {
            Ok(image) => image
                .snap_names()
                .map_err(|e| rbd_error("cannot list snapshots", e))?
                .contains(&snapshot_name(snap_id)),
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if !exists {
            let _ = self.ioctx.remove_object(&index_object(snap_id));
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("snapshot {snap_id} does not exist"),
            ));
        }
        Ok(vol)
    }

    /// Copies the data the clones of `vol@snap` share with it into them, so
    /// the snapshot can go.
    fn flatten_children(&self, vol: &str, snap: &str) -> Result<()> {
        let at_snap = self.open_image(vol, Some(snap), true)?;
        let children = at_snap
            .children()
            .map_err(|e| rbd_error(format!("cannot list clones of {snap}"), e))?;
        drop(at_snap);
        for (pool, child) in children {
            if pool != self.config.pool {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("snapshot {snap} has a clone {pool}/{child} in another pool"),
                ));
            }
            tracing::info!(parent = %format!("{}@{snap}", volume_image(vol)), %child, "flattening clone");
            let image = Image::open(&self.ioctx, &child, None, false)
                .map_err(|e| rbd_error(format!("cannot open clone {child}"), e))?;
            image.flatten().map_err(|e| rbd_error(format!("cannot flatten clone {child}"), e))?;
        }
        Ok(())
    }

    /// Unprotects (if protected) and removes snapshot `snap` of `image`.
    fn remove_snap(image: &Image, snap: &str) -> Result<()> {
        match image.snap_unprotect(snap) {
            Ok(()) => {}
            // Not protected (EINVAL), or gone already.
            Err(e) if matches!(errno(&e), EINVAL | ENOENT) => {}
            Err(e) => return Err(rbd_error(format!("cannot unprotect snapshot {snap}"), e)),
        }
        match image.snap_remove(snap) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == ENOENT => Ok(()),
            Err(e) => Err(rbd_error(format!("cannot remove snapshot {snap}"), e)),
        }
    }

    /// Makes `new_id` from `vol@snap` by copy-on-write (`cow`) or full copy,
    /// through a temporary name. Returns the kind actually made.
    fn make_clone(&self, vol: &str, snap: &str, new_id: &str, cow: bool) -> Result<CloneKind> {
        self.remove_temp(new_id)?;
        let tmp = temp_image(new_id);
        let mut kind = CloneKind::FullCopy;
        if cow {
            match self.clone_image_retrying(vol, snap, &tmp) {
                Ok(()) => kind = CloneKind::CowClone,
                Err(e) if matches!(errno(&e), ENOSYS | EOPNOTSUPP | EINVAL | EROFS) => {
                    tracing::info!(error = %e, vol, snap, "copy-on-write clone refused; making a full copy");
                }
                Err(e) => {
                    return Err(rbd_error(format!("cannot clone {}@{snap}", volume_image(vol)), e))
                }
            }
        }
        if kind == CloneKind::FullCopy {
            let src = self.open_image(vol, Some(snap), true)?;
            if let Err(e) = src.copy_to(&self.ioctx, &tmp) {
                let _ = self.remove_temp(new_id);
                return Err(rbd_error(format!("cannot copy {}@{snap}", volume_image(vol)), e));
            }
        }
        if let Err(e) = self.ioctx.rename_image(&tmp, &volume_image(new_id)) {
            let _ = self.remove_temp(new_id);
            return Err(match errno(&e) {
                EEXIST => {
                    Error::new(ErrorKind::AlreadyExists, format!("volume {new_id} already exists"))
                }
                _ => rbd_error(format!("cannot rename {tmp}"), e),
            });
        }
        Ok(kind)
    }

    /// `rbd_clone3` of `vol@snap`, again a few times while it answers
    /// ENOENT: it opens the parent afresh, and with several clients on the
    /// source (another node cloning it too, holding its exclusive lock) that
    /// open has been seen not to find a snapshot this client had just made
    /// and protected. A snapshot that really is gone still fails, after
    /// about 1.5 s.
    fn clone_image_retrying(&self, vol: &str, snap: &str, tmp: &str) -> io::Result<()> {
        let mut attempt = 0u64;
        loop {
            match self.ioctx.clone_image(&volume_image(vol), snap, tmp) {
                Err(e) if errno(&e) == ENOENT && attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, vol, snap, attempt, "clone found no parent snapshot; trying again");
                    std::thread::sleep(std::time::Duration::from_millis(100 * attempt));
                }
                r => return r,
            }
        }
    }

    fn do_clone_volume(&self, src: &str, new_id: &str) -> Result<CloneKind> {
        validate_id(src)?;
        validate_id(new_id)?;
        if self.image_exists(new_id)? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("volume {new_id} already exists"),
            ));
        }
        let _busy = BusyGuard::new(self, src);
        let image = self.open_image(src, None, false)?;
        let snap = clone_snap_name(new_id);
        // A leftover of an interrupted attempt holds old content: replace it,
        // its temporary clone (the snapshot's child) first. The attempt may
        // still be running on a node whose lease ran out (its commit will
        // be fenced): while it holds them they are busy for a moment.
        if image.snap_names().map_err(|e| rbd_error("cannot list snapshots", e))?.contains(&snap) {
            retry_busy(|| self.remove_temp(new_id))?;
            retry_busy(|| Self::remove_snap(&image, &snap))?;
        }
        image
            .snap_create(&snap)
            .map_err(|e| rbd_error(format!("cannot snapshot {}", volume_image(src)), e))?;
        let mut cow = !self.config.full_copy_clones;
        if cow {
            if let Err(e) = image.snap_protect(&snap) {
                if !matches!(errno(&e), ENOSYS | EOPNOTSUPP | EINVAL) {
                    let _ = Self::remove_snap(&image, &snap);
                    return Err(rbd_error(format!("cannot protect snapshot {snap}"), e));
                }
                tracing::info!(error = %e, "cannot protect a snapshot (no layering); making a full copy");
                cow = false;
            }
        }
        let result = self.make_clone(src, &snap, new_id, cow);
        // A full copy does not need the snapshot any more; a CoW clone keeps
        // it as its parent until the clone or the source is deleted.
        if !matches!(result, Ok(CloneKind::CowClone)) {
            if let Err(e) = Self::remove_snap(&image, &snap) {
                tracing::warn!(error = %e, snap, "could not remove the clone snapshot");
            }
        }
        result
    }

    fn do_delete(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        self.remove_temp(id)?;
        if self.lock_busy().get(id).is_some_and(|&n| n > 0) {
            return Err(Error::new(ErrorKind::Busy, format!("volume {id} is being cloned")));
        }
        let image = self.open_image(id, None, false)?;
        let snaps = image.snap_names().map_err(|e| rbd_error("cannot list snapshots", e))?;
        let user_snaps: Vec<_> =
            snaps.iter().filter_map(|s| s.strip_prefix(SNAPSHOT_PREFIX)).collect();
        if !user_snaps.is_empty() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("volume {id} has snapshots ({}); delete them first", user_snaps.join(", ")),
            ));
        }
        // Snapshots that clones read through to: give the clones their own
        // copy of the data, then drop the snapshots.
        for snap in snaps.iter().filter(|s| s.starts_with(CLONE_SNAP_PREFIX)) {
            self.flatten_children(id, snap)?;
            Self::remove_snap(&image, snap)?;
        }
        let parent = image.parent().map_err(|e| rbd_error("cannot read parent", e))?;
        drop(image);
        self.ioctx.remove_image(&volume_image(id)).map_err(|e| match errno(&e) {
            EBUSY => Error::new(
                ErrorKind::Busy,
                format!("volume {id} is open elsewhere (image has watchers)"),
            ),
            _ => rbd_error(format!("cannot remove image {}", volume_image(id)), e),
        })?;
        // This volume was a CoW clone: its parent snapshot existed only for it.
        if let Some(p) =
            parent.filter(|p| p.pool == self.config.pool && p.snap == clone_snap_name(id))
        {
            let cleanup = Image::open(&self.ioctx, &p.image, None, false)
                .map_err(|e| rbd_error("", e))
                .and_then(|img| Self::remove_snap(&img, &p.snap));
            if let Err(e) = cleanup {
                // Harmless: deleting the parent removes it later.
                tracing::warn!(error = %e, parent = %p.image, snap = %p.snap, "could not remove clone snapshot");
            }
        }
        Ok(())
    }

    fn do_create_snapshot(&self, vol_id: &str, snap_id: &str) -> Result<()> {
        validate_id(vol_id)?;
        validate_id(snap_id)?;
        match self.existing_snapshot_volume(snap_id) {
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("snapshot {snap_id} already exists"),
                ))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let image = self.open_image(vol_id, None, false)?;
        // The index goes first: a snapshot never exists without it.
        self.ioctx
            .write_object(&index_object(snap_id), vol_id.as_bytes())
            .map_err(|e| rbd_error(format!("cannot write index of snapshot {snap_id}"), e))?;
        let snap = snapshot_name(snap_id);
        if let Err(e) = image.snap_create(&snap) {
            let _ = self.ioctx.remove_object(&index_object(snap_id));
            return Err(rbd_error(format!("cannot create snapshot {snap}"), e));
        }
        // Protected now so clones from it can be copy-on-write; without
        // layering it stays unprotected and clones are full copies.
        if let Err(e) = image.snap_protect(&snap) {
            if !matches!(errno(&e), ENOSYS | EOPNOTSUPP | EINVAL) {
                let _ = Self::remove_snap(&image, &snap);
                let _ = self.ioctx.remove_object(&index_object(snap_id));
                return Err(rbd_error(format!("cannot protect snapshot {snap}"), e));
            }
        }
        Ok(())
    }

    fn do_delete_snapshot(&self, snap_id: &str) -> Result<()> {
        validate_id(snap_id)?;
        let vol = self.existing_snapshot_volume(snap_id)?;
        let snap = snapshot_name(snap_id);
        self.flatten_children(&vol, &snap)?;
        let image = self.open_image(&vol, None, false)?;
        Self::remove_snap(&image, &snap)?;
        match self.ioctx.remove_object(&index_object(snap_id)) {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == ENOENT => Ok(()),
            Err(e) => Err(rbd_error(format!("cannot remove index of snapshot {snap_id}"), e)),
        }
    }
}

impl Backend for RbdBackend {
    fn describe(&self) -> String {
        let conf = match &self.config.ceph_conf {
            Some(p) => p.display().to_string(),
            None => std::env::var("CEPH_CONF").unwrap_or_else(|_| "default ceph.conf".to_owned()),
        };
        let clones = if self.config.full_copy_clones { "full-copy" } else { "copy-on-write" };
        format!(
            "rbd backend: pool {} as client.{} ({conf}), {clones} clones",
            self.config.pool,
            self.config.ceph_user.strip_prefix("client.").unwrap_or(&self.config.ceph_user)
        )
    }

    fn create(&self, id: &str, size_bytes: u64) -> Result<()> {
        (|| {
            validate_id(id)?;
            check_size(size_bytes)?;
            self.ioctx.create_image(&volume_image(id), size_bytes).map_err(|e| match errno(&e) {
                EEXIST => {
                    Error::new(ErrorKind::AlreadyExists, format!("volume {id} already exists"))
                }
                _ => rbd_error(format!("cannot create image {}", volume_image(id)), e),
            })
        })()
        .map_err(|e: Error| e.context(NAME, "create", id))
    }

    fn delete(&self, id: &str) -> Result<()> {
        self.do_delete(id).map_err(|e| e.context(NAME, "delete", id))
    }

    fn extend(&self, id: &str, new_size: u64) -> Result<()> {
        (|| {
            validate_id(id)?;
            check_size(new_size)?;
            let image = self.open_image(id, None, false)?;
            let cur = image.size().map_err(|e| rbd_error("cannot get size", e))?;
            if new_size < cur {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("cannot shrink volume {id} from {cur} to {new_size} bytes"),
                ));
            }
            if new_size > cur {
                image.resize(new_size).map_err(|e| rbd_error("cannot resize", e))?;
            }
            Ok(())
        })()
        .map_err(|e: Error| e.context(NAME, "extend", id))
    }

    fn size(&self, id: &str) -> Result<u64> {
        (|| {
            validate_id(id)?;
            self.open_image(id, None, true)?.size().map_err(|e| rbd_error("cannot get size", e))
        })()
        .map_err(|e: Error| e.context(NAME, "size", id))
    }

    fn exists(&self, id: &str) -> Result<bool> {
        validate_id(id)
            .and_then(|()| self.image_exists(id))
            .map_err(|e| e.context(NAME, "exists", id))
    }

    fn list(&self) -> Result<Vec<String>> {
        let names = self
            .ioctx
            .list_images()
            .map_err(|e| rbd_error("cannot list images", e).context(NAME, "list", ""))?;
        let mut ids: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix("volume-"))
            .filter(|id| validate_id(id).is_ok())
            .map(str::to_owned)
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn location(&self, id: &str) -> Result<String> {
        validate_id(id).map_err(|e| e.context(NAME, "location", id))?;
        Ok(format!("rbd:{}/{}", self.config.pool, volume_image(id)))
    }

    fn clone_volume(&self, src_id: &str, new_id: &str) -> Result<CloneKind> {
        let kind = self
            .do_clone_volume(src_id, new_id)
            .map_err(|e| e.context(NAME, "clone_volume", new_id))?;
        tracing::debug!(src_id, new_id, %kind, "volume cloned");
        Ok(kind)
    }

    fn open(&self, id: &str) -> Result<Box<dyn BlockIo>> {
        (|| {
            validate_id(id)?;
            let image = self.open_image(id, None, false)?;
            let name = format!("{}/{}", self.config.pool, volume_image(id));
            Ok(Box::new(RbdIo::new(image, name)) as Box<dyn BlockIo>)
        })()
        .map_err(|e: Error| e.context(NAME, "open", id))
    }

    fn create_snapshot(&self, vol_id: &str, snap_id: &str) -> Result<()> {
        self.do_create_snapshot(vol_id, snap_id)
            .map_err(|e| e.context(NAME, "create_snapshot", snap_id))
    }

    fn delete_snapshot(&self, snap_id: &str) -> Result<()> {
        self.do_delete_snapshot(snap_id).map_err(|e| e.context(NAME, "delete_snapshot", snap_id))
    }

    fn snapshots(&self, vol_id: &str) -> Result<Vec<String>> {
        (|| {
            validate_id(vol_id)?;
            let image = self.open_image(vol_id, None, true)?;
            let mut ids: Vec<String> = image
                .snap_names()
                .map_err(|e| rbd_error("cannot list snapshots", e))?
                .iter()
                .filter_map(|s| s.strip_prefix(SNAPSHOT_PREFIX))
                .filter(|id| validate_id(id).is_ok())
                .map(str::to_owned)
                .collect();
            ids.sort();
            Ok(ids)
        })()
        .map_err(|e: Error| e.context(NAME, "snapshots", vol_id))
    }

    fn clone_from_snapshot(&self, snap_id: &str, new_id: &str) -> Result<CloneKind> {
        (|| {
            validate_id(snap_id)?;
            validate_id(new_id)?;
            let vol = self.existing_snapshot_volume(snap_id)?;
            if self.image_exists(new_id)? {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("volume {new_id} already exists"),
                ));
            }
            self.make_clone(&vol, &snapshot_name(snap_id), new_id, !self.config.full_copy_clones)
        })()
        .map_err(|e: Error| e.context(NAME, "clone_from_snapshot", new_id))
    }

    fn open_snapshot(&self, snap_id: &str) -> Result<Box<dyn BlockIo>> {
        (|| {
            validate_id(snap_id)?;
            let vol = self.snapshot_volume(snap_id)?;
            let image =
                self.open_image(&vol, Some(&snapshot_name(snap_id)), true).map_err(|e| {
                    if e.kind() == ErrorKind::NotFound {
                        Error::new(
                            ErrorKind::NotFound,
                            format!("snapshot {snap_id} does not exist"),
                        )
                    } else {
                        e
                    }
                })?;
            let name =
                format!("{}/{}@{}", self.config.pool, volume_image(&vol), snapshot_name(snap_id));
            Ok(Box::new(ReadOnly(RbdIo::new(image, name))) as Box<dyn BlockIo>)
        })()
        .map_err(|e: Error| e.context(NAME, "open_snapshot", snap_id))
    }

    fn session(&self) -> Option<String> {
        match self.ioctx.cluster().addrs() {
            Ok(a) if !a.is_empty() => Some(a),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this client's address: it cannot be fenced");
                None
            }
        }
    }

    fn fence(&self, session: &str) -> Result<()> {
        // Blocklisted for the cluster's default time (an hour): the process
        // is gone and its address is never reused by a new session.
        self.ioctx
            .cluster()
            .blocklist_add(session, 0)
            .map_err(|e| rbd_error(format!("cannot blocklist client {session}"), e))
            .map_err(|e| e.context(NAME, "fence", session))?;
        // The monitor has committed the blocklist, but an OSD learns of it
        // only from a newer map. Taking our own map to the blocklist's epoch
        // makes our next op on an image (taking its lock) bring that OSD up
        // to date first, as librbd's own lock break does.
        self.ioctx
            .cluster()
            .wait_for_latest_osdmap()
            .map_err(|e| rbd_error(format!("cannot fetch the OSD map after blocklisting {session}"), e))
            .map_err(|e| e.context(NAME, "fence", session))?;
        tracing::info!(client = session, "dead client blocklisted: its image locks and watches are released");
        Ok(())
    }
}

/// Marks a volume as a clone source until dropped.
struct BusyGuard<'a> {
    backend: &'a RbdBackend,
    id: String,
}

impl<'a> BusyGuard<'a> {
    fn new(backend: &'a RbdBackend, id: &str) -> Self {
        *backend.lock_busy().entry(id.to_owned()).or_insert(0) += 1;
        BusyGuard { backend, id: id.to_owned() }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.backend.lock_busy();
        if let Some(n) = busy.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.id);
            }
        }
    }
}

/// An open RBD image as a [`BlockIo`].
///
/// librbd does not promise that one `rbd_image_t` may be driven from several
/// threads at once, so calls on the handle are serialised by a mutex; the
/// handle itself may move between threads (`ffi::Image: Send`), which makes
/// `Mutex<Image>` `Send + Sync`. Reads, writes and flushes are asynchronous
/// librbd requests: the mutex is held only to submit them, so one thread's
/// read (a re-encryption's prefetch, an export worker's) runs while another
/// thread's write or flush is in flight, and one large call keeps up to
/// [`IN_FLIGHT`] object-sized requests going at once, as `rbd bench
/// --io-threads` does.
pub struct RbdIo {
    image: Mutex<Image>,
    /// `POOL/IMAGE[@SNAP]`, for error messages.
    name: String,
}

/// Largest single librbd request: librbd returns lengths as C ints in places.
const MAX_IO: usize = 1 << 30;

/// Bytes per asynchronous request: the default RBD object size, so a
/// request maps to one object and one OSD op.
const PIECE: usize = 4 << 20;

/// Requests one read or write keeps in flight: enough to keep every OSD of
/// a small cluster busy, and `rbd bench`'s default `--io-threads`.
const IN_FLIGHT: usize = 16;

impl RbdIo {
    fn new(image: Image, name: String) -> Self {
        RbdIo { image: Mutex::new(image), name }
    }

    /// Says which image a stalled request was for and why it failed,
    /// keeping the I/O error kind; other errors pass through unchanged.
    fn explain(&self, op: &str, e: io::Error) -> io::Error {
        if errno(&e) == ETIMEDOUT {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "RBD {op} on {}: the Ceph cluster did not answer within the OSD op \
                     timeout (OSD down or unreachable)",
                    self.name
                ),
            )
        } else {
            e
        }
    }

    fn lock(&self) -> MutexGuard<'_, Image> {
        // The handle holds no Rust invariants a panic could break.
        self.image.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockIo for RbdIo {
    fn size(&self) -> io::Result<u64> {
        self.lock().size().map_err(|e| self.explain("stat", e))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_inner(buf, offset).map_err(|e| self.explain("read", e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_inner(buf, offset).map_err(|e| self.explain("write", e))
    }

    fn flush(&self) -> io::Result<()> {
        self.flush_inner().map_err(|e| self.explain("flush", e))
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<bool> {
        self.discard_inner(offset, len).map_err(|e| self.explain("discard", e))
    }
}

impl RbdIo {
    /// Checks `[offset, offset + len)` lies inside the image.
    fn check_range(&self, offset: u64, len: usize, kind: io::ErrorKind, what: &str) -> io::Result<()> {
        let size = self.lock().size()?;
        if offset.checked_add(len as u64).is_none_or(|end| end > size) {
            return Err(io::Error::new(kind, what.to_string()));
        }
        Ok(())
    }

    fn read_inner(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len(), io::ErrorKind::UnexpectedEof, "read past end of image")?;
        ffi::with_batch(|batch| {
            for (i, piece) in buf.chunks_mut(PIECE).enumerate() {
                if batch.in_flight() >= IN_FLIGHT {
                    batch.wait_oldest()?;
                }
                batch.read(&self.lock(), piece, offset + (i * PIECE) as u64)?;
            }
            Ok(())
        })
    }

    fn write_inner(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len(), io::ErrorKind::WriteZero, "write past end of image")?;
        ffi::with_batch(|batch| {
            for (i, piece) in buf.chunks(PIECE).enumerate() {
                if batch.in_flight() >= IN_FLIGHT {
                    batch.wait_oldest()?;
                }
                batch.write(&self.lock(), piece, offset + (i * PIECE) as u64)?;
            }
            Ok(())
        })
    }

    fn flush_inner(&self) -> io::Result<()> {
        ffi::with_batch(|batch| batch.flush(&self.lock()))
    }

    fn discard_inner(&self, offset: u64, len: u64) -> io::Result<bool> {
        let image = self.lock();
        let mut pos = offset;
        let end =
            offset.checked_add(len).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        while pos < end {
            let n = (end - pos).min(MAX_IO as u64);
            image.discard(pos, n)?;
            pos += n;
        }
        Ok(true)
    }
}

/// Where `rbd:POOL/IMAGE[@SNAP]` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbdSpec {
    /// The pool.
    pub pool: String,
    /// The image name (any image, not only `volume-<id>`).
    pub image: String,
    /// A snapshot to open read-only.
    pub snap: Option<String>,
}

impl std::str::FromStr for RbdSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("invalid RBD spec {spec:?}: {why} (want rbd:POOL/IMAGE[@SNAP])"),
            )
        };
        let rest = spec.strip_prefix("rbd:").ok_or_else(|| bad("missing rbd: prefix"))?;
        let (pool, rest) = rest.split_once('/').ok_or_else(|| bad("missing '/'"))?;
        let (image, snap) = match rest.split_once('@') {
            Some((i, s)) => (i, Some(s)),
            None => (rest, None),
        };
        let ok = |s: &str| !s.is_empty() && !s.contains(['/', '@', '\0']);
        if !ok(pool) || !ok(image) || snap.is_some_and(|s| !ok(s)) {
            return Err(bad("empty or malformed part"));
        }
        Ok(RbdSpec {
            pool: pool.to_owned(),
            image: image.to_owned(),
            snap: snap.map(str::to_owned),
        })
    }
}

/// How a command-line client reaches the cluster of an `rbd:` spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RbdClientOptions {
    /// ceph.conf to read; `None`: `$CEPH_CONF`, then Ceph's search path.
    pub ceph_conf: Option<PathBuf>,
    /// Client name without `client.`; `None`: `admin`.
    pub ceph_user: Option<String>,
    /// Bound on connecting and monitor requests. `None`: 10 s, or less if
    /// ceph.conf / `$CEPH_ARGS` set `client_mount_timeout` lower.
    pub connect_timeout_secs: Option<u32>,
    /// Bound on each OSD request. `None`: 30 s, or less if ceph.conf /
    /// `$CEPH_ARGS` set `rados_osd_op_timeout` lower. A stalled write then
    /// fails after about twice this (librbd retries once).
    pub op_timeout_secs: Option<u32>,
}

/// Which LUKS version librbd should expect when loading its encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RbdLuksFormat {
    /// LUKS1 (`rbd encryption format … luks1`).
    Luks1,
    /// LUKS2 (`rbd encryption format … luks2`).
    Luks2,
}

/// Opens any RBD image (`rbd:POOL/IMAGE`, read-write) or snapshot
/// (`rbd:POOL/IMAGE@SNAP`, read-only) as a [`BlockIo`], for the CLI.
/// `ceph_conf` None uses `$CEPH_CONF`; `ceph_user` None is `admin`; the
/// timeouts are [`RbdClientOptions`]' defaults.
pub fn open_rbd_spec(
    spec: &str,
    ceph_conf: Option<&Path>,
    ceph_user: Option<&str>,
) -> Result<Box<dyn BlockIo>> {
    let options = RbdClientOptions {
        ceph_conf: ceph_conf.map(Path::to_path_buf),
        ceph_user: ceph_user.map(str::to_owned),
        ..RbdClientOptions::default()
    };
    open_rbd_spec_with(spec, &options)
}

/// [`open_rbd_spec`] with explicit client options (timeouts).
pub fn open_rbd_spec_with(spec: &str, options: &RbdClientOptions) -> Result<Box<dyn BlockIo>> {
    (|| {
        let (spec, image) = open_spec_image(spec, options)?;
        let io = RbdIo::new(image, spec.to_string());
        Ok(if spec.snap.is_some() {
            Box::new(ReadOnly(io)) as Box<dyn BlockIo>
        } else {
            Box::new(io)
        })
    })()
    .map_err(|e: Error| e.context(NAME, "open_rbd_spec", ""))
}

/// Opens an `rbd:` image through librbd's own LUKS support
/// (`rbd_encryption_load`, what `rbd encryption load` and QEMU's librbd
/// driver use): the [`BlockIo`] reads and writes plaintext, decrypted by
/// librbd, and its size excludes the header.
///
/// This is an independent check of headers written by the rekey engine:
/// `InvalidArgument` when librbd does not accept the header, or when
/// `passphrase` opens none of its keyslots.
pub fn open_rbd_spec_decrypted(
    spec: &str,
    options: &RbdClientOptions,
    format: RbdLuksFormat,
    passphrase: &[u8],
) -> Result<Box<dyn BlockIo>> {
    (|| {
        let (spec, image) = open_spec_image(spec, options)?;
        load_encryption(&image, &spec.to_string(), format, passphrase)?;
        let io = RbdIo::new(image, spec.to_string());
        Ok(if spec.snap.is_some() {
            Box::new(ReadOnly(io)) as Box<dyn BlockIo>
        } else {
            Box::new(io)
        })
    })()
    .map_err(|e: Error| e.context(NAME, "open_rbd_spec_decrypted", ""))
}

impl RbdBackend {
    /// Opens volume `id` through librbd's own LUKS support, as
    /// [`open_rbd_spec_decrypted`] does: plaintext I/O decrypted by librbd,
    /// `InvalidArgument` when librbd rejects the header or the passphrase.
    pub fn open_decrypted(
        &self,
        id: &str,
        format: RbdLuksFormat,
        passphrase: &[u8],
    ) -> Result<Box<dyn BlockIo>> {
        (|| {
            validate_id(id)?;
            let image = self.open_image(id, None, false)?;
            load_encryption(&image, &volume_image(id), format, passphrase)?;
            let name = format!("{}/{}", self.config.pool, volume_image(id));
            Ok(Box::new(RbdIo::new(image, name)) as Box<dyn BlockIo>)
        })()
        .map_err(|e: Error| e.context(NAME, "open_decrypted", id))
    }
}

fn load_encryption(
    image: &Image,
    name: &str,
    format: RbdLuksFormat,
    passphrase: &[u8],
) -> Result<()> {
    image.encryption_load(format == RbdLuksFormat::Luks2, passphrase).map_err(|e| match errno(&e) {
        EPERM => Error::io(format!("librbd: the passphrase opens no keyslot of {name}"), e)
            .with_kind(ErrorKind::InvalidArgument),
        EINVAL => Error::io(
            format!("librbd does not accept the encryption header of {name} as {format:?}"),
            e,
        )
        .with_kind(ErrorKind::InvalidArgument),
        _ => rbd_error(format!("librbd cannot load the encryption of {name}"), e),
    })
}

impl std::fmt::Display for RbdSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pool, self.image)?;
        if let Some(s) = &self.snap {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}

/// Parses `spec`, connects with bounded timeouts and opens the image
/// (read-only at a snapshot).
fn open_spec_image(spec: &str, options: &RbdClientOptions) -> Result<(RbdSpec, Image)> {
    let spec: RbdSpec = spec.parse()?;
    let mut config = RbdConfig::new(spec.pool.clone());
    config.ceph_conf.clone_from(&options.ceph_conf);
    if let Some(user) = &options.ceph_user {
        config.ceph_user.clone_from(user);
    }
    let bound = |explicit: Option<u32>, default: u32| match explicit {
        Some(s) => Bound::exact(s),
        None => Bound::at_most(default),
    };
    let ioctx = connect_bounded(
        &config,
        bound(options.connect_timeout_secs, config.connect_timeout_secs),
        bound(options.op_timeout_secs, config.op_timeout_secs),
    )?;
    let image = Image::open(&ioctx, &spec.image, spec.snap.as_deref(), spec.snap.is_some())
        .map_err(|e| rbd_error(format!("cannot open {spec}"), e))?;
    Ok((spec, image))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let s: RbdSpec = "rbd:volumes/volume-1@snap".parse().unwrap();
        assert_eq!(
            s,
            RbdSpec { pool: "volumes".into(), image: "volume-1".into(), snap: Some("snap".into()) }
        );
        let s: RbdSpec = "rbd:p/img".parse().unwrap();
        assert_eq!(s.snap, None);
        for bad in [
            "p/img",
            "rbd:",
            "rbd:p",
            "rbd:/img",
            "rbd:p/",
            "rbd:p/img@",
            "rbd:p/a/b",
            "rbd:p/a@b@c",
        ] {
            assert_eq!(
                bad.parse::<RbdSpec>().unwrap_err().kind(),
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
    }
}
