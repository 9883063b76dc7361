//! The dashboard in real headless Chromium (tests/browser/dashboard.mjs,
//! playwright-core over CDP). Screenshots of each screen go to
//! target/screenshots/. Without Chromium the test says it was skipped and
//! how to run it (and build.rs warns at build time too).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Receiver, TestServer};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/chromium".into());
    path.exists().then_some(path)
}

#[actix_web::test]
async fn the_dashboard_works_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED browser tests: no Chromium at /usr/bin/chromium. \
             Install it with `apt-get install chromium` (or set CHROMIUM=/path) and run `cargo test` again."
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate::support::npm_ci(&root.join("tests/browser"), "playwright-core");
    let strict = TestServer::start_with(|c| c.delivery.allow_private_targets = false).await;
    let (_, strict_key) = strict.org("Acme Production", "organisation", None).await;
    let dev = TestServer::start().await;
    let (reseller, _) = dev.org("Reseller Co", "reseller", None).await;
    let (dev_org, dev_key) = dev.org("Acme Dev", "organisation", Some(&reseller)).await;
    let rx = Receiver::start().await;

    let mut child = Command::new("node");
    child
        .arg("dashboard.mjs")
        .current_dir(root.join("tests/browser"))
        .env("CHROMIUM", &chromium)
        .env("STRICT_BASE", &strict.base)
        .env("STRICT_KEY", &strict_key)
        .env("DEV_BASE", &dev.base)
        .env("DEV_KEY", &dev_key)
        .env("DEV_ORG", &dev_org)
        .env("RECEIVER_URL", &rx.url)
        .env("SHOTS_DIR", root.join("target/screenshots"));
    // The script drives the servers running on this test's runtime, so it
    // must run beside it rather than block it.
    let output = actix_web::rt::task::spawn_blocking(move || child.output())
        .await
        .unwrap()
        .expect("node is needed for the browser tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all browser checks passed"), "{stdout}");
}
