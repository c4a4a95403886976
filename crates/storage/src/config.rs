//! Backend selection, as read from the service's TOML configuration.

use std::path::PathBuf;

use serde::Deserialize;

/// Which backend to use and how to reach it.
///
/// In TOML:
/// ```toml
/// [backend]
/// type = "file"
/// data_dir = "/var/lib/rekey"
/// ```
/// or
/// ```toml
/// [backend]
/// type = "rbd"
/// pool = "volumes"
/// ceph_conf = "/etc/ceph/ceph.conf"   # optional; else $CEPH_CONF, then Ceph's default search
/// ceph_user = "cinder"                # optional; default "admin"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum BackendConfig {
    /// Sparse files under `data_dir/volumes` and `data_dir/snapshots`.
    File {
        /// The directory holding `volumes/` and `snapshots/`.
        data_dir: PathBuf,
    },
    /// Ceph RBD images in one pool.
    Rbd(RbdConfig),
}

/// How to reach a Ceph cluster and which pool holds the volumes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RbdConfig {
    /// The pool holding `volume-<id>` images.
    pub pool: String,
    /// `ceph.conf` to read; `None` lets librados use `$CEPH_CONF` or its
    /// default search path.
    #[serde(default)]
    pub ceph_conf: Option<PathBuf>,
    /// Client name without the `client.` prefix; its keyring comes from the
    /// configuration.
    #[serde(default = "default_user")]
    pub ceph_user: String,
    /// Bound on connecting and on monitor requests, in seconds: an unreachable
    /// cluster fails after this long instead of hanging.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u32,
    /// Bound on each OSD request (data I/O, snapshot operations), in seconds.
    #[serde(default = "default_op_timeout")]
    pub op_timeout_secs: u32,
    /// Make every clone a full copy instead of a copy-on-write child (for
    /// pools without layering, or to compare the two).
    #[serde(default)]
    pub full_copy_clones: bool,
}

fn default_user() -> String {
    "admin".to_owned()
}

fn default_connect_timeout() -> u32 {
    10
}

fn default_op_timeout() -> u32 {
    30
}

impl RbdConfig {
    /// Settings for `pool` with every other field at its default.
    pub fn new(pool: impl Into<String>) -> Self {
        RbdConfig {
            pool: pool.into(),
            ceph_conf: None,
            ceph_user: default_user(),
            connect_timeout_secs: default_connect_timeout(),
            op_timeout_secs: default_op_timeout(),
            full_copy_clones: false,
        }
    }
}
