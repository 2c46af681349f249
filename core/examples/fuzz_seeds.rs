//! Writes the fuzz targets' seed corpus (real encodings of every kind of
//! peer input, from `infermesh_core::fuzz::seeds`) under the directory
//! given: `<dir>/<target>/seed-<n>`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into());
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for (target, bytes) in infermesh_core::fuzz::seeds() {
        let n = count.entry(target).or_default();
        let target_dir = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&target_dir)?;
        std::fs::write(target_dir.join(format!("seed-{n}")), bytes)?;
        *n += 1;
    }
    let mut summary: Vec<String> = count.iter().map(|(t, n)| format!("{t}: {n}")).collect();
    summary.sort();
    println!("seeds written to {dir} ({})", summary.join(", "));
    Ok(())
}
