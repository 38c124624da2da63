//! The fuzz target links pyhost, and so libpython: load the one pyo3 was configured with.

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
