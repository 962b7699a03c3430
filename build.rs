//! Build information for `proxy_build_info`: the commit (`SIDEWIRE_GIT_SHA`), its date
//! (`SIDEWIRE_BUILD_DATE`) and the cargo profile (`SIDEWIRE_BUILD_PROFILE`).
//!
//! Works without git or without a `.git` (a source tarball, a container build that copies the
//! sources only): the values are then `unknown`. A clean clone (CI) and a worktree (where
//! `.git` is a file) both work: git itself is asked where its files are. The environment
//! variables `SIDEWIRE_GIT_SHA` and `SIDEWIRE_BUILD_DATE`, when set, win (for packagers who
//! build from a tarball but know the commit).

use std::process::Command;

/// Runs git in this package's directory; `None` when git is missing, fails, or the package is
/// not the top of its own checkout (sources unpacked inside some other repository).
fn git(args: &[&str]) -> Option<String> {
    let here = std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    let top = run(&here, &["rev-parse", "--show-toplevel"])?;
    if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(&here).ok()? {
        return None;
    }
    run(&here, args)
}

fn run(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SIDEWIRE_GIT_SHA");
    println!("cargo:rerun-if-env-changed=SIDEWIRE_BUILD_DATE");
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's ref file and the
    // packed refs (a commit). Only files that exist: a missing one would rerun every build.
    let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(r);
    }
    for f in watch {
        if let Some(p) = git(&["rev-parse", "--git-path", &f]) {
            let here = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default();
            let p = std::path::Path::new(&here).join(p);
            if p.exists() {
                let p = std::fs::canonicalize(&p).unwrap_or(p);
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    let sha = std::env::var("SIDEWIRE_GIT_SHA")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let date = std::env::var("SIDEWIRE_BUILD_DATE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["log", "-1", "--format=%cI", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=SIDEWIRE_GIT_SHA={sha}");
    println!("cargo:rustc-env=SIDEWIRE_BUILD_DATE={date}");
    println!("cargo:rustc-env=SIDEWIRE_BUILD_PROFILE={profile}");
}
