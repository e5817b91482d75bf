//! Embeds the shipped provider files (`providers/*.llmux`) into the binary, so that `llmux serve`
//! works without a providers directory on disk. A directory on disk, when present or
//! configured, takes precedence at run time. The files are stored deflated (a quarter of their
//! size: most of a file is its header comment) and inflated when the embedded set is loaded.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let dir = root.join("providers");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "llmux"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut out = String::from("/// The shipped provider files: (file name, deflated source).\npub const EMBEDDED_PROVIDERS: &[(&str, &[u8])] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let text = std::fs::read(f).expect("read a provider file");
        let packed = out_dir.join(format!("{name}.z"));
        std::fs::write(&packed, miniz_oxide::deflate::compress_to_vec(&text, 9))
            .expect("write a deflated provider file");
        let _ = writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            packed.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest = out_dir.join("embedded_providers.rs");
    std::fs::write(dest, out).expect("write embedded_providers.rs");
}
