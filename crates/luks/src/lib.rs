//! rekey's LUKS engine: reads and writes LUKS1 and LUKS2 volumes in userspace,
//! byte-compatible with cryptsetup 2.6, without root or dm-crypt.
//!
//! Header codecs are sans-IO; everything that touches a volume goes through
//! [`BlockIo`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod blockio;
pub mod crypto;
mod secret;

pub use blockio::{BlockIo, FileIo, MemIo};
pub use secret::Secret;
