//! All `rekey` command-line integration tests, in one binary. Real peers
//! (cryptsetup 2.6, qemu-img) are the oracles; a missing one fails the test.

mod benchmark;
mod cs_encdec;
mod cs_reencrypt;
mod data_compat;
mod harness;
mod luks_compat;
mod luks_errors;
mod recovery;
mod reencrypt;
mod sizes;
