//! The file backend's full clone copy, timed, for bench/export.sh:
//! `clone-copy DATA_DIR IMAGE` moves IMAGE into DATA_DIR as volume `src` (the
//! first time), then clones `src` to `dst` (removing an earlier `dst`) and
//! prints the nanoseconds `clone_volume` took — the copy, its fsync, the
//! rename and the directory fsync — and how it copied.

use std::time::Instant;

use rekey_storage::{Backend, FileBackend};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, image] = args.as_slice() else {
        return Err("usage: clone-copy DATA_DIR IMAGE".into());
    };
    let b = FileBackend::open(dir)?;
    if !b.exists("src")? {
        let len = std::fs::metadata(image)?.len();
        b.create("src", len)?;
        std::fs::rename(image, b.volume_path("src")?)?;
    }
    if b.exists("dst")? {
        b.delete("dst")?;
    }
    let t = Instant::now();
    let kind = b.clone_volume("src", "dst")?;
    let ns = t.elapsed().as_nanos();
    println!("{ns} {kind:?} {}", b.volume_path("dst")?.display());
    Ok(())
}
