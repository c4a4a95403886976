//! rekey's LUKS engine: reads and writes LUKS1 and LUKS2 volumes in userspace,
//! byte-compatible with cryptsetup 2.6, without root or dm-crypt.
//!
//! Header codecs ([`luks1`], [`luks2`]) are sans-IO; [`volume`] does the I/O
//! through [`BlockIo`].
#![deny(missing_docs)]
// `unsafe` only in crypto::cipher::x86, the CPU-feature dispatch of the XTS kernels.
#![deny(unsafe_code)]

pub mod backup;
pub mod blockio;
mod codec;
pub mod config;
pub mod crypto;
pub mod data;
pub mod dump;
mod error;
pub mod luks1;
pub mod luks2;
pub mod pbkdf;
pub mod pipeline;
pub mod reencrypt;
mod secret;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod transfer;
pub mod volume;

pub use blockio::{BlockIo, FileIo, MemIo};
pub use data::Decrypted;
pub use error::{Error, ErrorKind, Result};
pub use pbkdf::{PbkdfKind, PbkdfOptions};
pub use secret::Secret;
pub use volume::{FormatOptions, Header, Version, Volume};
