//! API tests: the real `rekey serve`, driven by the real OpenStack clients.
//! Needs REKEY_CLIENTS_VENV (from scripts/clients.sh) and cryptsetup; the
//! attachment tests also qemu-io and qemu-img (qemu-utils 10).

mod admin;
mod attachments;

mod bad_input;
mod crash;
mod defaults;
mod manageable;
mod cs_resume;
mod flows;
mod groups;
mod harness;
mod volume_key;
mod paths;
mod audit;
mod paths_faults;
mod metrics;
mod vols;
mod workers;
mod quotas;
