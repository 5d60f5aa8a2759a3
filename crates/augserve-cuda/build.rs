//! Embeds every file of `kernels/` (`.cu` units and the `.cuh` headers they include), so a new
//! kernel file needs no list edited: `src/kernels.rs` includes what this writes.

use std::fmt::Write as _;
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
        .collect();
    names.sort();
    let mut out = String::from("/// `kernels/` files, by the name `#include` uses.\n");
    out += "pub const SOURCES: &[(&str, &str)] = &[\n";
    for n in &names {
        let path = dir.join(n).canonicalize()?;
        writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            path.display().to_string()
        )?;
    }
    out += "];\n\n/// The `.cu` translation units that make up the module.\n";
    out += "const UNITS: &[&str] = &[\n";
    for n in names.iter().filter(|n| n.ends_with(".cu")) {
        writeln!(out, "    {n:?},")?;
    }
    out += "];\n";
    let dest = Path::new(&std::env::var("OUT_DIR")?).join("kernel_sources.rs");
    std::fs::write(dest, out)?;
    Ok(())
}
