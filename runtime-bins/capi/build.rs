//! Regenerates the committed C header `include/lhopt.h` with cbindgen; the file is only
//! rewritten when its contents change, so builds stay incremental and `git diff` shows API drift.
use std::{env, fs, path::Path};

fn main() {
    let crate_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let config = cbindgen::Config::from_file(Path::new(&crate_dir).join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let header = Path::new(&crate_dir).join("include/lhopt.h");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen can parse the C API")
        .write(&mut generated);
    if fs::read(&header).ok().as_deref() != Some(generated.as_slice()) {
        fs::write(&header, generated).expect("write include/lhopt.h");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
}
