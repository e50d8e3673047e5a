/**
 * A small TCP proxy for fault injection: a node talks to Redis through it,
 * and a test (or the chaos nemesis) can hold up the link: stop forwarding
 * one way or both, for every connection or only for connections whose
 * first bytes name them (a node's `CLIENT SETNAME subscriber`), and let the
 * held bytes go later, in order. It can also cut every connection.
 *
 * It does not parse the Redis protocol, and it never drops or reorders
 * bytes while a connection lives.
 *
 * @module
 */

/** Which connections and which direction a hold applies to. */
export interface HoldSpec {
  /** Only connections whose client-to-server bytes contain this so far. */
  name?: string;
  /** `toClient`: replies and pub/sub messages; `toServer`: commands; `both`. */
  direction?: "toClient" | "toServer" | "both";
}

interface Link {
  client: Deno.TcpConn;
  server: Deno.TcpConn;
  /** The client's first bytes, as text, to match `HoldSpec.name`. */
  hello: string;
  done: Promise<void>;
}

/** A running proxy from a free port on 127.0.0.1 to `target`. */
export class FaultProxy implements AsyncDisposable {
  readonly port: number;
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string;
  #listener: Deno.TcpListener;
  #target: number;
  #links = new Set<Link>();
  #holds: HoldSpec[] = [];
  #released = Promise.withResolvers<void>();
  #accepting: Promise<void>;
  #closed = false;

  private constructor(listener: Deno.TcpListener, target: number) {
    this.#listener = listener;
    this.#target = target;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.url = `redis://127.0.0.1:${this.port}`;
    this.#accepting = this.#accept();
  }

  /** Starts a proxy to 127.0.0.1:`targetPort`. */
  static start(targetPort: number): FaultProxy {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new FaultProxy(listener, targetPort);
  }

  /** Holds the matching traffic until {@linkcode FaultProxy.release}. */
  hold(spec: HoldSpec = {}): void {
    this.#holds.push(spec);
  }

  /** Lets the held bytes go, in order: all, or those held for `name`. */
  release(name?: string): void {
    this.#holds = name === undefined
      ? []
      : this.#holds.filter((spec) => spec.name !== name);
    this.#released.resolve();
    this.#released = Promise.withResolvers<void>();
  }

  /** Whether anything is held. */
  get holding(): boolean {
    return this.#holds.length > 0;
  }

  /** Closes every open connection (the clients see the link drop). */
  cut(): void {
    for (const link of this.#links) {
      closeQuietly(link.client);
      closeQuietly(link.server);
    }
  }

  #held(link: Link, toClient: boolean): boolean {
    return this.#holds.some((spec) =>
      (spec.name === undefined || link.hello.includes(spec.name)) &&
      (spec.direction ?? "both") !==
        (toClient ? "toServer" : "toClient")
    );
  }

  async #accept(): Promise<void> {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      let server: Deno.TcpConn;
      try {
        server = await Deno.connect({
          hostname: "127.0.0.1",
          port: this.#target,
        });
      } catch {
        closeQuietly(client);
        continue;
      }
      const link: Link = { client, server, hello: "", done: Promise.resolve() };
      link.done = Promise.all([
        this.#pump(link, false),
        this.#pump(link, true),
      ]).then(() => {
        this.#links.delete(link);
      });
      this.#links.add(link);
    }
  }

  async #pump(link: Link, toClient: boolean): Promise<void> {
    const from = toClient ? link.server : link.client;
    const to = toClient ? link.client : link.server;
    const buffer = new Uint8Array(64 * 1024);
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        const chunk = buffer.slice(0, n);
        if (!toClient && link.hello.length < 256) {
          link.hello += decoder.decode(chunk);
        }
        while (this.#held(link, toClient) && !this.#closed) {
          await this.#released.promise;
        }
        let written = 0;
        while (written < chunk.length) {
          written += await to.write(chunk.subarray(written));
        }
      }
    } catch {
      // The other side went away.
    } finally {
      closeQuietly(link.client);
      closeQuietly(link.server);
    }
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.release();
    closeQuietly(this.#listener);
    this.cut();
    await this.#accepting;
    await Promise.all([...this.#links].map((link) => link.done));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}
