//! API tests: the real `rekey serve`, driven by the real OpenStack clients.
//! Needs REKEY_CLIENTS_VENV (from scripts/clients.sh) and cryptsetup.

mod bad_input;
mod crash;
mod cs_resume;
mod flows;
mod harness;
mod volume_key;
mod paths;
mod audit;
mod paths_faults;
mod metrics;
