// The board as a person uses it: Debian's Chromium (playwright-core, pointed at the system
// browser) opens the page `agilepm dev` serves, while this test drives a sprint over gRPC
// the way another program would, over several days: `agilepm dev` runs under libfaketime
// (Debian's faketime package), its wall clock stepped a day at a time, so the burndown
// has a point per day read from real history. The page must follow the feeds (an item turning DONE
// appears without a reload), draw the burndown to 0, move backlog items by dragging and
// by keyboard, name every control, and show a second tenant none of it. Screenshots of
// each view go to AGILEPM_BROWSER_OUTPUT (default ./output) on every run.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readdirSync, statSync, rmSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { gzipSync } from "node:zlib";
import net from "node:net";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..", "..");
const protoRoot = join(repo, "proto");
const binary = process.env.AGILEPM_BIN ?? join(repo, "target", "debug", "agilepm");
const browserPath = process.env.AGILEPM_CHROMIUM ?? "/usr/bin/chromium";
const libfaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const output = process.env.AGILEPM_BROWSER_OUTPUT ?? join(here, "output");
// Below Linux's ephemeral range, apart from the other interop suites' ports.
const ports = { board: 25050, "backlog-item": 25051, task: 25052, planning: 25053, coordinator: 25054, notifier: 25055 };
const boardUrl = `http://127.0.0.1:${ports.board}/`;
const TENANT = "acme-board";
const OTHER = "globex-board";

/** Waits until `check` holds (every 20 ms, 10 s at most). */
async function until(what, check) {
  const deadline = Date.now() + 10000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, `${what}: not within 10 s`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Steps the services' wall clock to `days` from now. */
function setClock(days) {
  writeFileSync(clockFile, `${days >= 0 ? "+" : ""}${days}d`);
}

function day(offset) {
  return new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);
}

function protoFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? protoFiles(path) : path.endsWith(".proto") ? [relative(protoRoot, path)] : [];
  });
}

const api = grpc.loadPackageDefinition(
  protoLoader.loadSync(protoFiles(protoRoot), { includeDirs: [protoRoot], keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true }),
).agilepm;

let system;
let dataDir;
let clockFile;
let browser;
const clients = {};

function call(client, method, request, tenant = TENANT) {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${tenant}`);
  return new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, response) => (error ? reject(error) : resolve(response))),
  );
}

before(async () => {
  assert.ok(existsSync(browserPath), `Chromium is required at ${browserPath} (Debian's chromium package)`);
  assert.ok(existsSync(libfaketime), `libfaketime is required at ${libfaketime} (Debian's faketime package)`);
  mkdirSync(output, { recursive: true });
  dataDir = mkdtempSync(join(tmpdir(), "agilepm-board-"));
  clockFile = join(dataDir, "clock");
  setClock(-3);
  const args = [
    "dev",
    "--data-dir",
    dataDir,
    "--metrics-address",
    "127.0.0.1:25059",
    ...Object.entries(ports).flatMap(([name, port]) => [`--${name}-port`, String(port)]),
  ];
  // Development mode: the bearer is the tenant, so no token expires under the stepped clock.
  const env = {
    ...process.env,
    LD_PRELOAD: libfaketime,
    FAKETIME_TIMESTAMP_FILE: clockFile,
    FAKETIME_NO_CACHE: "1",
    FAKETIME_DONT_FAKE_MONOTONIC: "1",
    RUST_LOG: "warn",
  };
  system = spawn(binary, args, { stdio: ["ignore", "pipe", "inherit"], env });
  await new Promise((resolve, reject) => {
    let text = "";
    system.stdout.on("data", (chunk) => {
      text += chunk;
      if (text.includes("press Ctrl-C to stop")) resolve();
    });
    system.on("exit", (code) => reject(new Error(`agilepm dev exited with ${code}`)));
    setTimeout(() => reject(new Error("agilepm dev did not start")), 60000).unref();
  });
  const at = (name) => `127.0.0.1:${ports[name]}`;
  const insecure = grpc.credentials.createInsecure();
  clients.products = new api.planning.v1.ProductService(at("planning"), insecure);
  clients.releases = new api.planning.v1.ReleaseService(at("planning"), insecure);
  clients.sprints = new api.planning.v1.SprintService(at("planning"), insecure);
  clients.items = new api.backlog.v1.BacklogItemService(at("backlog-item"), insecure);
  clients.tasks = new api.task.v1.TaskService(at("task"), insecure);
  clients.reports = new api.planning.v1.ReportService(at("planning"), insecure);
  browser = await chromium.launch({ executablePath: browserPath, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  system?.kill("SIGTERM");
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

/** A product with a release, a completed sprint (8 points done) and an active one from
 * three days ago to tomorrow, `open` items in its backlog and one item committed to the
 * active sprint three days ago with `tasks` tasks of 2 hours. The services' clock is
 * left three days back. */
async function aSprint(tasks, open) {
  setClock(-3);
  const product = (
    await call(clients.products, "CreateProduct", {
      request_id: randomUUID(),
      product: { name: "Board demo", status_transition_mode: "STATUS_TRANSITION_MODE_AUTOMATIC" },
    })
  ).product;
  const release = (
    await call(clients.releases, "ScheduleRelease", {
      request_id: randomUUID(),
      release: { product_id: product.id, name: "R1", begin_date: day(-20), end_date: day(30) },
    })
  ).release;
  const scheduleSprint = async (name, begin, end) =>
    (
      await call(clients.sprints, "ScheduleSprint", {
        request_id: randomUUID(),
        sprint: { product_id: product.id, name, begin_date: begin, end_date: end },
      })
    ).sprint;
  const plan = async (summary, points = "STORY_POINTS_UNSPECIFIED") =>
    (await call(clients.items, "PlanBacklogItem", { request_id: randomUUID(), product_id: product.id, summary, story_points: points }))
      .backlog_item;
  const commit = async (sprint, item) => {
    await call(clients.releases, "ScheduleBacklogItemForRelease", { release_id: release.id, backlog_item_id: item.id });
    await call(clients.sprints, "CommitBacklogItemToSprint", { sprint_id: sprint.id, backlog_item_id: item.id });
  };
  const define = async (item, name, hours) =>
    (await call(clients.tasks, "DefineTask", { request_id: randomUUID(), backlog_item_id: item.id, name, hours_remaining: hours })).task.id;

  // Last sprint: two items, finished (a task of 0 hours each), then completed.
  const previous = await scheduleSprint("Sprint 0", day(-8), day(-4));
  for (const [summary, points] of [["Landing page", "STORY_POINTS_FIVE"], ["Terms of use", "STORY_POINTS_THREE"]]) {
    const item = await plan(summary, points);
    await commit(previous, item);
    await define(item, "the work", 0);
    await until(`${summary} DONE`, async () => (await call(clients.items, "GetBacklogItem", { id: item.id })).backlog_item.status === "BACKLOG_ITEM_STATUS_DONE");
  }
  await call(clients.sprints, "StartSprint", { id: previous.id });
  await call(clients.sprints, "CompleteSprint", { id: previous.id });

  const sprint = await scheduleSprint("Sprint 1", day(-3), day(1));
  const committed = await plan("Sign-up form", "STORY_POINTS_EIGHT");
  await commit(sprint, committed);
  const taskIds = [];
  for (let n = 1; n <= tasks; n++) taskIds.push(await define(committed, `Task ${n}`, 2));
  const backlog = [];
  for (const summary of open) backlog.push(await plan(summary));
  await call(clients.sprints, "StartSprint", { id: sprint.id });
  return { product, sprint, committed, taskIds, backlog };
}

/** A TCP proxy to 127.0.0.1:`port` whose connections the test can cut, as a network
 * drop does, and then let through again. */
async function proxy(port) {
  const sockets = new Set();
  let up = true;
  const server = net.createServer((client) => {
    if (!up) return client.destroy();
    const upstream = net.connect(port, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      up = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      up = true;
    },
    close() {
      this.cut();
      server.close();
    },
  };
}

async function openBoard(tenant) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 960 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.goto(boardUrl);
  await page.getByLabel("Tenant").fill(tenant);
  await page.getByRole("button", { name: "Open the board" }).click();
  return { context, page, problems };
}

async function openOrder(product) {
  const listed = await call(clients.items, "ListBacklogItems", {
    product_id: product.id,
    statuses: ["BACKLOG_ITEM_STATUS_PLANNED", "BACKLOG_ITEM_STATUS_SCHEDULED", "BACKLOG_ITEM_STATUS_COMMITTED"],
    order_by: "rank",
  });
  return listed.backlog_items.map((item) => item.summary);
}

test("the bundle is small", () => {
  const script = readFileSync(join(repo, "crates", "agilepm", "board", "dist", "board.js"));
  const gzipped = gzipSync(script, { level: 9 }).length;
  console.log(`board.js: ${script.length} bytes, ${gzipped} gzipped`);
  assert.ok(gzipped < 250 * 1024, `board.js is ${gzipped} bytes gzipped, over 250 KiB`);
});

test("a sprint burns down to DONE live, the backlog moves, and another tenant sees none of it", async () => {
  const s = await aSprint(12, ["Password reset", "Audit log"]);
  const { context, page, problems } = await openBoard(TENANT);
  const card = page.locator(`article[data-item-id="${s.committed.id}"]`);
  await card.waitFor();
  assert.equal(await card.getAttribute("data-status"), "COMMITTED");
  await page.locator("#live.live").waitFor();

  // The first view, on a reload with the identity kept in the tab.
  await page.reload();
  await page.locator("body[data-rendered]").waitFor();
  const firstView = Number(await page.locator("body").getAttribute("data-rendered"));
  console.log(`first view rendered ${firstView.toFixed(0)} ms after navigation`);
  assert.ok(firstView < 300, `the first view took ${firstView} ms`);
  await page.locator("#live.live").waitFor();
  await page.screenshot({ path: join(output, "board-before.png"), fullPage: true });

  // Every control has a name in the accessibility tree.
  const tree = await page.locator("body").ariaSnapshot();
  const unnamed = tree.split("\n").filter((line) => /- (button|textbox|spinbutton|combobox|checkbox|link|img)\s*(:|$)/.test(line));
  assert.deepEqual(unnamed, [], `controls without a name:\n${tree}`);

  // The sprint, estimated down over gRPC a day at a time (3 tasks finished two days
  // ago, 3 yesterday, the last 6 today): the item turns DONE on the page without a reload.
  let answered = 0;
  for (const [days, ids] of [[-2, s.taskIds.slice(0, 3)], [-1, s.taskIds.slice(3, 6)], [0, s.taskIds.slice(6)]]) {
    setClock(days);
    for (const id of ids) {
      await call(clients.tasks, "EstimateTaskHoursRemaining", { id, hours_remaining: 0 });
      answered = performance.now();
    }
  }
  await page.locator(`article[data-item-id="${s.committed.id}"][data-status="DONE"]`).waitFor({ timeout: 10000 });
  const shownAfter = performance.now() - answered;
  console.log(`the item turned DONE on the page ${shownAfter.toFixed(0)} ms after the last estimate was answered`);
  assert.ok(shownAfter < 1000, `DONE appeared ${shownAfter} ms after the last estimate`);
  const chart = page.locator("#burndown svg");
  await page.waitForFunction(() => document.querySelector("#burndown svg")?.dataset.lastHours === "0");
  assert.equal(await chart.getAttribute("data-last-date"), day(0));
  assert.match(await chart.getAttribute("aria-label"), /0 hours remaining on \S+ \(ideal 6\), day 4 of 5/);
  const burndown = await call(clients.reports, "GetSprintBurndown", { sprint_id: s.sprint.id });
  assert.deepEqual(
    burndown.days.map((d) => d.hours_remaining),
    [24, 18, 12, 0, 0],
    "the history the chart draws",
  );
  assert.match(await page.locator("#velocity svg").getAttribute("aria-label"), /Sprint 0 8 story points/);
  // The same chart as a file, for reports: agilepm burndown --svg.
  const svgPath = join(output, "burndown.svg");
  execFileSync(binary, ["burndown", "--sprint", s.sprint.id, "--svg", svgPath, "--planning-endpoint", `http://127.0.0.1:${ports.planning}`], {
    env: { ...process.env, AGILEPM_TOKEN: TENANT },
  });
  const svg = readFileSync(svgPath, "utf8");
  assert.match(svg, /Sprint 1: 0 hours remaining on \S+ \(ideal 6\), day 4 of 5/);
  assert.equal((svg.match(/<circle/g) ?? []).length, 4);
  await page.locator("#sprint").screenshot({ path: join(output, "sprint.png") });
  await page.locator("#burndown").screenshot({ path: join(output, "burndown.png") });

  // Drag "Audit log" onto "Password reset": it goes first.
  assert.deepEqual(await openOrder(s.product), ["Password reset", "Audit log"]);
  await page.locator("#backlog li", { hasText: "Audit log" }).dragTo(page.locator("#backlog li", { hasText: "Password reset" }));
  await page.waitForFunction(() => document.querySelector("#backlog li .summary")?.textContent === "Audit log");
  assert.deepEqual(await openOrder(s.product), ["Audit log", "Password reset"]);
  // From the keyboard: Alt+Up on "Password reset" moves it back to the top.
  await page.locator("#backlog li", { hasText: "Password reset" }).focus();
  await page.keyboard.press("Alt+ArrowUp");
  await page.waitForFunction(() => document.querySelector("#backlog li .summary")?.textContent === "Password reset");
  assert.deepEqual(await openOrder(s.product), ["Password reset", "Audit log"]);
  await page.locator("#backlog").screenshot({ path: join(output, "backlog.png") });

  await page.screenshot({ path: join(output, "board.png"), fullPage: true });
  assert.deepEqual(problems, []);

  // A move against an item changed meanwhile is refused; the page shows the fresh order
  // and says so. Its feeds are held off here, so it cannot have refreshed on its own.
  const stale = await browser.newContext({ viewport: { width: 1280, height: 960 } });
  const stalePage = await stale.newPage();
  await stalePage.route("**/agilepm.events.v1.EventFeedService/Subscribe", (route) => route.abort());
  await stalePage.goto(boardUrl);
  await stalePage.getByLabel("Tenant").fill(TENANT);
  await stalePage.getByRole("button", { name: "Open the board" }).click();
  await stalePage.locator("#backlog li", { hasText: "Audit log" }).waitFor();
  const audit = s.backlog.find((item) => item.summary === "Audit log");
  await call(clients.items, "UpdateBacklogItem", {
    backlog_item: { id: audit.id, summary: "Audit log (v2)" },
    update_mask: { paths: ["summary"] },
  });
  await stalePage.getByRole("button", { name: "Move “Audit log” to the top" }).click();
  await stalePage.getByText("changed meanwhile: this is the fresh order").waitFor();
  await stalePage.locator("#backlog li", { hasText: "Audit log (v2)" }).waitFor();
  assert.deepEqual(await openOrder(s.product), ["Password reset", "Audit log (v2)"], "the refused move changed nothing");
  await stalePage.screenshot({ path: join(output, "conflict.png"), fullPage: true });
  await stale.close();

  // A dropped connection: the page's calls go through proxies this test cuts. While cut,
  // a task is estimated up again (the item reopens); once through again, the page
  // resumes its feeds from the last position it saw, receives what it missed, and shows
  // the item COMMITTED without a reload.
  const proxies = {
    backlogItem: await proxy(ports["backlog-item"]),
    task: await proxy(ports.task),
    planning: await proxy(ports.planning),
  };
  const dropped = await browser.newContext({ viewport: { width: 1280, height: 960 }, bypassCSP: true });
  await dropped.route("**/config.json", (route) =>
    route.fulfill({
      json: {
        development: true,
        endpoints: { backlogItem: proxies.backlogItem.url, task: proxies.task.url, planning: proxies.planning.url },
      },
    }),
  );
  const droppedPage = await dropped.newPage();
  await droppedPage.goto(boardUrl);
  await droppedPage.getByLabel("Tenant").fill(TENANT);
  await droppedPage.getByRole("button", { name: "Open the board" }).click();
  await droppedPage.locator(`article[data-item-id="${s.committed.id}"][data-status="DONE"]`).waitFor();
  await droppedPage.locator("#live.live").waitFor();
  for (const p of Object.values(proxies)) p.cut();
  await droppedPage.locator("#live.offline").waitFor();
  await call(clients.tasks, "EstimateTaskHoursRemaining", { id: s.taskIds[0], hours_remaining: 1 });
  await until("the item reopened", async () => (await call(clients.items, "GetBacklogItem", { id: s.committed.id })).backlog_item.status === "BACKLOG_ITEM_STATUS_COMMITTED");
  assert.equal(
    await droppedPage.locator(`article[data-item-id="${s.committed.id}"]`).getAttribute("data-status"),
    "DONE",
    "cut off, the page cannot have heard",
  );
  for (const p of Object.values(proxies)) p.restore();
  await droppedPage.locator(`article[data-item-id="${s.committed.id}"][data-status="COMMITTED"]`).waitFor({ timeout: 15000 });
  await droppedPage.locator("#live.live").waitFor();
  await droppedPage.screenshot({ path: join(output, "resumed.png"), fullPage: true });
  await dropped.close();
  for (const p of Object.values(proxies)) p.close();

  // Another tenant's page shows none of it, and follows its own (empty) feeds.
  const other = await openBoard(OTHER);
  await other.page.getByText("This tenant has no product yet.").waitFor();
  const text = await other.page.locator("body").innerText();
  for (const summary of ["Board demo", "Sign-up form", "Password reset", "Audit log (v2)"]) {
    assert.ok(!text.includes(summary), `${OTHER} sees ${summary}`);
  }
  await other.page.screenshot({ path: join(output, "other-tenant.png"), fullPage: true });
  await other.context.close();
  await context.close();
});
