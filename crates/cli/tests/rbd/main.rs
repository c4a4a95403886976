//! `rekey luks` on Ceph RBD images (`rbd:POOL/IMAGE[@SNAP]`), against a real
//! cluster and librbd's own LUKS support as the oracle, and `rekey serve
//! --backend rbd` through its HTTP API, checked on `rbd export`ed images with
//! cryptsetup.
//!
//! Built only with the `rbd` feature (`cargo nextest run -p rekey-cli
//! --features rbd --test rbd`). Needs the cluster of `$CEPH_CONF`
//! (`scripts/ceph.sh start`) and the `rbd`, `cryptsetup` and `curl` tools; the
//! outage tests each start a private cluster of their own. Anything missing
//! fails the test with a message saying what.
#![cfg(feature = "rbd")]

mod attach;
mod harness;
mod librbd_luks;
mod outage;
mod paths;
mod roundtrip;
mod service;
