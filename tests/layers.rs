//! The layering documented in `src/lib.rs` (`# Layers`) holds: no import cycle between
//! files, no import up the list. The check itself is `scripts/check-layers.py`.

use std::process::Command;

#[test]
fn every_import_points_down_the_documented_layers() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-layers.py");
    let out = Command::new("python3")
        .arg(script)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs scripts/check-layers.py");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 cycles, 0 upward imports"));
}
