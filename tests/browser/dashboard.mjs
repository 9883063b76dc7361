// End-to-end dashboard test in real headless Chromium (Debian's package),
// driven over CDP by playwright-core. Started by tests/integration/browser.rs
// with two live hookrelay servers: STRICT (production URL rules) and DEV
// (private targets allowed, so it can reach the loopback RECEIVER_URL).
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const STRICT_BASE = env("STRICT_BASE"), STRICT_KEY = env("STRICT_KEY");
const DEV_BASE = env("DEV_BASE"), DEV_KEY = env("DEV_KEY"), DEV_ORG = env("DEV_ORG");
const RECEIVER_URL = env("RECEIVER_URL"), SHOTS = env("SHOTS_DIR");
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: false });
const text = (sel) => page.locator(sel).first().textContent();
// Waits until the first node matching `sel` has text that `op`s `value`
// (op: "equals", "includes", "startsWith", "nonEmpty").
const waitText = (sel, op, value, what) =>
  page.waitForFunction(([s, o, v]) => {
    const n = document.querySelector(s);
    if (!n) return false;
    const t = n.textContent;
    return o === "equals" ? t === v : o === "includes" ? t.includes(v) : o === "startsWith" ? t.startsWith(v) : t.length > 0;
  }, [sel, op, value], { timeout: 15000 }).catch(async () => {
    await page.screenshot({ path: `${SHOTS}/failure.png` }).catch(() => {});
    throw new Error(`timed out waiting for ${what}; page errors: ${errors.join("; ")}`);
  });

async function api(base, key, method, path, body) {
  const res = await fetch(base + path, { method, headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined });
  return { status: res.status, body: await res.json().catch(() => null) };
}

async function signIn(base, key) {
  await page.goto(base + "/");
  await page.evaluate(() => sessionStorage.clear());
  await page.goto(base + "/");
  await page.fill("#api-key", key);
  await page.click("#signin-form button[type=submit]");
  await waitText("#whoami", "startsWith", "Signed in as", "sign-in");
}

async function createWebhook(name, url, expectError) {
  await page.click("#add-webhook");
  await page.fill("#wh-name", name);
  await page.fill("#wh-url", url);
  await page.check("#wh-all");
  await page.click("#wh-submit");
  if (expectError) {
    await waitText('[data-error-for="url"]', "nonEmpty", "", "the url error beside the field");
    return;
  }
  await page.locator("#webhook-dialog").waitFor({ state: "hidden" });
  await page.locator(".card", { hasText: name }).waitFor();
}

process.on("unhandledRejection", async (e) => {
  await page.screenshot({ path: `${SHOTS}/failure.png` }).catch(() => {});
  console.error("FAILED:", e, "\npage errors:", errors);
  process.exit(1);
});

// ---- Part A: production rules. Sign in, a refused http:// URL, create, reveal the secret.
await page.goto(STRICT_BASE + "/");
await shot("01-sign-in");
await signIn(STRICT_BASE, STRICT_KEY);
await createWebhook("Production", "http://example.com/hook", true);
assert.match(await text('[data-error-for="url"]'), /https/);
await shot("02-webhook-form-error");
await page.fill("#wh-url", "https://example.com/webhooks/trackpilots");
await page.click("#wh-submit");
await page.locator("#webhook-dialog").waitFor({ state: "hidden" });
const card = page.locator(".card", { hasText: "Production" });
await card.waitFor();
assert.match(await card.locator("[data-role=secret]").textContent(), /^.{8}•{24}$/);
await card.locator("button.copy").click();
await page.waitForFunction(() => /^[0-9a-f]{64}$/.test(document.querySelector("[data-role=secret]").textContent));
const hookId = await card.getAttribute("data-webhook-id");
const revealed = await card.locator("[data-role=secret]").textContent();
assert.equal(revealed, (await api(STRICT_BASE, STRICT_KEY, "GET", `/v1/webhooks/${hookId}/secret`)).body.secret);
await shot("03-webhooks");

// ---- Part B: a loopback receiver. Simulation, live feed, deliveries, delete.
await signIn(DEV_BASE, DEV_KEY);
await createWebhook("Loopback", RECEIVER_URL, false);

await page.click('#nav [data-view="simulations"]');
await page.waitForFunction(() => document.querySelectorAll("#sim-event option").length === 3);
await page.selectOption("#sim-event", "desktop.screenshot_tracking.captured");
await waitText("#sim-preview", "includes", "simulation-placeholder", "the screenshot preview");
await page.selectOption("#sim-event", "desktop.activity_tracking.captured");
await waitText("#sim-preview", "includes", "workMode", "the preview to follow the event choice");
await page.click("#sim-send");
await page.locator("#sim-result").waitFor();
await waitText("#sim-outcome", "includes", "Delivered", "a delivered simulation");
assert.equal(await text("#sim-outcome"), "✅ Delivered");
assert.equal(await text("#sim-status"), "200");
assert.match(await text("#sim-headers"), /x-webhook-signature/);
assert.match(await text("#sim-payload"), /"simulation": true/);
assert.equal(await text("#sim-response"), "receiver says hi");
await shot("04-simulations");

await page.click('#nav [data-view="feed"]');
await waitText("#feed-badge", "includes", "Connected", "the connected badge");
// Tabs for the three subscribed types (the new webhook's), from a fresh hello.
await page.waitForFunction(() => document.querySelectorAll(".feed-tab").length === 3, null, { timeout: 15000 });
const event = (kind) => ({
  event: kind, version: "v1", agent: "desktop-agent", timestamp: Date.now(),
  data: kind === "desktop.activity_tracking.captured"
    ? { organisation: { organisationId: DEV_ORG }, team: { teamId: "team-1" }, user: { userId: "user-1" }, activity: { workMode: true } }
    : [{ organisation: { organisationId: DEV_ORG }, team: { teamId: "team-1" }, user: { userId: "user-1" }, tracking: { trackingId: crypto.randomUUID() } }],
});
for (const kind of ["desktop.app_tracking.captured", "desktop.app_tracking.captured", "desktop.app_tracking.captured", "desktop.activity_tracking.captured"]) {
  assert.equal((await api(DEV_BASE, DEV_KEY, "POST", "/v1/events", event(kind))).status, 202);
}
const appTab = '[data-count-for="desktop.app_tracking.captured"]';
await waitText(appTab, "equals", "3", "three tracking events counted");
await waitText('[data-count-for="desktop.activity_tracking.captured"]', "equals", "1", "one activity event counted");
await page.waitForFunction(() => document.querySelectorAll("#feed-cards .event-card").length === 3);
await page.waitForFunction(() => document.querySelectorAll("#pool-list li").length === 4);
assert.equal(await page.locator(".toast").count() > 0, true, "a toast per new event");
await shot("05-feed-new-event");
// The newest activity card carries the badge for 3 s, then loses it.
await page.click('[data-type="desktop.activity_tracking.captured"]');
await page.locator("#feed-cards .event-card.new", { hasText: "New Event" }).waitFor();
await page.waitForFunction(() => !document.querySelector("#feed-cards .event-card.new"), null, { timeout: 8000 });
assert.match(await text("#feed-cards .event-card"), /user-1/);
// Pause: the pool holds still while counts keep moving; resume shows all.
await page.click("#pool-toggle");
for (let i = 0; i < 2; i++) await api(DEV_BASE, DEV_KEY, "POST", "/v1/events", event("desktop.app_tracking.captured"));
await waitText(appTab, "equals", "5", "counts to keep moving while paused");
assert.equal(await page.locator("#pool-list li").count(), 4);
await page.click("#pool-toggle");
await page.waitForFunction(() => document.querySelectorAll("#pool-list li").length === 6);
await shot("06-feed");

await page.click('#nav [data-view="deliveries"]');
await page.waitForFunction(() => document.querySelectorAll("#deliveries-table tbody tr").length >= 2);
await shot("07-deliveries");
await page.locator("#deliveries-table tbody tr button", { hasText: "Redeliver" }).first().click();
await page.locator("#deliveries-table tbody tr button", { hasText: "Queued" }).first().waitFor();

await page.setViewportSize({ width: 390, height: 844 });
await page.click('#nav [data-view="feed"]');
await shot("08-feed-phone");
await page.setViewportSize({ width: 1280, height: 900 });

await page.click('#nav [data-view="webhooks"]');
const loop = page.locator(".card", { hasText: "Loopback" });
await loop.waitFor();
const loopId = await loop.getAttribute("data-webhook-id");
await loop.getByRole("button", { name: "Delete Loopback" }).click();
await page.locator("#confirm-dialog").waitFor();
await shot("09-delete-confirm");
await page.click("#confirm-delete");
await loop.waitFor({ state: "detached" });
assert.equal((await api(DEV_BASE, DEV_KEY, "GET", `/v1/webhooks/${loopId}`)).status, 404);

assert.deepEqual(errors, [], "no script errors on the page");
await browser.close();
console.log("dashboard: all browser checks passed");
