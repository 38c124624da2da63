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
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let compiled = compile_sdk(&files, &version, &out_dir);
    let mut out = String::from(
        "/// The SDK's files: path inside the package root, text, and the module's code as the\n\
         /// build interpreter's `marshal` wrote it (empty when it could not be compiled).\n",
    );
    out.push_str("pub(crate) const FILES: &[(&str, &str, &[u8])] = &[\n");
    for (index, (relative, path)) in files.iter().enumerate() {
        let code = match &compiled {
            Some(_) if relative.ends_with(".py") => {
                format!(
                    "include_bytes!({:?})",
                    out_dir.join(format!("sdk_{index}.marshal")).display()
                )
            }
            _ => "b\"\"".to_owned(),
        };
        out.push_str(&format!(
            "    ({relative:?}, include_str!({:?}), {code}),\n",
            path.display()
        ));
    }
    out.push_str("];\n/// The SDK's version (`pyruntime/pyproject.toml`).\n");
    out.push_str(&format!("pub(crate) const VERSION: &str = {version:?};\n"));
    out.push_str("/// `importlib.util.MAGIC_NUMBER` of the interpreter that compiled the code.\n");
    let magic = compiled.unwrap_or_default();
    out.push_str(&format!("pub(crate) const MAGIC: &[u8] = &{magic:?};\n"));
    let target = out_dir.join("sdk_files.rs");
    if let Err(err) = std::fs::write(&target, out) {
        panic!("cannot write {}: {err}", target.display());
    }
}

/// Compiles the SDK's modules with the interpreter the binary links, as the finder names them
/// (`bundled_sdk.py`), into `OUT_DIR/sdk_N.marshal`, so that importing the SDK at start-up
/// unmarshals code instead of compiling about 100 KB of source (90 ms measured). Returns the
/// interpreter's bytecode magic number, or `None` (the host then compiles at start-up) when
/// the interpreter cannot be run.
fn compile_sdk(files: &[(String, PathBuf)], version: &str, out_dir: &Path) -> Option<Vec<u8>> {
    let python = pyo3_build_config::get().executable()?.to_owned();
    let script = r#"
import importlib.util, marshal, sys
out, origin = sys.argv[1], sys.argv[2]
for entry in sys.argv[3:]:
    index, relative, path = entry.split("\t", 2)
    with open(path, encoding="utf-8") as source:
        code = compile(source.read(), f"{origin}/{relative}", "exec", dont_inherit=True)
    with open(f"{out}/sdk_{index}.marshal", "wb") as target:
        target.write(marshal.dumps(code))
sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())
"#;
    let origin = format!("<pyhost SDK {version}, bundled with the host>");
    let entries = files
        .iter()
        .enumerate()
        .filter(|(_, (relative, _))| relative.ends_with(".py"))
        .map(|(index, (relative, path))| format!("{index}\t{relative}\t{}", path.display()));
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(out_dir)
        .arg(&origin)
        .args(entries)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) => {
            println!(
                "cargo:warning=the SDK is bundled as source only (compiled at each start): {err}"
            );
            return None;
        }
    };
    if !output.status.success() {
        println!(
            "cargo:warning=the SDK is bundled as source only (compiled at each start): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    let hex = String::from_utf8(output.stdout).ok()?;
    (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect()
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
