// The sprint's items by status, each with its tasks, volunteers and hours; a task's
// hours are estimated in place (EstimateTaskHoursRemaining for the team's today).

import type { Api } from "./api";
import { BacklogItemStatus, type BacklogItem } from "./gen/agilepm/backlog/v1/backlog_item_pb";
import type { Task } from "./gen/agilepm/task/v1/task_pb";

/** An item of the sprint with its tasks. */
export interface SprintItem {
  item: BacklogItem;
  tasks: Task[];
}

/** The items committed to `sprintId` (in the sprint's order) with their tasks. */
export async function loadSprint(api: Api, productId: string, sprintId: string): Promise<SprintItem[]> {
  const items = await api.items.listBacklogItems({
    productId,
    sprintId,
    orderBy: "sprint_rank",
    pageSize: 500,
  });
  return Promise.all(
    items.backlogItems.map(async (item) => ({
      item,
      tasks: (await api.tasks.listTasks({ backlogItemId: item.id, pageSize: 1000 })).tasks,
    })),
  );
}

/** The columns, left to right, and the statuses each holds. */
const COLUMNS: [string, BacklogItemStatus[]][] = [
  ["Committed", [BacklogItemStatus.COMMITTED, BacklogItemStatus.SCHEDULED, BacklogItemStatus.PLANNED]],
  ["Done", [BacklogItemStatus.DONE]],
];

/** Draws the sprint's items into `board`; `estimate` records a task's new hours. */
export function renderSprint(
  board: HTMLElement,
  items: SprintItem[],
  estimate: (task: Task, hours: number) => Promise<void>,
): void {
  // A redraw must not take the caret from someone typing an estimate.
  const focused = (document.activeElement as HTMLElement | null)?.dataset?.taskId;
  board.replaceChildren(
    ...COLUMNS.map(([title, statuses]) => {
      const column = document.createElement("section");
      column.className = "column";
      column.setAttribute("aria-label", title);
      const heading = document.createElement("h3");
      const members = items.filter((i) => statuses.includes(i.item.status));
      heading.textContent = `${title} (${members.length})`;
      column.append(heading, ...members.map((member) => card(member, estimate)));
      return column;
    }),
  );
  if (focused) board.querySelector<HTMLInputElement>(`input[data-task-id="${focused}"]`)?.focus();
}

function card({ item, tasks }: SprintItem, estimate: (task: Task, hours: number) => Promise<void>): HTMLElement {
  const node = document.createElement("article");
  node.className = "card";
  node.dataset.itemId = item.id;
  node.dataset.status = BacklogItemStatus[item.status];
  const title = document.createElement("h4");
  title.textContent = item.summary;
  const meta = document.createElement("p");
  meta.className = "meta";
  const waiting = item.awaitingAcceptance ? " · awaiting acceptance" : "";
  meta.textContent = `${BacklogItemStatus[item.status].toLowerCase()} · ${item.taskHoursRemaining} h left${waiting}`;
  const list = document.createElement("ul");
  for (const task of tasks) {
    const row = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = task.name;
    const who = document.createElement("span");
    who.className = "volunteer";
    who.textContent = task.volunteerId || "nobody yet";
    const hours = document.createElement("input");
    hours.type = "number";
    hours.min = "0";
    hours.max = "1000";
    hours.value = String(task.hoursRemaining);
    hours.dataset.taskId = task.id;
    hours.setAttribute("aria-label", `Hours remaining for “${task.name}”`);
    hours.addEventListener("change", () => {
      const value = Number(hours.value);
      if (Number.isInteger(value) && value >= 0 && value <= 1000) void estimate(task, value);
    });
    row.append(name, who, hours);
    list.append(row);
  }
  node.append(title, meta, list);
  return node;
}
