//! `rekey luks` on Ceph RBD images (`rbd:POOL/IMAGE[@SNAP]`), against a real
//! cluster and librbd's own LUKS support as the oracle.
//!
//! Built only with the `rbd` feature (`cargo nextest run -p rekey-cli
//! --features rbd --test rbd`). Needs the cluster of `$CEPH_CONF`
//! (`scripts/ceph.sh start`) and the `rbd` and `cryptsetup` tools; the
//! outage test starts a second, private cluster of its own. Anything missing
//! fails the test with a message saying what.
#![cfg(feature = "rbd")]

mod harness;
mod librbd_luks;
mod outage;
mod paths;
mod roundtrip;
mod service;
