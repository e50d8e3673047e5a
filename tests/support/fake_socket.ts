/**
 * A socket the runner can own without a network, for tests that drive a
 * `Runner` directly: it records what is sent. It is no WebSocket: nothing
 * is encoded on a wire and nothing arrives unless a test calls its handlers.
 *
 * @module
 */

/** A socket the runner can own without a network: it records what is sent. */
export class FakeSocket {
  readyState: number = WebSocket.OPEN;
  bufferedAmount = 0;
  binaryType = "blob";
  sent: { message_type: string; message_body: Record<string, unknown> }[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((event: { data: string }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: (() => void) | null = null;

  /** Records `data`, parsed. */
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }

  /** Closes once, telling `onclose`. */
  close(code = 1000): void {
    if (this.readyState === WebSocket.CLOSED) return;
    this.readyState = WebSocket.CLOSED;
    this.onclose?.({ code });
  }

  /** The types sent so far. */
  types(): string[] {
    return this.sent.map((sent) => sent.message_type);
  }
}
