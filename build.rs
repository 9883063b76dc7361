//! Warns at build time when the browser tests will be skipped, so a
//! `cargo test` on a machine without Chromium says so plainly.

fn main() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    println!("cargo:rerun-if-env-changed=CHROMIUM");
    println!("cargo:rerun-if-changed={chromium}");
    // Installing a package keeps the file's packaged mtime, older than
    // this script's last run; the directory's mtime changes when it is added.
    if let Some(dir) = std::path::Path::new(&chromium).parent() {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    if !std::path::Path::new(&chromium).exists() {
        println!(
            "cargo:warning=browser tests will be SKIPPED: no Chromium at {chromium}. \
             Install it (apt-get install chromium) or set CHROMIUM=/path, then run cargo test again."
        );
    }
}
