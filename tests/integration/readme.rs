//! The README's curl examples, run as written (with `curl` and `sh`)
//! against the real server: the host, the example endpoint and the `<…>`
//! placeholders are the only things replaced. Each must answer 2xx with
//! JSON that has every key its `# → …` line shows.

use std::time::Duration;

use serde_json::Value;

use crate::support::{eventually, Receiver, TestServer, ADMIN_KEY};

const WAIT: Duration = Duration::from_secs(20);
/// Where the README's examples send requests and deliveries.
const README_BASE: &str = "http://127.0.0.1:8080";
const README_ENDPOINT: &str = "https://example.com/webhooks/trackpilots";

/// One curl command of the README, and the `# → …` line after it.
struct Example {
    command: String,
    shows: Option<String>,
}

/// Every curl command in the README's `sh` blocks, in order. A command
/// runs on while a line ends in `\` or a quote is open.
fn examples(readme: &str) -> Vec<Example> {
    let (mut found, mut current, mut in_sh) = (Vec::<Example>::new(), String::new(), false);
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = trimmed == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if current.is_empty() {
            if let Some(shows) = trimmed.strip_prefix("# →") {
                if let Some(last) = found.last_mut().filter(|e| e.shows.is_none()) {
                    last.shows = Some(shows.trim().to_string());
                }
            }
            if !trimmed.starts_with("curl ") {
                continue;
            }
        }
        current.push_str(line);
        current.push('\n');
        if !quote_open(&current) && !trimmed.ends_with('\\') {
            found.push(Example {
                command: std::mem::take(&mut current),
                shows: None,
            });
        }
    }
    found
}

fn quote_open(command: &str) -> bool {
    let (mut single, mut double) = (false, false);
    for c in command.chars() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single || double
}

/// `command` with each placeholder replaced; one that no earlier example
/// has given a value yet, or an unknown `<…>`, is a README to fix.
fn fill(command: &str, values: &[(&str, &str)]) -> String {
    let mut out = command.to_string();
    for (from, to) in values {
        if out.contains(from) {
            assert!(
                !to.is_empty(),
                "{from} is used before it is made:\n{command}"
            );
            out = out.replace(from, to);
        }
    }
    assert!(
        !out.contains("<"),
        "a placeholder the test does not know:\n{command}"
    );
    out
}

/// The `"key":` names in a `# → …` line (its values are elided with `…`).
fn shown_keys(shows: &str) -> Vec<&str> {
    shows
        .split('"')
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[1].starts_with(':'))
        .map(|w| w[0])
        .collect()
}

/// Runs one command through `sh` with `ADMIN` and `KEY` set; returns the
/// status and the JSON answered.
async fn run(command: &str, key: &str) -> (u16, Value) {
    let script = format!("{} -w '\\n%{{http_code}}'", command.trim_end());
    let (admin, key) = (ADMIN_KEY.to_string(), key.to_string());
    let out = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .args(["-c", &script])
            .env("ADMIN", admin)
            .env("KEY", key)
            .output()
            .expect("sh and curl run")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (body, status) = stdout.rsplit_once('\n').unwrap_or_else(|| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        panic!("no answer (is curl installed?): {stderr}\n{command}")
    });
    let json =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}\n{command}"));
    (status.parse().unwrap(), json)
}

#[actix_web::test]
async fn the_readme_curl_examples_work_as_written() {
    let s = TestServer::start().await;
    let rx = Receiver::start().await;
    let all = examples(include_str!("../../README.md"));
    assert!(all.len() >= 7, "found only {} curl examples", all.len());
    let (mut org, mut webhook, mut key) = (String::new(), String::new(), String::new());
    for example in &all {
        let command = fill(
            &example.command,
            &[
                (README_BASE, &s.base),
                (README_ENDPOINT, &rx.url),
                ("<the organisation id>", &org),
                ("<webhook id>", &webhook),
            ],
        );
        let (status, body) = if command.contains("/deliveries ") {
            // Log entries are written a few milliseconds after the attempt.
            eventually("the README's event in the log", WAIT, async || {
                let (status, body) = run(&command, &key).await;
                (status != 200 || body["data"].as_array().is_some_and(|d| !d.is_empty()))
                    .then_some((status, body))
            })
            .await
        } else {
            run(&command, &key).await
        };
        assert!((200..300).contains(&status), "{status} {body}\n{command}");
        for name in example.shows.as_deref().map(shown_keys).unwrap_or_default() {
            assert!(body.get(name).is_some(), "no {name:?} in {body}\n{command}");
        }
        if command.contains("/v1/organisations ") {
            org = body["id"].as_str().unwrap().into();
            key = body["api_key"].as_str().unwrap().into();
        } else if command.contains("-X POST") && command.contains("/v1/webhooks ") {
            webhook = body["id"].as_str().unwrap().into();
        }
        if command.contains("/simulations ") {
            assert_eq!(body["result"], "delivered", "{body}");
        }
    }
    assert!(!webhook.is_empty(), "the README creates a webhook");
    eventually("the README's event and test event", WAIT, async || {
        (rx.count() == 2).then_some(())
    })
    .await;
}
