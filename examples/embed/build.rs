//! An application embedding pyhost links libpython; the rpath makes sure it loads the one
//! pyo3 was configured with (not another with the same SONAME).

fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
