//! What a new user meets in the first hour: quiet logs for ordinary work, and a
//! history without noise.

use std::fs;
use std::path::Path;

use cubby_testkit::{Mount, fuse_available};

mod common;

use common::*;

#[test]
fn ordinary_copies_leave_the_mounts_log_empty() {
    if !fuse_available("ordinary_copies_leave_the_mounts_log_empty") {
        return;
    }
    let setup = setup();
    let mut mount = Mount::start_logged(Path::new(CUBBY), &setup.config);
    let local = tempfile::tempdir().unwrap();
    let source = local.path().join("source.bin");
    fs::write(&source, cubby_testkit::random_bytes(3 << 20, 16)).unwrap();
    // coreutils' cp tries copy_file_range and lseek(SEEK_DATA) first, Python's
    // copy_file_range goes straight to it, fallocate(1) asks for a reservation.
    sh(
        mount.path(),
        &format!(
            "cp {src} in.bin && cp in.bin again.bin && cp --sparse=always in.bin sparse.bin \
             && cp in.bin {out} && cmp {src} {out} && cmp in.bin again.bin \
             && python3 -c 'import os; a = os.open(\"in.bin\", os.O_RDONLY); \
                b = os.open(\"py.bin\", os.O_WRONLY | os.O_CREAT); \
                n = os.copy_file_range(a, b, 1 << 22) if hasattr(os, \"copy_file_range\") else 0' \
             ; fallocate -l 1M reserved.bin; true",
            src = source.display(),
            out = local.path().join("out.bin").display(),
        ),
    );
    mount.stop();
    let log = mount.log();
    assert!(
        !log.contains("Not Implemented") && !log.contains("WARN"),
        "the mount's log after ordinary copies:\n{log}"
    );
}
