//! `rekey luks benchmark`: cipher speeds of this engine on this CPU, as
//! `cryptsetup benchmark` gives them for dm-crypt.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use rekey_luks::crypto::speed::{self, CipherSpeed};
use rekey_luks::crypto::{CipherSpec, XtsImplementation};
use serde::Serialize;

#[derive(Args)]
pub struct BenchmarkArgs {
    /// Only this cipher (e.g. aes-xts-plain64).
    #[arg(long, short = 'c')]
    cipher: Option<String>,
    /// Only this key size, in bits.
    #[arg(long, short = 's')]
    key_size: Option<u32>,
    /// Print JSON: {"ciphers": [...], "selected": "..."}.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    ciphers: Vec<Entry>,
    /// The XTS implementation volumes use on this CPU.
    selected: &'static str,
}

#[derive(Serialize)]
struct Entry {
    cipher: String,
    key_size: u32,
    implementation: String,
    encrypt_bytes_per_s: u64,
    decrypt_bytes_per_s: u64,
}

/// CPU time per direction and candidate; `cryptsetup benchmark` spends about
/// as long.
const BUDGET: Duration = Duration::from_millis(250);

pub fn run(a: BenchmarkArgs) -> Result<()> {
    let spec = a.cipher.as_deref().map(CipherSpec::parse).transpose()?;
    let candidates = speed::candidates(spec.as_ref(), a.key_size);
    if candidates.is_empty() {
        let (c, k) = (a.cipher.as_deref().unwrap_or("any cipher"), a.key_size.unwrap_or(0));
        bail!("no {k}-bit key size for {c} (aes-xts-plain64 takes 256 or 512, aes-cbc-* 128, 192 or 256)");
    }
    let selected = XtsImplementation::selected().name();
    if !a.json {
        println!("# Tests are approximate, in memory, one core, 4 KiB data units (XTS selected: {selected}).");
        println!("#{:>21} {:>5} {:>15} {:>16} {:>16}", "Algorithm", "Key", "Implementation", "Encryption", "Decryption");
    }
    let mut ciphers = Vec::new();
    for c in &candidates {
        let s: CipherSpeed = speed::measure(c, BUDGET)?;
        if !a.json {
            println!(
                "{:>22} {:>4}b {:>15} {:>10.1} MiB/s {:>10.1} MiB/s",
                s.cipher,
                s.key_size,
                s.implementation,
                s.encrypt_bytes_per_s / f64::from(1 << 20),
                s.decrypt_bytes_per_s / f64::from(1 << 20)
            );
        }
        ciphers.push(Entry {
            cipher: s.cipher,
            key_size: s.key_size,
            implementation: s.implementation,
            encrypt_bytes_per_s: s.encrypt_bytes_per_s as u64,
            decrypt_bytes_per_s: s.decrypt_bytes_per_s as u64,
        });
    }
    if a.json {
        println!("{}", serde_json::to_string(&Report { ciphers, selected })?);
    }
    Ok(())
}
