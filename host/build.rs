//! Links the binary against the libpython pyo3 was configured with, remembers that
//! interpreter's path so the embedded interpreter finds its standard library deterministically,
//! and bundles the pyhost SDK (`pyruntime/pyhost`) the crate is built with.

use std::path::{Path, PathBuf};

/// Writes `$OUT_DIR/sdk_files.rs`: every file of the SDK package, as `(relative path, text)`,
/// and the SDK's version from `pyruntime/pyproject.toml`.
fn bundle_sdk() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let runtime = manifest.join("..").join("pyruntime");
    let package = runtime.join("pyhost");
    println!("cargo:rerun-if-changed={}", package.display());
    println!(
        "cargo:rerun-if-changed={}",
        runtime.join("pyproject.toml").display()
    );
    let mut files = Vec::new();
    collect(&package, Path::new("pyhost"), &mut files);
    files.sort();
    let pyproject = std::fs::read_to_string(runtime.join("pyproject.toml")).unwrap_or_default();
    let version = pyproject
        .lines()
        .find_map(|line| {
            let value = line
                .strip_prefix("version")?
                .trim_start()
                .strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    let mut out = String::from("/// The SDK's files: path inside the package root, and text.\n");
    out.push_str("pub(crate) const FILES: &[(&str, &str)] = &[\n");
    for (relative, path) in &files {
        out.push_str(&format!(
            "    ({relative:?}, include_str!({:?})),\n",
            path.display()
        ));
    }
    out.push_str("];\n/// The SDK's version (`pyruntime/pyproject.toml`).\n");
    out.push_str(&format!("pub(crate) const VERSION: &str = {version:?};\n"));
    let target =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("sdk_files.rs");
    if let Err(err) = std::fs::write(&target, out) {
        panic!("cannot write {}: {err}", target.display());
    }
}

fn collect(dir: &Path, relative: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        panic!("the pyhost SDK is missing: cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "__pycache__" {
                collect(&path, &relative.join(&name), files);
            }
        } else if name.ends_with(".py") || name.ends_with(".h") || name == "py.typed" {
            files.push((relative.join(&name).to_string_lossy().into_owned(), path));
        }
    }
}

fn main() {
    bundle_sdk();
    // Without an rpath the loader may pick another libpython with the same SONAME
    // (Debian's system copy shadows pyenv's build), silently changing the interpreter.
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(executable) = config.executable() {
        println!("cargo:rustc-env=PYHOST_BUILD_PYTHON={executable}");
    } else {
        println!("cargo:rustc-env=PYHOST_BUILD_PYTHON=");
    }
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    // The position-independent binary carries about 17,000 relative relocations, which the
    // loader reads at every start: 412 KiB of `.rela.dyn` that stayed resident. Packed
    // (DT_RELR: glibc 2.36, binutils 2.38) they take 5 KiB: 0.5 MiB fewer resident pages of
    // the binary at idle.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
