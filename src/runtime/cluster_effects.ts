/**
 * {@linkcode applyClusterEffect}: carries out the reducer's cluster effects
 * (`join`, `part`, `claim`, `release`, `fill_gap`, `typing`,
 * `presence_batch`, `members_page`) on the {@linkcode ClusterPort}, and
 * feeds each answer back as an event (`null` when the call failed, which is
 * logged). It holds no state and decides no chat rule.
 *
 * @module
 */
import type { ClusterPort } from "../chat/cluster_port.ts";
import type { Effect, Event } from "../chat/reducer.ts";

/** The reducer's effects that go to the cluster. */
export type ClusterEffect = Extract<
  Effect,
  {
    type:
      | "join"
      | "part"
      | "claim"
      | "release"
      | "fill_gap"
      | "typing"
      | "presence_batch"
      | "members_page";
  }
>;

/** What {@linkcode applyClusterEffect} hands answers and failures to. */
export interface ClusterEffectContext {
  /** Feeds an event to the reducer. */
  dispatch: (event: Event) => void;
  now: () => number;
  /** Logs a failed call; returns `null`, the answer the reducer then gets. */
  failed: (what: string, error: unknown) => null;
}

/** Applies one cluster effect; each answer comes back as an event. */
export function applyClusterEffect(
  effect: ClusterEffect,
  bus: ClusterPort,
  context: ClusterEffectContext,
): void {
  /** Feeds the answer of a call back as an event; `null` when it failed. */
  function answer<T>(
    call: Promise<T>,
    what: string,
    event: (result: T | null, now: number) => Event,
  ): void {
    call.then((result) => result, (error) => context.failed(what, error))
      .then((result) => context.dispatch(event(result, context.now())));
  }

  switch (effect.type) {
    case "join": {
      const { request } = effect;
      answer(bus.join(request), "cluster join", (result, now) => ({
        type: "joined",
        now,
        request,
        result,
      }));
      break;
    }
    case "part": {
      const { room, username, reason, timestamp, empty } = effect;
      answer(
        bus.part(room, username, reason, timestamp, empty),
        "cluster part",
        (result, now) => ({
          type: "parted",
          now,
          room,
          username,
          reason,
          timestamp,
          gone: result?.gone ?? null,
          ...(result ? { result } : {}),
        }),
      );
      break;
    }
    case "claim":
      // A failure is mended by the resync after Redis returns.
      bus.claim(effect.username).catch((error) =>
        context.failed("cluster claim", error)
      );
      break;
    case "release":
      bus.release(effect.username).catch((error) =>
        context.failed("cluster release", error)
      );
      break;
    case "typing":
      // A hint: a lost one expires in the clients by itself.
      bus.typing(effect.notice).catch((error) =>
        context.failed("cluster typing", error)
      );
      break;
    case "presence_batch": {
      const { batch } = effect;
      answer(
        bus.presenceBatch(batch),
        "cluster presence batch",
        (counted, now) => ({
          type: "presence_counted",
          now,
          room: batch.room,
          counted,
        }),
      );
      break;
    }
    case "members_page": {
      const { request } = effect;
      answer(
        bus.members(request.room, request.cursor, request.limit),
        "cluster members read",
        (page, now) => ({ type: "members_loaded", now, request, page }),
      );
      break;
    }
    case "fill_gap": {
      const { room, after, before, bound } = effect;
      answer(
        bus.fillGap(room, after, before),
        "cluster history read",
        (messages, now) => ({
          type: "gap_filled",
          now,
          room,
          messages,
          bound,
        }),
      );
      break;
    }
  }
}
