//! Records the git commit the binary is built from, for `cphub_build_info{git_sha}`. Built
//! outside a git checkout (a source tarball, a crates.io package) or without git installed,
//! it sets nothing and the binary reports "unknown": the build never fails over it.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // `sqlx::migrate!` embeds the migrations but, on stable Rust, cannot ask to be built
    // again when one is added: a new migration file went unnoticed until some Rust source
    // changed, and tests ran without it. Cargo scans a watched directory whole.
    println!("cargo:rerun-if-changed=migrations");
    let Some(sha) = git(&["rev-parse", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=CPHUB_GIT_SHA={sha}");
    // Build again when HEAD moves: HEAD itself, the branch it points at, and packed refs
    // (`--git-path` finds them in a worktree's own and common directories alike).
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        // A watched file that does not exist would run this script on every build.
        let file = git(&["rev-parse", "--git-path", &path]);
        if let Some(file) = file.filter(|f| std::path::Path::new(f).exists()) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
}
