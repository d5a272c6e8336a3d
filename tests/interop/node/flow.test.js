// The core agilepm flow from JavaScript: @grpc/proto-loader loads proto/ directly, and
// the system under test is a real `agilepm dev` (AGILEPM_BIN, default target/debug/agilepm).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, statSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID, randomBytes } from "node:crypto";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const protoRoot = join(repo, "proto");
// Below Linux's ephemeral port range (32768-60999), so no outgoing connection holds them.
const ports = { board: 27050, "backlog-item": 27051, task: 27052, planning: 27053, coordinator: 27054, notifier: 27055 };
const binary = process.env.AGILEPM_BIN ?? join(repo, "target", "debug", "agilepm");
// Tokens verified against a secret, as in production: random per run, minted by
// `agilepm token` the way an operator would.
const secret = randomBytes(32).toString("hex");
const authEnv = { ...process.env, AGILEPM_AUTH_SECRET: secret };
const token = execFileSync(
  binary,
  ["token", "--tenant", "interop-node", "--role", "product_owner", "--role", "team_member", "--subject", "interop-node", "--ttl", "1h"],
  { env: authEnv, encoding: "utf8" },
).trim();
const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${token}`);

// The UTC day `offset` days from today, YYYY-MM-DD.
function day(offset) {
  return new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);
}

function protoFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? protoFiles(path) : path.endsWith(".proto") ? [relative(protoRoot, path)] : [];
  });
}

const definition = protoLoader.loadSync(protoFiles(protoRoot), {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const api = grpc.loadPackageDefinition(definition).agilepm;

let system;
let dataDir;
const clients = {};

function call(client, method, request) {
  return new Promise((resolve, reject) => client[method](request, metadata, { deadline: Date.now() + 10000 }, (error, response) => (error ? reject(error) : resolve(response))));
}

before(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "agilepm-node-"));
  const args = ["dev", "--data-dir", dataDir, ...Object.entries(ports).flatMap(([name, port]) => [`--${name}-port`, String(port)])];
  system = spawn(binary, args, { stdio: ["ignore", "pipe", "ignore"], env: authEnv });
  await new Promise((resolve, reject) => {
    let output = "";
    system.stdout.on("data", (chunk) => {
      output += chunk;
      if (output.includes("services up, storage")) resolve();
    });
    system.on("exit", (code) => reject(new Error(`agilepm dev exited with ${code}`)));
    const timer = setTimeout(() => reject(new Error("agilepm dev did not start")), 60000);
    timer.unref();
  });
  const address = (name) => `127.0.0.1:${ports[name]}`;
  const insecure = grpc.credentials.createInsecure();
  clients.products = new api.planning.v1.ProductService(address("planning"), insecure);
  clients.releases = new api.planning.v1.ReleaseService(address("planning"), insecure);
  clients.sprints = new api.planning.v1.SprintService(address("planning"), insecure);
  clients.items = new api.backlog.v1.BacklogItemService(address("backlog-item"), insecure);
  clients.tasks = new api.task.v1.TaskService(address("task"), insecure);
  clients.feed = new api.events.v1.EventFeedService(address("backlog-item"), insecure);
});

after(() => {
  for (const client of Object.values(clients)) client.close();
  system?.kill("SIGTERM");
  rmSync(dataDir, { recursive: true, force: true });
});

test("an item committed to a sprint becomes DONE when its task hours reach zero", async () => {
  const { head_position: head } = await call(clients.feed, "GetFeedHead", {});
  const { product } = await call(clients.products, "CreateProduct", { request_id: randomUUID(), product: { name: `Node ${randomUUID()}` } });
  const { release } = await call(clients.releases, "ScheduleRelease", {
    request_id: randomUUID(),
    release: { product_id: product.id, name: "1.0", begin_date: day(-30), end_date: day(60) },
  });
  const { sprint } = await call(clients.sprints, "ScheduleSprint", {
    request_id: randomUUID(),
    sprint: { product_id: product.id, name: "S1", begin_date: day(-3), end_date: day(8) },
  });
  const { backlog_item: item } = await call(clients.items, "PlanBacklogItem", { request_id: randomUUID(), product_id: product.id, summary: "Node story" });
  assert.equal(item.status, "BACKLOG_ITEM_STATUS_PLANNED");
  await call(clients.releases, "ScheduleBacklogItemForRelease", { release_id: release.id, backlog_item_id: item.id });
  const { backlog_item: committed } = await call(clients.sprints, "CommitBacklogItemToSprint", { sprint_id: sprint.id, backlog_item_id: item.id });
  assert.equal(committed.status, "BACKLOG_ITEM_STATUS_COMMITTED");
  const { task } = await call(clients.tasks, "DefineTask", { request_id: randomUUID(), backlog_item_id: item.id, name: "do it", hours_remaining: 2 });
  const { totals } = await call(clients.tasks, "EstimateTaskHoursRemaining", { id: task.id, hours_remaining: 0, date: day(0) });
  assert.equal(Number(totals.hours_remaining), 0);

  // Observe the item's three status changes (SCHEDULED, COMMITTED, DONE) on the
  // backlog-item feed, then confirm where it ended.
  const stream = clients.feed.Subscribe(
    { after_position: head, aggregate_ids: [item.id], event_types: ["agilepm.backlog.v1.BacklogItemStatusChanged"] },
    metadata,
  );
  const statuses = await new Promise((resolve, reject) => {
    const seen = [];
    stream.on("data", (message) => {
      if (message.kind !== "event") return;
      seen.push(message.event.event_type);
      if (seen.length === 3) {
        stream.cancel();
        resolve(seen);
      }
    });
    stream.on("error", (error) => (error.code === grpc.status.CANCELLED ? undefined : reject(error)));
    setTimeout(() => reject(new Error(`only ${seen.length} status changes arrived`)), 20000).unref();
  });
  assert.deepEqual(statuses, Array(3).fill("agilepm.backlog.v1.BacklogItemStatusChanged"));
  const { backlog_item: done } = await call(clients.items, "GetBacklogItem", { id: item.id });
  assert.equal(done.status, "BACKLOG_ITEM_STATUS_DONE");
});

test("bad input is INVALID_ARGUMENT naming the field, a stale version is ABORTED", async () => {
  await assert.rejects(call(clients.tasks, "EstimateTaskHoursRemaining", { id: randomUUID(), hours_remaining: 5000 }), (error) => {
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, /^hours_remaining:/);
    return true;
  });
  const { product } = await call(clients.products, "CreateProduct", { request_id: randomUUID(), product: { name: `Node ${randomUUID()}` } });
  const update = { product: { id: product.id, description: "x" }, update_mask: { paths: ["description"] }, expected_version: product.version };
  await call(clients.products, "UpdateProduct", update);
  await assert.rejects(call(clients.products, "UpdateProduct", update), (error) => error.code === grpc.status.ABORTED);
});

test("every event names who acted, and a plain tenant id is not a token", async () => {
  const { product } = await call(clients.products, "CreateProduct", { request_id: randomUUID(), product: { name: `Node ${randomUUID()}` } });
  const { backlog_item: item } = await call(clients.items, "PlanBacklogItem", { request_id: randomUUID(), product_id: product.id, summary: "Who" });
  const stream = clients.feed.Subscribe({ aggregate_ids: [item.id] }, metadata);
  const actor = await new Promise((resolve, reject) => {
    stream.on("data", (message) => {
      if (message.kind !== "event") return;
      stream.cancel();
      resolve(message.event.actor);
    });
    stream.on("error", (error) => (error.code === grpc.status.CANCELLED ? undefined : reject(error)));
    setTimeout(() => reject(new Error("no event arrived")), 20000).unref();
  });
  assert.equal(actor, "interop-node");
  const plain = new grpc.Metadata();
  plain.set("authorization", "Bearer interop-node");
  await assert.rejects(
    new Promise((resolve, reject) => clients.products.ListProducts({}, plain, (error, response) => (error ? reject(error) : resolve(response)))),
    (error) => error.code === grpc.status.UNAUTHENTICATED,
  );
});
