//! Hand-written bindings to the few librados/librbd calls the RBD backend
//! uses (Ceph Pacific, librbd 1.16), wrapped in safe handle types.
//!
//! Data I/O goes through librbd's asynchronous calls (`rbd_aio_*`), grouped
//! in a [`Batch`] that cannot outlive the buffers it reads into or writes from.
//!
//! This is the crate's only `unsafe` code. Every wrapper upholds librbd's
//! contract: handles are valid from creation to `Drop`, strings are
//! NUL-terminated `CString`s that outlive the call, buffers passed with their
//! true lengths, and arrays librbd fills are released with its own cleanup
//! function. Errors come back as negative errno values and are returned as
//! `io::Error::from_raw_os_error`.
//!
//! Lifetimes: an [`IoCtx`] keeps its [`Cluster`] alive and an [`Image`] its
//! [`IoCtx`] (through `Arc`), so a handle is never used after its parent is
//! shut down.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::marker::PhantomData;
use std::path::Path;
use std::ptr;
use std::sync::Arc;

#[allow(non_camel_case_types)]
type rados_t = *mut c_void;
#[allow(non_camel_case_types)]
type rados_ioctx_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_image_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_image_options_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_completion_t = *mut c_void;
#[allow(non_camel_case_types)]
type rbd_callback_t = Option<extern "C" fn(rbd_completion_t, *mut c_void)>;

#[repr(C)]
struct ImageSpec {
    id: *mut c_char,
    name: *mut c_char,
}

#[repr(C)]
struct LinkedImageSpec {
    pool_id: i64,
    pool_name: *mut c_char,
    pool_namespace: *mut c_char,
    image_id: *mut c_char,
    image_name: *mut c_char,
    trash: bool,
}

#[repr(C)]
struct SnapSpec {
    id: u64,
    namespace_type: c_int,
    name: *mut c_char,
}

#[repr(C)]
struct SnapInfo {
    id: u64,
    size: u64,
    name: *const c_char,
}

/// `rbd_encryption_luks{1,2}_format_options_t` (identical layouts); librbd
/// reads only the passphrase when loading.
#[repr(C)]
struct LuksOptions {
    alg: c_int,
    passphrase: *const c_char,
    passphrase_size: usize,
}

/// `rbd_encryption_format_t`.
const RBD_ENCRYPTION_FORMAT_LUKS1: c_int = 0;
const RBD_ENCRYPTION_FORMAT_LUKS2: c_int = 1;
/// `rbd_encryption_algorithm_t` AES-256 (ignored by `rbd_encryption_load`).
const RBD_ENCRYPTION_ALGORITHM_AES256: c_int = 1;

#[link(name = "rados")]
extern "C" {
    fn rados_create2(
        cluster: *mut rados_t,
        clustername: *const c_char,
        name: *const c_char,
        flags: u64,
    ) -> c_int;
    fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    fn rados_conf_parse_env(cluster: rados_t, var: *const c_char) -> c_int;
    fn rados_connect(cluster: rados_t) -> c_int;
    fn rados_shutdown(cluster: rados_t);
    fn rados_ioctx_create(
        cluster: rados_t,
        pool: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    fn rados_ioctx_destroy(io: rados_ioctx_t);
    fn rados_write_full(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *const c_char,
        len: usize,
    ) -> c_int;
    fn rados_read(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *mut c_char,
        len: usize,
        off: u64,
    ) -> c_int;
    fn rados_remove(io: rados_ioctx_t, oid: *const c_char) -> c_int;
    fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;
    fn rados_buffer_free(buf: *mut c_char);
    fn rados_blocklist_add(cluster: rados_t, client_address: *mut c_char, expire_seconds: u32)
        -> c_int;
    fn rados_wait_for_latest_osdmap(cluster: rados_t) -> c_int;
}

#[link(name = "rbd")]
extern "C" {
    fn rbd_image_options_create(opts: *mut rbd_image_options_t);
    fn rbd_image_options_destroy(opts: rbd_image_options_t);
    fn rbd_create4(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        opts: rbd_image_options_t,
    ) -> c_int;
    fn rbd_clone3(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        c_opts: rbd_image_options_t,
    ) -> c_int;
    fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
    fn rbd_rename(io: rados_ioctx_t, srcname: *const c_char, destname: *const c_char) -> c_int;
    fn rbd_list2(io: rados_ioctx_t, images: *mut ImageSpec, max_images: *mut usize) -> c_int;
    fn rbd_image_spec_list_cleanup(images: *mut ImageSpec, num_images: usize);

    fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap: *const c_char,
    ) -> c_int;
    fn rbd_close(image: rbd_image_t) -> c_int;
    fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    fn rbd_discard(image: rbd_image_t, ofs: u64, len: u64) -> c_int;
    fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_read(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *mut c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_write(
        image: rbd_image_t,
        off: u64,
        len: usize,
        buf: *const c_char,
        c: rbd_completion_t,
    ) -> c_int;
    fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    fn rbd_aio_wait_for_complete(c: rbd_completion_t) -> c_int;
    fn rbd_aio_get_return_value(c: rbd_completion_t) -> isize;
    fn rbd_aio_release(c: rbd_completion_t);
    fn rbd_copy3(
        src: rbd_image_t,
        dest_io: rados_ioctx_t,
        destname: *const c_char,
        opts: rbd_image_options_t,
    ) -> c_int;
    fn rbd_flatten(image: rbd_image_t) -> c_int;
    fn rbd_encryption_load(
        image: rbd_image_t,
        format: c_int,
        opts: *mut c_void,
        opts_size: usize,
    ) -> c_int;

    fn rbd_snap_create(image: rbd_image_t, name: *const c_char) -> c_int;
    fn rbd_snap_remove(image: rbd_image_t, name: *const c_char) -> c_int;
    fn rbd_snap_protect(image: rbd_image_t, name: *const c_char) -> c_int;
    fn rbd_snap_unprotect(image: rbd_image_t, name: *const c_char) -> c_int;
    fn rbd_snap_list(image: rbd_image_t, snaps: *mut SnapInfo, max_snaps: *mut c_int) -> c_int;
    fn rbd_snap_list_end(snaps: *mut SnapInfo);

    fn rbd_get_parent(
        image: rbd_image_t,
        parent_image: *mut LinkedImageSpec,
        parent_snap: *mut SnapSpec,
    ) -> c_int;
    fn rbd_linked_image_spec_cleanup(image: *mut LinkedImageSpec);
    fn rbd_snap_spec_cleanup(snap: *mut SnapSpec);
    fn rbd_list_children3(
        image: rbd_image_t,
        images: *mut LinkedImageSpec,
        max_images: *mut usize,
    ) -> c_int;
    fn rbd_linked_image_spec_list_cleanup(images: *mut LinkedImageSpec, num_images: usize);
}

const ERANGE: c_int = 34;

fn check(rc: c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::from_raw_os_error(-rc))
    } else {
        Ok(())
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

/// Copies a C string librbd owns; NULL becomes empty.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string valid for the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL and NUL-terminated per this function's contract.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Empty image options: librbd then applies the cluster's defaults
/// (format 2, `rbd_default_features`, object size).
struct ImageOptions(rbd_image_options_t);

impl ImageOptions {
    fn new() -> Self {
        let mut opts: rbd_image_options_t = ptr::null_mut();
        // SAFETY: `opts` is a valid out-pointer; librbd allocates the options.
        unsafe { rbd_image_options_create(&mut opts) };
        ImageOptions(opts)
    }
}

impl Drop for ImageOptions {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create and destroyed once.
        unsafe { rbd_image_options_destroy(self.0) };
    }
}

/// A connected cluster handle.
pub(crate) struct Cluster {
    handle: rados_t,
}

// SAFETY: librados cluster handles have no thread affinity and librados
// serialises its own state; after `connect` we only create io contexts from
// it, which librados allows from any thread.
unsafe impl Send for Cluster {}
// SAFETY: as above; no method mutates the handle's configuration after connect.
unsafe impl Sync for Cluster {}

/// A cluster handle that has read its configuration but is not connected
/// yet: options may still be read and changed.
pub(crate) struct Unconnected {
    handle: rados_t,
}

impl Unconnected {
    /// Creates a handle for `client.<user>`, reads `conf` (None: `$CEPH_CONF`
    /// or Ceph's default search), then `$CEPH_ARGS` over it, as every Ceph
    /// client does.
    pub(crate) fn new(
        conf: Option<&Path>,
        user: &str,
    ) -> Result<Unconnected, (&'static str, io::Error)> {
        let cluster_name = cstring("ceph").map_err(|e| ("create", e))?;
        let name = cstring(&format!("client.{user}")).map_err(|e| ("create", e))?;
        let mut handle: rados_t = ptr::null_mut();
        // SAFETY: valid out-pointer and NUL-terminated strings that outlive the call.
        check(unsafe { rados_create2(&mut handle, cluster_name.as_ptr(), name.as_ptr(), 0) })
            .map_err(|e| ("create", e))?;
        // From here on `Drop` shuts the handle down on every error path.
        let cluster = Unconnected { handle };
        let path = match conf {
            Some(p) => Some(cstring(&p.to_string_lossy()).map_err(|e| ("read config", e))?),
            None => None,
        };
        let path_ptr = path.as_ref().map_or(ptr::null(), |p| p.as_ptr());
        // SAFETY: the handle is valid and not connected; path is NULL or a live CString.
        check(unsafe { rados_conf_read_file(cluster.handle, path_ptr) })
            .map_err(|e| ("read config", e))?;
        // SAFETY: valid, unconnected handle; NULL selects $CEPH_ARGS.
        check(unsafe { rados_conf_parse_env(cluster.handle, ptr::null()) })
            .map_err(|e| ("read CEPH_ARGS", e))?;
        Ok(cluster)
    }

    /// The current value of a configuration option, as text.
    pub(crate) fn get(&self, key: &str) -> io::Result<String> {
        let k = cstring(key)?;
        let mut buf = vec![0u8; 256];
        // SAFETY: valid handle; `buf` is writable for its length and librados
        // NUL-terminates what it writes (ENAMETOOLONG if it does not fit).
        check(unsafe {
            rados_conf_get(self.handle, k.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Sets a configuration option.
    pub(crate) fn set(&self, key: &str, value: &str) -> io::Result<()> {
        let (k, v) = (cstring(key)?, cstring(value)?);
        // SAFETY: valid, unconnected handle; both strings live across the call.
        check(unsafe { rados_conf_set(self.handle, k.as_ptr(), v.as_ptr()) })
    }

    /// Connects; the handle is consumed either way.
    pub(crate) fn connect(self) -> io::Result<Cluster> {
        // SAFETY: valid handle, configured, connected once.
        check(unsafe { rados_connect(self.handle) })?;
        let handle = self.handle;
        // Ownership of the handle moves to the Cluster; skip our Drop.
        std::mem::forget(self);
        Ok(Cluster { handle })
    }
}

impl Drop for Unconnected {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create2 and is released once;
        // rados_shutdown is the release call for unconnected handles too.
        unsafe { rados_shutdown(self.handle) };
    }
}

impl Cluster {
    /// This session's client address as the OSDs see it (what
    /// `rbd status` lists as a watcher and `rbd lock ls` as a locker).
    pub(crate) fn addrs(&self) -> io::Result<String> {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: connected handle, valid out-pointer; on success librados
        // hands over a NUL-terminated buffer we release with its own free.
        check(unsafe { rados_getaddrs(self.handle, &mut out) })?;
        // SAFETY: `out` is NULL or the NUL-terminated buffer just returned.
        let addrs = unsafe { owned(out) };
        if !out.is_null() {
            // SAFETY: allocated by librados for this call, freed once.
            unsafe { rados_buffer_free(out) };
        }
        Ok(addrs)
    }

    /// Blocklists `addr` on the OSDs for `expire_seconds` (0: the cluster's
    /// default): its watches drop and its writes fail from the next map on.
    pub(crate) fn blocklist_add(&self, addr: &str, expire_seconds: u32) -> io::Result<()> {
        let addr = cstring(addr)?;
        // SAFETY: connected handle; librados only reads the address string
        // (the parameter is `char *` for historical reasons), which lives
        // across the call.
        check(unsafe { rados_blocklist_add(self.handle, addr.as_ptr().cast_mut(), expire_seconds) })
    }

    /// Waits until this client has the cluster's newest OSD map. Every op it
    /// sends from then on carries that epoch, and an OSD holds an op from a
    /// newer epoch until it has caught up — so after a blocklist, this
    /// client's next op on an object guarantees the fenced client's ops on
    /// that object are refused.
    pub(crate) fn wait_for_latest_osdmap(&self) -> io::Result<()> {
        // SAFETY: connected handle; the call only blocks on the monitor.
        check(unsafe { rados_wait_for_latest_osdmap(self.handle) })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create2; every IoCtx holds an Arc
        // to this Cluster, so none is alive any more.
        unsafe { rados_shutdown(self.handle) };
    }
}

/// An I/O context on one pool.
pub(crate) struct IoCtx {
    handle: rados_ioctx_t,
    cluster: Arc<Cluster>,
}

// SAFETY: librados io contexts are usable from any thread and concurrently
// for object operations; we never change per-ioctx state (snap context,
// namespace, locator) after creation, which is the part that is not
// thread-safe. librbd duplicates the ioctx internally for images it opens.
unsafe impl Send for IoCtx {}
// SAFETY: see `Send`.
unsafe impl Sync for IoCtx {}

impl IoCtx {
    /// Opens `pool`.
    pub(crate) fn new(cluster: Arc<Cluster>, pool: &str) -> io::Result<Arc<IoCtx>> {
        let pool = cstring(pool)?;
        let mut handle: rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected cluster handle (kept alive by the Arc), valid
        // out-pointer, live CString.
        check(unsafe { rados_ioctx_create(cluster.handle, pool.as_ptr(), &mut handle) })?;
        Ok(Arc::new(IoCtx { handle, cluster }))
    }

    /// The cluster this context belongs to.
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates an image of `size` bytes with the cluster's default features.
    pub(crate) fn create_image(&self, name: &str, size: u64) -> io::Result<()> {
        let name = cstring(name)?;
        let opts = ImageOptions::new();
        // SAFETY: valid ioctx and options; the name lives across the call.
        check(unsafe { rbd_create4(self.handle, name.as_ptr(), size, opts.0) })
    }

    /// Creates `child` as a copy-on-write clone of `parent@snap` (protected).
    pub(crate) fn clone_image(&self, parent: &str, snap: &str, child: &str) -> io::Result<()> {
        let (p, s, c) = (cstring(parent)?, cstring(snap)?, cstring(child)?);
        let opts = ImageOptions::new();
        // SAFETY: both ioctx arguments are this valid handle; strings and
        // options live across the call.
        check(unsafe {
            rbd_clone3(self.handle, p.as_ptr(), s.as_ptr(), self.handle, c.as_ptr(), opts.0)
        })
    }

    /// Removes an image (fails with EBUSY while it has snapshots or watchers).
    pub(crate) fn remove_image(&self, name: &str) -> io::Result<()> {
        let name = cstring(name)?;
        // SAFETY: valid ioctx; the name lives across the call.
        check(unsafe { rbd_remove(self.handle, name.as_ptr()) })
    }

    /// Renames an image within the pool (EEXIST if `to` exists).
    pub(crate) fn rename_image(&self, from: &str, to: &str) -> io::Result<()> {
        let (f, t) = (cstring(from)?, cstring(to)?);
        // SAFETY: valid ioctx; both names live across the call.
        check(unsafe { rbd_rename(self.handle, f.as_ptr(), t.as_ptr()) })
    }

    /// Names of all images in the pool.
    pub(crate) fn list_images(&self) -> io::Result<Vec<String>> {
        let mut cap = 64usize;
        loop {
            let mut specs: Vec<ImageSpec> = Vec::with_capacity(cap);
            let mut n = cap;
            // SAFETY: `specs` has room for `n` entries; librbd writes at most
            // `n` and reports the count (or the needed size with ERANGE).
            let rc = unsafe { rbd_list2(self.handle, specs.as_mut_ptr(), &mut n) };
            if rc == -ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            check(rc)?;
            // SAFETY: on success librbd initialised the first `n` entries.
            unsafe { specs.set_len(n) };
            // SAFETY: the entries were initialised by librbd and hold valid strings.
            let names = specs.iter().map(|s| unsafe { owned(s.name) }).collect();
            // SAFETY: releases exactly the `n` entries librbd filled; the Vec's
            // own buffer is freed by Rust afterwards (cleanup frees only the strings).
            unsafe { rbd_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
            return Ok(names);
        }
    }

    /// Replaces object `oid`'s content with `data`.
    pub(crate) fn write_object(&self, oid: &str, data: &[u8]) -> io::Result<()> {
        let oid = cstring(oid)?;
        // SAFETY: valid ioctx; the buffer pointer and length describe `data`.
        check(unsafe {
            rados_write_full(self.handle, oid.as_ptr(), data.as_ptr().cast(), data.len())
        })
    }

    /// Reads up to `max` bytes of object `oid`.
    pub(crate) fn read_object(&self, oid: &str, max: usize) -> io::Result<Vec<u8>> {
        let oid = cstring(oid)?;
        let mut buf = vec![0u8; max];
        // SAFETY: valid ioctx; `buf` is writable for `max` bytes.
        let rc = unsafe { rados_read(self.handle, oid.as_ptr(), buf.as_mut_ptr().cast(), max, 0) };
        check(rc)?;
        buf.truncate(rc as usize);
        Ok(buf)
    }

    /// Removes object `oid`.
    pub(crate) fn remove_object(&self, oid: &str) -> io::Result<()> {
        let oid = cstring(oid)?;
        // SAFETY: valid ioctx; the name lives across the call.
        check(unsafe { rados_remove(self.handle, oid.as_ptr()) })
    }
}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create; every Image holds an Arc to
        // this IoCtx, so no image uses it any more.
        unsafe { rados_ioctx_destroy(self.handle) };
    }
}

/// The parent of a cloned image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parent {
    pub pool: String,
    pub image: String,
    pub snap: String,
}

/// An open image (or an image at a snapshot).
///
/// `Image` is `Send` but not `Sync`: callers that share one across threads
/// wrap it in a `Mutex` (see `RbdIo`).
pub(crate) struct Image {
    handle: rbd_image_t,
    _ioctx: Arc<IoCtx>,
}

// SAFETY: an rbd_image_t has no thread affinity: librbd runs the work on its
// own threads and any thread may issue the next call or close it. Moving the
// handle is sound; concurrent use is prevented by `Image` not being `Sync`.
unsafe impl Send for Image {}

impl Image {
    /// Opens `name` (at `snap` if given). Read-only handles take no
    /// exclusive lock and register no watch.
    pub(crate) fn open(
        ioctx: &Arc<IoCtx>,
        name: &str,
        snap: Option<&str>,
        read_only: bool,
    ) -> io::Result<Image> {
        let name = cstring(name)?;
        let snap = snap.map(cstring).transpose()?;
        let snap_ptr = snap.as_ref().map_or(ptr::null(), |s| s.as_ptr());
        let mut handle: rbd_image_t = ptr::null_mut();
        // SAFETY: valid ioctx (kept alive by the Arc stored below), valid
        // out-pointer, strings live across the call; snap may be NULL.
        let rc = unsafe {
            if read_only {
                rbd_open_read_only(ioctx.handle, name.as_ptr(), &mut handle, snap_ptr)
            } else {
                rbd_open(ioctx.handle, name.as_ptr(), &mut handle, snap_ptr)
            }
        };
        check(rc)?;
        Ok(Image { handle, _ioctx: Arc::clone(ioctx) })
    }

    pub(crate) fn size(&self) -> io::Result<u64> {
        let mut size = 0u64;
        // SAFETY: open handle; valid out-pointer.
        check(unsafe { rbd_get_size(self.handle, &mut size) })?;
        Ok(size)
    }

    pub(crate) fn resize(&self, size: u64) -> io::Result<()> {
        // SAFETY: open handle.
        check(unsafe { rbd_resize(self.handle, size) })
    }

    /// Discards a range; callers keep `len` below 2 GiB because librbd
    /// returns the discarded length as a C int.
    pub(crate) fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: open handle.
        check(unsafe { rbd_discard(self.handle, offset, len) })
    }

    /// Copies this image (at its opened snapshot, if any) to a new image
    /// `dest` in `ioctx`; librbd skips all-zero extents.
    pub(crate) fn copy_to(&self, ioctx: &IoCtx, dest: &str) -> io::Result<()> {
        let dest = cstring(dest)?;
        let opts = ImageOptions::new();
        // SAFETY: open handle, valid destination ioctx and options; the name
        // lives across the call.
        check(unsafe { rbd_copy3(self.handle, ioctx.handle, dest.as_ptr(), opts.0) })
    }

    /// Loads librbd's own LUKS encryption with `passphrase`: from now on
    /// this handle reads and writes plaintext and reports the size without
    /// the header. Fails (EPERM, or EINVAL for a non-LUKS image) when librbd
    /// does not accept the header or the passphrase.
    pub(crate) fn encryption_load(&self, luks2: bool, passphrase: &[u8]) -> io::Result<()> {
        let mut opts = LuksOptions {
            alg: RBD_ENCRYPTION_ALGORITHM_AES256,
            passphrase: passphrase.as_ptr().cast(),
            passphrase_size: passphrase.len(),
        };
        let format = if luks2 { RBD_ENCRYPTION_FORMAT_LUKS2 } else { RBD_ENCRYPTION_FORMAT_LUKS1 };
        // SAFETY: open handle; `opts` is a live struct with the C layout of
        // rbd_encryption_luks{1,2}_format_options_t, its size passed along,
        // and its passphrase pointer/length describe `passphrase`, which
        // outlives the call (librbd copies it).
        check(unsafe {
            rbd_encryption_load(
                self.handle,
                format,
                (&mut opts as *mut LuksOptions).cast(),
                std::mem::size_of::<LuksOptions>(),
            )
        })
    }

    /// Copies the parent's data into this clone and detaches it.
    pub(crate) fn flatten(&self) -> io::Result<()> {
        // SAFETY: open, writable handle.
        check(unsafe { rbd_flatten(self.handle) })
    }

    pub(crate) fn snap_create(&self, name: &str) -> io::Result<()> {
        let name = cstring(name)?;
        // SAFETY: open handle; the name lives across the call.
        check(unsafe { rbd_snap_create(self.handle, name.as_ptr()) })
    }

    pub(crate) fn snap_remove(&self, name: &str) -> io::Result<()> {
        let name = cstring(name)?;
        // SAFETY: open handle; the name lives across the call.
        check(unsafe { rbd_snap_remove(self.handle, name.as_ptr()) })
    }

    pub(crate) fn snap_protect(&self, name: &str) -> io::Result<()> {
        let name = cstring(name)?;
        // SAFETY: open handle; the name lives across the call.
        check(unsafe { rbd_snap_protect(self.handle, name.as_ptr()) })
    }

    pub(crate) fn snap_unprotect(&self, name: &str) -> io::Result<()> {
        let name = cstring(name)?;
        // SAFETY: open handle; the name lives across the call.
        check(unsafe { rbd_snap_unprotect(self.handle, name.as_ptr()) })
    }

    /// Names of the image's snapshots.
    pub(crate) fn snap_names(&self) -> io::Result<Vec<String>> {
        let mut cap: c_int = 16;
        loop {
            let mut snaps: Vec<SnapInfo> = Vec::with_capacity(cap as usize);
            let mut max = cap;
            // SAFETY: `snaps` has room for `max` entries; librbd fills at most
            // `max` (count + a NULL-named terminator) or reports the size needed.
            let rc = unsafe { rbd_snap_list(self.handle, snaps.as_mut_ptr(), &mut max) };
            if rc == -ERANGE {
                cap = max.max(cap * 2);
                continue;
            }
            check(rc)?;
            let n = rc as usize;
            // SAFETY: on success librbd initialised `n` entries (plus a terminator
            // we do not read).
            unsafe { snaps.set_len(n) };
            // SAFETY: initialised entries with valid name strings.
            let names = snaps.iter().map(|s| unsafe { owned(s.name) }).collect();
            // SAFETY: frees the names librbd allocated, up to its terminator.
            unsafe { rbd_snap_list_end(snaps.as_mut_ptr()) };
            return Ok(names);
        }
    }

    /// The parent of a clone, `None` for an image that is not one.
    pub(crate) fn parent(&self) -> io::Result<Option<Parent>> {
        let mut image = LinkedImageSpec {
            pool_id: 0,
            pool_name: ptr::null_mut(),
            pool_namespace: ptr::null_mut(),
            image_id: ptr::null_mut(),
            image_name: ptr::null_mut(),
            trash: false,
        };
        let mut snap = SnapSpec { id: 0, namespace_type: 0, name: ptr::null_mut() };
        // SAFETY: open handle; both out-structs are valid and zero-initialised.
        let rc = unsafe { rbd_get_parent(self.handle, &mut image, &mut snap) };
        if rc == -(libc_enoent()) {
            return Ok(None);
        }
        check(rc)?;
        // SAFETY: on success librbd filled both structs with valid strings.
        let parent = unsafe {
            Parent {
                pool: owned(image.pool_name),
                image: owned(image.image_name),
                snap: owned(snap.name),
            }
        };
        // SAFETY: releases the strings librbd allocated into the two structs, once.
        unsafe {
            rbd_linked_image_spec_cleanup(&mut image);
            rbd_snap_spec_cleanup(&mut snap);
        }
        Ok(Some(parent))
    }

    /// Names (`pool`, `image`) of the clones of the snapshot this handle was
    /// opened at.
    pub(crate) fn children(&self) -> io::Result<Vec<(String, String)>> {
        let mut cap = 16usize;
        loop {
            let mut specs: Vec<LinkedImageSpec> = Vec::with_capacity(cap);
            let mut n = cap;
            // SAFETY: `specs` has room for `n` entries; librbd fills at most `n`
            // or reports the size needed with ERANGE.
            let rc = unsafe { rbd_list_children3(self.handle, specs.as_mut_ptr(), &mut n) };
            if rc == -ERANGE {
                cap = n.max(cap * 2);
                continue;
            }
            check(rc)?;
            // SAFETY: on success the first `n` entries are initialised.
            unsafe { specs.set_len(n) };
            let children = specs
                .iter()
                .filter(|s| !s.trash)
                // SAFETY: initialised entries with valid strings.
                .map(|s| unsafe { (owned(s.pool_name), owned(s.image_name)) })
                .collect();
            // SAFETY: releases the strings of exactly the `n` entries librbd filled.
            unsafe { rbd_linked_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
            return Ok(children);
        }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: the handle is open (Image exists only after a successful
        // open) and is closed exactly once; its IoCtx is still alive.
        let rc = unsafe { rbd_close(self.handle) };
        if rc < 0 {
            tracing::warn!(error = %io::Error::from_raw_os_error(-rc), "rbd_close failed");
        }
    }
}

/// What a request in flight was, to judge its return value.
#[derive(Clone, Copy)]
enum Op {
    Read(usize),
    Write,
    Flush,
}

/// One submitted librbd request and the completion librbd signals.
struct InFlight {
    completion: rbd_completion_t,
    op: Op,
}

impl InFlight {
    /// Waits for librbd to finish the request, then frees the completion.
    fn finish(self) -> io::Result<()> {
        // SAFETY: the completion was created by rbd_aio_create_completion and
        // handed to a request librbd accepted; it is waited on and released
        // exactly once, here (`self` is consumed).
        let rc = unsafe {
            rbd_aio_wait_for_complete(self.completion);
            let rc = rbd_aio_get_return_value(self.completion);
            rbd_aio_release(self.completion);
            rc
        };
        if rc < 0 {
            return Err(io::Error::from_raw_os_error(-rc as i32));
        }
        match self.op {
            Op::Read(len) if rc as usize != len => {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read from image"))
            }
            _ => Ok(()),
        }
    }
}

/// Requests in flight on one or more images, each reading into or writing
/// from a buffer that lives for `'buf`.
///
/// A `Batch` exists only inside [`with_batch`], which waits for every
/// request before it returns (or unwinds), so no buffer is freed or reused
/// while librbd still reads or fills it. The lifetime is invariant so that
/// a shorter-lived buffer cannot be passed in. The image need not outlive
/// the batch: closing an image waits for its requests in flight, and a
/// completion stays valid until it is released.
pub(crate) struct Batch<'buf> {
    pending: VecDeque<InFlight>,
    _buf: PhantomData<Cell<&'buf mut [u8]>>,
}

/// Runs `submit` with an empty [`Batch`] and waits for every request it
/// submitted; returns `submit`'s error if any, else the first request's.
///
/// Waiting needs no image handle, so callers that serialise calls on a
/// handle with a lock hold it only to submit, not while requests run.
pub(crate) fn with_batch<'buf, R>(
    submit: impl FnOnce(&mut Batch<'buf>) -> io::Result<R>,
) -> io::Result<R> {
    let mut batch = Batch { pending: VecDeque::new(), _buf: PhantomData };
    let r = submit(&mut batch);
    let waited = batch.wait_all();
    let r = r?;
    waited.map(|()| r)
}

impl<'buf> Batch<'buf> {
    /// Requests submitted and not yet waited for.
    pub(crate) fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Waits for the oldest request in flight (none: returns at once).
    pub(crate) fn wait_oldest(&mut self) -> io::Result<()> {
        self.pending.pop_front().map_or(Ok(()), InFlight::finish)
    }

    /// Waits for every request in flight; the first error wins, and every
    /// request is waited for even after one failed.
    fn wait_all(&mut self) -> io::Result<()> {
        let mut first = Ok(());
        while let Some(r) = self.pending.pop_front() {
            let r = r.finish();
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn completion() -> io::Result<rbd_completion_t> {
        let mut c: rbd_completion_t = ptr::null_mut();
        // SAFETY: valid out-pointer; no callback (completion is waited on
        // with rbd_aio_wait_for_complete), so the argument is never used.
        check(unsafe { rbd_aio_create_completion(ptr::null_mut(), None, &mut c) })?;
        Ok(c)
    }

    /// Records an accepted request, or frees the completion of one librbd
    /// refused at submission (it then never signals it).
    fn push(&mut self, completion: rbd_completion_t, rc: c_int, op: Op) -> io::Result<()> {
        if rc < 0 {
            // SAFETY: librbd refused the request before taking the
            // completion, so nothing else refers to it.
            unsafe { rbd_aio_release(completion) };
            return Err(io::Error::from_raw_os_error(-rc));
        }
        self.pending.push_back(InFlight { completion, op });
        Ok(())
    }

    /// Starts filling `buf` from `offset` of `image`; a short read is an
    /// error when waited for.
    pub(crate) fn read(&mut self, image: &Image, buf: &'buf mut [u8], offset: u64) -> io::Result<()> {
        let c = Self::completion()?;
        // SAFETY: open handle; `buf` is writable for `buf.len()` bytes and,
        // being borrowed for 'buf, stays allocated and untouched until
        // with_batch has waited for this request.
        let rc = unsafe { rbd_aio_read(image.handle, offset, buf.len(), buf.as_mut_ptr().cast(), c) };
        self.push(c, rc, Op::Read(buf.len()))
    }

    /// Starts writing `buf` at `offset` of `image`.
    pub(crate) fn write(&mut self, image: &Image, buf: &'buf [u8], offset: u64) -> io::Result<()> {
        let c = Self::completion()?;
        // SAFETY: open handle; `buf` is readable for `buf.len()` bytes and
        // stays borrowed (so unchanged) until with_batch has waited for it.
        let rc = unsafe { rbd_aio_write(image.handle, offset, buf.len(), buf.as_ptr().cast(), c) };
        self.push(c, rc, Op::Write)
    }

    /// Starts a flush of `image`: when it completes, every write that had
    /// completed before it was submitted is durable.
    pub(crate) fn flush(&mut self, image: &Image) -> io::Result<()> {
        let c = Self::completion()?;
        // SAFETY: open handle; the request touches no caller memory.
        let rc = unsafe { rbd_aio_flush(image.handle, c) };
        self.push(c, rc, Op::Flush)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // Only reached with requests pending when `submit` panicked: the
        // buffers must outlive librbd's use of them even then.
        let _ = self.wait_all();
    }
}

const fn libc_enoent() -> c_int {
    2
}
