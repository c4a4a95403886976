//! An NBD server over rekey's storage seam, [`rekey_luks::BlockIo`].
//!
//! A ciphertext export hands out a volume's raw bytes (the consumer
//! decrypts, Cinder's front-end); a plaintext export hands out a
//! [`rekey_luks::Decrypted`] view (rekey decrypts, back-end). The protocol
//! core ([`proto`], [`negotiate`]) is sans-IO; [`Server`] is the tokio edge.
//! Exports come and go at run time by name; see [`Exports`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod export;
pub mod negotiate;
pub mod proto;
mod server;

pub use export::{random_export_name, Export, Exports, NameTaken, MAX_REQUEST};
pub use server::{ListenAddr, Server, TlsConfig};
