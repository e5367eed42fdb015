//! Writes the seed corpus, `fuzz/corpus/<target>/<name>`, from [`hektor_fuzz::corpus`]
//! (inputs made by the real encoders). Run from `fuzz/`:
//! `cargo run --bin make_corpus [DIR]` (it needs no AFL; `scripts/fuzz.sh` builds it
//! too). Existing files of the same name are overwritten; others are left alone.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let mut written = 0;
    for (target, name, bytes) in hektor_fuzz::corpus::seeds() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        written += 1;
    }
    println!("{written} seeds written under {}", root.display());
    Ok(())
}
