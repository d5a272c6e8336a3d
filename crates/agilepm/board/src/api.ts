// The board's view of agilepm: one gRPC-Web transport per service, every call carrying
// the identity the person gave (a tenant name in development mode, a pasted token
// otherwise). Clients are generated from proto/ (protobuf-es); nothing here declares a
// message type by hand.

import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { BacklogItemService } from "./gen/agilepm/backlog/v1/backlog_item_pb";
import { EventFeedService } from "./gen/agilepm/events/v1/feed_pb";
import { ProductService } from "./gen/agilepm/planning/v1/product_pb";
import { ReportService } from "./gen/agilepm/planning/v1/reports_pb";
import { SprintService } from "./gen/agilepm/planning/v1/sprint_pb";
import { TaskService } from "./gen/agilepm/task/v1/task_pb";

/** Where the services answer, as `agilepm dev` serves it in `/config.json`. */
export interface BoardConfig {
  endpoints: { backlogItem: string; task: string; planning: string };
  /** Whether the services run open (a tenant name is enough). */
  development: boolean;
}

/** Every client the board calls, for one identity. */
export interface Api {
  items: Client<typeof BacklogItemService>;
  itemFeed: Client<typeof EventFeedService>;
  tasks: Client<typeof TaskService>;
  taskFeed: Client<typeof EventFeedService>;
  products: Client<typeof ProductService>;
  sprints: Client<typeof SprintService>;
  reports: Client<typeof ReportService>;
}

/** Clients of `config`'s services carrying `bearer` (a tenant name or a token). */
export function connect(config: BoardConfig, bearer: string): Api {
  const identify: Interceptor = (next) => async (request) => {
    request.header.set("authorization", `Bearer ${bearer}`);
    return next(request);
  };
  const client = <S extends DescService>(service: S, baseUrl: string): Client<S> =>
    createClient(service, createGrpcWebTransport({ baseUrl, interceptors: [identify] }));
  const { backlogItem, task, planning } = config.endpoints;
  return {
    items: client(BacklogItemService, backlogItem),
    itemFeed: client(EventFeedService, backlogItem),
    tasks: client(TaskService, task),
    taskFeed: client(EventFeedService, task),
    products: client(ProductService, planning),
    sprints: client(SprintService, planning),
    reports: client(ReportService, planning),
  };
}
