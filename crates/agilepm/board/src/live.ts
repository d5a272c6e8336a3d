// Following an event feed over gRPC-Web: from the feed's head when the page opens, then
// from the last position seen after a dropped connection, with a growing pause between
// attempts. The services scope every feed to the caller's tenant: the page never sees
// another tenant's events.

import type { Client } from "@connectrpc/connect";
import type { EventFeedService } from "./gen/agilepm/events/v1/feed_pb";

/** What a follower tells the page. */
export interface FeedListener {
  /** An event arrived (its type, e.g. `agilepm.task.v1.TaskHoursRemainingEstimated`). */
  onEvent(eventType: string): void;
  /** The connection is up (true) or being re-established (false). */
  onLive(live: boolean): void;
}

/** Follows `feed` until `signal` aborts. */
export async function follow(
  feed: Client<typeof EventFeedService>,
  listener: FeedListener,
  signal: AbortSignal,
): Promise<void> {
  // Unknown until the head is read: an empty feed's head is "", its beginning.
  let position: string | undefined;
  let pause = 250;
  while (!signal.aborted) {
    try {
      position ??= (await feed.getFeedHead({}, { signal })).headPosition;
      const stream = feed.subscribe(
        { afterPosition: position, heartbeatIntervalMs: 10_000 },
        { signal },
      );
      for await (const message of stream) {
        listener.onLive(true);
        pause = 250;
        if (message.kind.case === "event") {
          position = message.kind.value.position;
          listener.onEvent(message.kind.value.eventType);
        }
      }
    } catch {
      // The server ended the stream (a restart, the drain at shutdown) or the network
      // dropped it: resume from the last position.
    }
    if (signal.aborted) return;
    listener.onLive(false);
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 5_000);
  }
}
