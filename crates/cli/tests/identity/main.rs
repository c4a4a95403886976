//! Identity tests: `rekey serve --auth keystone` in front of a real Keystone
//! 30 (`scripts/keystone.sh start`, URL in `REKEY_KEYSTONE_URL`), driven over
//! raw HTTP with real Keystone tokens and by the real `openstack` CLI
//! (`REKEY_CLIENTS_VENV`) with password auth through the catalog. The outage
//! test starts a private Keystone of its own, so stopping it cannot disturb
//! the other tests. Every test ends by checking that no token it used is in
//! the service's log.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod api_harness;
mod auth;
mod barbican;
mod cli;
mod flows;
mod harness;
mod openapi;
mod outage;
mod quotas;
mod type_access;
