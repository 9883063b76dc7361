//! Warns at build time when the browser tests will be skipped, so a
//! `cargo test` on a machine without Chromium says so plainly.

fn main() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    println!("cargo:rerun-if-env-changed=CHROMIUM");
    println!("cargo:rerun-if-changed={chromium}");
    if !std::path::Path::new(&chromium).exists() {
        println!(
            "cargo:warning=browser tests will be SKIPPED: no Chromium at {chromium}. \
             Install it (apt-get install chromium) or set CHROMIUM=/path, then run cargo test again."
        );
    }
}
