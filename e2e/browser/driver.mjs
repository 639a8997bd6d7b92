// A line protocol around one headless Chromium page, for the Rust tests (e2e/src/browser.rs).
// Each line on stdin is one JSON command; each answer is one JSON line on stdout:
// {"ok": true, "value": ...} or {"ok": false, "error": "..."}. The page's console errors and
// uncaught exceptions are kept, and the `errors` command returns them.
//
//   {"op": "goto", "url": "..."}                 load a page (waits for its load event)
//   {"op": "wait", "selector": "...", "text": "...", "timeout_ms": 10000}
//                                                wait until an element matching selector is
//                                                visible and (if given) its text contains text
//   {"op": "text", "selector": "..."}            the element's innerText
//   {"op": "click", "selector": "..."}           click it
//   {"op": "fill", "selector": "...", "value": "..."}
//   {"op": "eval", "js": "..."}                  an expression's JSON value, in the page
//   {"op": "screenshot", "path": "..."}          a full-page PNG
//   {"op": "errors"}                             console errors and page errors so far
//   {"op": "close"}
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.LINNET_CHROMIUM || "/usr/bin/chromium",
  // The machine's network is closed: without these, Chromium keeps trying Google's hosts.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const errors = [];
page.on("console", (m) => {
  if (m.type() === "error") errors.push(`console: ${m.text()}`);
});
page.on("pageerror", (e) => errors.push(`exception: ${e.message}`));

async function run(cmd) {
  const timeout = cmd.timeout_ms ?? 10000;
  switch (cmd.op) {
    case "goto":
      await page.goto(cmd.url, { waitUntil: "load", timeout });
      return page.url();
    case "wait": {
      const loc = page.locator(cmd.selector).filter(cmd.text ? { hasText: cmd.text } : {});
      await loc.first().waitFor({ state: "visible", timeout });
      return await loc.first().innerText();
    }
    case "text":
      return await page.locator(cmd.selector).first().innerText({ timeout });
    case "click":
      await page.locator(cmd.selector).first().click({ timeout });
      return null;
    case "fill":
      await page.locator(cmd.selector).first().fill(cmd.value, { timeout });
      return null;
    case "eval":
      return await page.evaluate(cmd.js);
    case "screenshot":
      await page.screenshot({ path: cmd.path, fullPage: true });
      return cmd.path;
    case "errors":
      return errors;
    case "close":
      await browser.close();
      process.exit(0);
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = { ok: true, value: (await run(JSON.parse(line))) ?? null };
  } catch (e) {
    answer = { ok: false, error: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
