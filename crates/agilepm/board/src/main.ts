// The board: one tenant's product backlog, active sprint, burndown and velocity, kept
// live by following the backlog-item and task feeds over gRPC-Web. Read-mostly on
// purpose: the API is the product; this page proves it serves people.

import { ConnectError } from "@connectrpc/connect";
import { connect, type Api, type BoardConfig } from "./api";
import { loadBacklog, renderBacklog } from "./backlog";
import { burndownChart, velocityChart } from "./chart";
import { SprintState, type Sprint } from "./gen/agilepm/planning/v1/sprint_pb";
import { follow } from "./live";
import { loadSprint, renderSprint } from "./sprint";

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
/** The identity lives in this tab only (sessionStorage), never in a cookie. */
const IDENTITY = "agilepm.identity";

function announce(message: string): void {
  byId("status").textContent = message;
}

function problem(what: string, error: unknown): void {
  announce(`${what}: ${ConnectError.from(error).rawMessage}`);
}

class Board {
  private productId = "";
  private sprint: Sprint | undefined;
  private pending: ReturnType<typeof setTimeout> | undefined;
  private readonly stop = new AbortController();

  constructor(private readonly api: Api) {}

  /** Fills the product choice, shows the first product, and follows the feeds. */
  async open(): Promise<void> {
    const products = (await this.api.products.listProducts({ pageSize: 200 })).products;
    const choice = byId<HTMLSelectElement>("product");
    choice.replaceChildren(
      ...products.map((p) => new Option(p.name, p.id)),
    );
    choice.onchange = () => void this.show(choice.value);
    byId("board").hidden = false;
    if (products.length === 0) {
      announce("This tenant has no product yet.");
      return;
    }
    await this.show(products[0].id);
    const live = byId("live");
    const listener = {
      onEvent: () => this.soon(),
      onLive: (up: boolean) => {
        live.textContent = up ? "live" : "reconnecting…";
        live.className = up ? "live" : "offline";
      },
    };
    void follow(this.api.itemFeed, listener, this.stop.signal);
    void follow(this.api.taskFeed, listener, this.stop.signal);
  }

  /** Shows product `id`: its active sprint (else its latest planned one). */
  private async show(id: string): Promise<void> {
    this.productId = id;
    const sprints = (await this.api.sprints.listSprints({ productId: id, pageSize: 200 })).sprints;
    this.sprint =
      sprints.find((s) => s.state === SprintState.ACTIVE) ??
      sprints.filter((s) => s.state === SprintState.PLANNED).at(-1);
    byId("sprint-name").textContent = this.sprint
      ? `${this.sprint.name} (${this.sprint.beginDate} – ${this.sprint.endDate})`
      : "no active or planned sprint";
    await this.refresh();
  }

  /** Redraws soon: many events in a burst make one redraw. */
  private soon(): void {
    clearTimeout(this.pending);
    this.pending = setTimeout(() => void this.refresh(), 60);
  }

  /** Reads every view again, in parallel, and redraws them. */
  async refresh(): Promise<void> {
    const sprint = this.sprint;
    const product = this.productId;
    try {
      const [backlog, items, burndown, velocity] = await Promise.all([
        loadBacklog(this.api, product),
        sprint ? loadSprint(this.api, product, sprint.id) : Promise.resolve([]),
        sprint ? this.api.reports.getSprintBurndown({ sprintId: sprint.id }) : Promise.resolve(undefined),
        this.api.reports.getVelocity({ productId: product, sprintCount: 6 }),
      ]);
      renderBacklog(byId<HTMLOListElement>("backlog"), backlog, {
        api: this.api,
        announce,
        reload: () => this.refresh(),
      });
      renderSprint(byId("sprint"), items, async (task, hours) => {
        try {
          await this.api.tasks.estimateTaskHoursRemaining({ id: task.id, hoursRemaining: hours });
          announce(`“${task.name}”: ${hours} h remaining.`);
        } catch (error) {
          problem(`Could not estimate “${task.name}”`, error);
        }
      });
      byId("burndown").replaceChildren(
        burndown
          ? burndownChart(
              burndown.days.map((d) => ({ date: d.date, hours: Number(d.hoursRemaining), ideal: d.idealHoursRemaining })),
              burndown.today,
            )
          : document.createTextNode("No sprint to burn down."),
      );
      const done = [...velocity.sprints].reverse();
      byId("velocity").replaceChildren(
        velocityChart(
          done.map((s) => ({ name: s.sprintName, points: s.storyPointsDone })),
          velocity.averageStoryPoints,
        ),
      );
      document.body.dataset.rendered = String(performance.now());
    } catch (error) {
      problem("Could not read the board", error);
    }
  }
}

async function main(): Promise<void> {
  const config: BoardConfig = await (await fetch("config.json")).json();
  const form = byId<HTMLFormElement>("identity");
  const input = byId<HTMLInputElement>("bearer");
  byId("bearer-label").textContent = config.development ? "Tenant" : "Token";
  input.type = config.development ? "text" : "password";
  const start = async (bearer: string) => {
    sessionStorage.setItem(IDENTITY, bearer);
    form.hidden = true;
    byId("who").textContent = config.development ? bearer : "token";
    try {
      await new Board(connect(config, bearer)).open();
    } catch (error) {
      form.hidden = false;
      problem("Could not open the board", error);
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) void start(input.value.trim());
  });
  const saved = sessionStorage.getItem(IDENTITY);
  if (saved) await start(saved);
}

void main();
