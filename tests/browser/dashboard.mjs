// The analytics dashboard in headless Chromium (run by tests/dashboard.rs,
// which starts two nodes and `memgate analytics` and sets the environment):
// log in with basic auth, check the numbers against the API, switch graph
// series, check the what-if and hot-keys panels against the API, create and delete a
// credential, flush with confirmation, and save
// a desktop and a phone-size screenshot. Only loopback is ever contacted.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const { BASE_URL, CACHE_ID, DASH_USER, DASH_PASS, OUT_DIR } = process.env;
for (const [name, value] of Object.entries({ BASE_URL, CACHE_ID, DASH_USER, DASH_PASS, OUT_DIR })) {
  if (!value) throw new Error(`${name} is not set`);
}
const pageUrl = `${BASE_URL}/caches/${CACHE_ID}`;

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

// The API's view, for comparison (Node's fetch, with the same credential).
async function api(path, user = DASH_USER, pass = DASH_PASS) {
  const auth = "Basic " + Buffer.from(`${user}:${pass}`).toString("base64");
  const reply = await fetch(`${BASE_URL}/api/v1/${path}`, { headers: { Authorization: auth } });
  check(reply.ok, `API ${path}: HTTP ${reply.status}`);
  return reply.json();
}

function sum(stats, name) {
  return Object.values(stats).reduce((total, node) => total + node[name], 0);
}

async function figure(page, scope, name) {
  return page.locator(`${scope} [data-stat="${name}"]`).first().getAttribute("data-value");
}

const profile = await mkdtemp(join(tmpdir(), "memgate-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  httpCredentials: { username: DASH_USER, password: DASH_PASS },
  viewport: { width: 1280, height: 900 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  // Nothing may come from anywhere but the dashboard itself.
  const foreign = [];
  page.on("request", (request) => {
    if (!request.url().startsWith(BASE_URL)) foreign.push(request.url());
  });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });

  const response = await page.goto(pageUrl);
  check(response.status() === 200, `page status ${response.status()}`);
  check((await page.locator("#cache-id").textContent()) === CACHE_ID, "cache id shown");

  // The numbers match the API's, summed over the nodes and per node.
  const stats = await api(`${CACHE_ID}/stats`);
  const names = ["bytes", "limit_maxbytes", "curr_connections", "total_connections",
    "curr_items", "evictions", "cmd_set", "cmd_flush", "get_hits", "get_misses"];
  for (const name of names) {
    const shown = await figure(page, "#panels", name);
    check(Number(shown) === sum(stats, name), `${name}: page ${shown}, API ${sum(stats, name)}`);
  }
  const hits = sum(stats, "get_hits");
  const gets = hits + sum(stats, "get_misses");
  const rate = Number(await figure(page, "#panels", "hit_rate"));
  check(gets > 0 && Math.abs(rate - (100 * hits) / gets) < 0.01, `hit rate ${rate}`);
  check(sum(stats, "curr_items") > 0, "the cache has items");
  for (const [node, values] of Object.entries(stats)) {
    const row = `tr[data-node="${node}"]`;
    for (const name of ["curr_items", "bytes", "cmd_set"]) {
      const shown = await figure(page, row, name);
      check(Number(shown) === values[name], `${node} ${name}: page ${shown}, API ${values[name]}`);
    }
  }
  check(await page.locator("#panels [data-stat=new_evictions]").count() === 1, "new evictions shown");

  // Graphs: usage and hit rate first; switch both; the URL keeps the choice.
  check(await page.locator('svg[data-series="usage"]').count() === 1, "usage graph");
  check(await page.locator('svg[data-series="hit_rate"]').count() === 1, "hit rate graph");
  await page.selectOption("#graph-a", "items");
  await page.locator('svg[data-series="items"]').waitFor();
  await page.selectOption("#graph-b", "connections");
  await page.locator('svg[data-series="connections"]').waitFor();
  check(await page.locator('svg[data-series="usage"]').count() === 0, "usage graph replaced");
  check(page.url().includes("a=items") && page.url().includes("b=connections"), `url ${page.url()}`);
  const points = Number(await page.locator('svg[data-series="items"]').getAttribute("data-points"));
  check(points >= 2, `items graph has ${points} points`);
  await page.selectOption("#graph-a", "usage");
  await page.locator('svg[data-series="usage"]').waitFor();

  // What if: the curve is drawn with the limit marked, and each line's
  // figure is the API's curve at that multiple of the limit.
  check(await page.locator('#what-if[data-trustworthy="true"]').count() === 1, "what-if panel");
  check(await page.locator("#what-if-chart polyline").count() === 1, "what-if curve drawn");
  check(await page.locator("#what-if-chart line.limit").count() === 1, "current limit marked");
  check(await page.locator("#what-if-note").count() === 0, "no small-sample note");
  const whatIf = (await api(`${CACHE_ID}/whatif`)).what_if;
  const twice = page.locator('#what-if li[data-multiple="2"]');
  const text = await twice.textContent();
  check(/^at 2× memory .*: \d+\.\d% hits \(now \d+\.\d%\)$/.test(text), `what-if line: ${text}`);
  const at = whatIf.sizes.indexOf(2 * whatIf.limit);
  const predicted = 100 * whatIf.hit_rates[at];
  const shownRate = Number(await twice.getAttribute("data-value"));
  check(at >= 0 && Math.abs(shownRate - predicted) < 0.01, `2×: page ${shownRate}, API ${predicted}`);

  // Hot keys: the page lists the API's top key as text, though its name is
  // markup (tests/dashboard.rs keeps touching it through the run).
  const hot = await api(`${CACHE_ID}/hotkeys`);
  const hotKey = `hot<i>&"q'`;
  check(hot.by_ops.length > 0 && hot.by_ops[0].key === hotKey, `API's top hot key ${hot.by_ops[0]?.key}`);
  await page.reload();
  const topRow = page.locator("#hot-ops tbody tr").first();
  const shownKey = await topRow.locator("code.key").textContent();
  check(shownKey === hotKey, `top hot key on the page: ${shownKey}`);
  check(Number(await topRow.getAttribute("data-count")) > 0, "its count");
  check(await page.locator("#hot-bytes tbody tr").count() > 0, "hot keys by bytes");
  check(await page.locator("#hot-keys i").count() === 0, "a key is never markup");

  // Screenshots with data in them: desktop, then phone size.
  await page.screenshot({ path: join(OUT_DIR, "dashboard.png"), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.reload();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `no sideways scrolling on a phone (overflow ${overflow}px)`);
  await page.screenshot({ path: join(OUT_DIR, "dashboard-phone.png"), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // Create a credential: its password is shown once and works with the API.
  await page.click("#create button");
  await page.locator("#new-username").waitFor();
  const user = await page.locator("#new-username").textContent();
  const pass = await page.locator("#new-password").textContent();
  const listed = await api(`${CACHE_ID}/credentials`, user, pass);
  check(listed.some((c) => c.id === user), "the new credential is listed by the API");
  check(await page.locator(`tr[data-username="${user}"]`).count() === 1, "new row");

  // Delete it, accepting the confirmation dialog.
  page.once("dialog", (dialog) => dialog.accept());
  await Promise.all([
    page.waitForURL(/done=deleted/),
    page.click(`tr[data-username="${user}"] form.delete button`),
  ]);
  check(await page.locator(`tr[data-username="${user}"]`).count() === 0, "row gone");
  const after = await api(`${CACHE_ID}/credentials`);
  check(!after.some((c) => c.id === user), "the API no longer lists it");

  // Flush: dismissing the dialog does nothing; accepting flushes.
  page.once("dialog", (dialog) => dialog.dismiss());
  await page.click("#flush button");
  check(sum(await api(`${CACHE_ID}/stats`), "curr_items") > 0, "dismissed: not flushed");
  page.once("dialog", (dialog) => dialog.accept());
  await Promise.all([page.waitForURL(/done=flushed/), page.click("#flush button")]);
  check((await page.locator("#notice").textContent()).includes("flushed"), "flush notice");
  check(sum(await api(`${CACHE_ID}/stats`), "curr_items") === 0, "flushed on every node");
  check(Number(await figure(page, "#panels", "curr_items")) === 0, "page shows 0 items");

  check(foreign.length === 0, `requests outside the dashboard: ${foreign.join(", ")}`);
  check(errors.length === 0, `page errors: ${errors.join("; ")}`);
  console.log("dashboard ok");
} catch (error) {
  // Leave what the browser saw, for the failure report.
  const page = context.pages()[0];
  if (page) {
    console.error(`at ${page.url()}:\n${(await page.locator("body").innerText()).slice(0, 2000)}`);
    await page.screenshot({ path: join(OUT_DIR, "dashboard-failure.png"), fullPage: true });
  }
  throw error;
} finally {
  await context.close();
  await rm(profile, { recursive: true, force: true });
}
