// The product backlog in rank order. An item moves by dragging it onto another (it lands
// before that one) or from the keyboard (Alt+Up / Alt+Down, or its buttons), through
// MoveBacklogItem with the version the page showed: if someone changed the item
// meanwhile, the move is refused, the fresh order is shown, and the page says so.

import { Code, ConnectError } from "@connectrpc/connect";
import type { Api } from "./api";
import { BacklogItemStatus, type BacklogItem } from "./gen/agilepm/backlog/v1/backlog_item_pb";

/** Statuses the product backlog shows: what is not finished or removed. */
const OPEN = [BacklogItemStatus.PLANNED, BacklogItemStatus.SCHEDULED, BacklogItemStatus.COMMITTED];

/** The open items of `productId`, in backlog order. */
export async function loadBacklog(api: Api, productId: string): Promise<BacklogItem[]> {
  const response = await api.items.listBacklogItems({
    productId,
    statuses: OPEN,
    orderBy: "rank",
    pageSize: 500,
  });
  return response.backlogItems;
}

/** What a move needs from the page around it. */
export interface MoveContext {
  api: Api;
  /** Says something to the person (a polite live region). */
  announce(message: string): void;
  /** Reads the backlog again and redraws it. */
  reload(): Promise<void>;
}

async function move(context: MoveContext, item: BacklogItem, beforeId: string | undefined, afterId?: string) {
  const anchor = beforeId
    ? { case: "beforeId" as const, value: beforeId }
    : { case: "afterId" as const, value: afterId ?? "" };
  try {
    await context.api.items.moveBacklogItem({ id: item.id, anchor, expectedVersion: item.version });
    context.announce(`Moved “${item.summary}”.`);
  } catch (error) {
    const refusal = ConnectError.from(error);
    context.announce(
      refusal.code === Code.Aborted
        ? `“${item.summary}” changed meanwhile: this is the fresh order. Move it again if you still want to.`
        : `Could not move “${item.summary}”: ${refusal.rawMessage}`,
    );
  }
  await context.reload();
}

function button(label: string, text: string, action: () => void): HTMLButtonElement {
  const node = document.createElement("button");
  node.type = "button";
  node.textContent = text;
  node.setAttribute("aria-label", label);
  node.addEventListener("click", action);
  return node;
}

/** Draws `items` into `list`, each movable. */
export function renderBacklog(list: HTMLOListElement, items: BacklogItem[], context: MoveContext): void {
  list.replaceChildren(
    ...items.map((item, index) => {
      const row = document.createElement("li");
      row.draggable = true;
      row.tabIndex = 0;
      row.dataset.id = item.id;
      row.setAttribute("aria-label", `${index + 1}. ${item.summary}, ${BacklogItemStatus[item.status]}`);
      const summary = document.createElement("span");
      summary.className = "summary";
      summary.textContent = item.summary;
      const status = document.createElement("span");
      status.className = `badge ${BacklogItemStatus[item.status].toLowerCase()}`;
      status.textContent = BacklogItemStatus[item.status].toLowerCase();
      const up = items[index - 1];
      const down = items[index + 1];
      const top = items[0];
      const moveUp = () => up && move(context, item, up.id);
      const moveDown = () => down && move(context, item, undefined, down.id);
      const controls = document.createElement("span");
      controls.className = "controls";
      controls.append(
        button(`Move “${item.summary}” to the top`, "⤒", () => top && top.id !== item.id && move(context, item, top.id)),
        button(`Move “${item.summary}” up`, "↑", moveUp),
        button(`Move “${item.summary}” down`, "↓", moveDown),
      );
      row.append(summary, status, controls);
      row.addEventListener("keydown", (event) => {
        if (!event.altKey) return;
        if (event.key === "ArrowUp") moveUp();
        if (event.key === "ArrowDown") moveDown();
      });
      row.addEventListener("dragstart", (event) => {
        event.dataTransfer?.setData("text/plain", item.id);
        row.classList.add("dragging");
      });
      row.addEventListener("dragend", () => row.classList.remove("dragging"));
      row.addEventListener("dragover", (event) => event.preventDefault());
      row.addEventListener("drop", (event) => {
        event.preventDefault();
        const dragged = items.find((i) => i.id === event.dataTransfer?.getData("text/plain"));
        if (dragged && dragged.id !== item.id) void move(context, dragged, item.id);
      });
      return row;
    }),
  );
}
