// End-to-end check of the chat demo in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core): two pages join the same room through the load balancer, land on different
// nodes, exchange a message, and the test reads what the pages show.
// Usage: node demo-browser.mjs http://127.0.0.1:PORT      -> prints one JSON line with results
import { chromium } from "playwright-core";

const url = process.argv[2];
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = {};
try {
  async function join(nick) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(url);
    await page.fill("#nick", nick);
    await page.fill("#room", "e2e");
    await page.click("#connect");
    await page.waitForFunction(() => document.querySelector("#status").dataset.node, null, { timeout: 10000 });
    return { page, node: await page.$eval("#status", (e) => e.dataset.node) };
  }
  const alice = await join("alice");
  let bob = await join("bob");
  // Least-connections sends the second page to another node; retry a few times just in case.
  for (let i = 0; i < 5 && bob.node === alice.node; i++) bob = await join(`bob${i}`);
  result.alice_node = alice.node;
  result.bob_node = bob.node;

  await alice.page.fill("#text", "hello from alice");
  await alice.page.click("#send-button");
  const sel = "#messages li.message";
  await bob.page.waitForSelector(sel, { timeout: 10000 });
  result.bob_sees = await bob.page.$eval(sel, (li) => ({
    text: li.querySelector(".text").textContent,
    meta: li.querySelector(".meta").textContent,
    from: li.dataset.from,
    deliveredBy: li.dataset.deliveredBy,
  }));
  await alice.page.waitForSelector(sel, { timeout: 10000 });
  result.alice_sees = await alice.page.$eval(sel, (li) => li.querySelector(".text").textContent);

  // The sessions panel lists every node with its live sessions.
  // The panel refreshes every second: wait until it counts both pages.
  await bob.page.waitForFunction(
    () => [...document.querySelectorAll("#nodes tbody tr[data-node] .sessions")].reduce((n, td) => n + Number(td.textContent), 0) >= 2,
    null,
    { timeout: 10000 },
  );
  result.panel = await bob.page.$$eval("#nodes tbody tr[data-node]", (rows) =>
    rows.map((r) => ({ node: r.dataset.node, sessions: Number(r.querySelector(".sessions").textContent) })));
  await bob.page.screenshot({ path: process.env.SCREENSHOT ?? "/tmp/iogate-demo.png" });
} catch (e) {
  result.error = String(e?.message ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
