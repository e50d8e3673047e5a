/**
 * The transport's pure rules, one case table each: the client's address
 * behind trusted proxies (`clientAddress`) and which origins may open a
 * socket (`originAllowed`). The servers in `tests/server/` check them end
 * to end; these tables pin the edge cases.
 *
 * @module
 */
import assert from "node:assert/strict";
import { clientAddress } from "../../src/http/client_address.ts";
import { originAllowed } from "../../src/http/origins.ts";

interface AddressCase {
  name: string;
  peer: string;
  forwardedFor: string | null;
  trusted: string[];
  expected: string;
}

const ADDRESS_CASES: readonly AddressCase[] = [
  {
    name: "an untrusted peer is the client, whatever it forwards",
    peer: "10.0.0.9",
    forwardedFor: "1.2.3.4",
    trusted: ["127.0.0.1"],
    expected: "10.0.0.9",
  },
  {
    name: "a mapped IPv4 peer is its IPv4 address",
    peer: "::FFFF:10.0.0.9",
    forwardedFor: null,
    trusted: [],
    expected: "10.0.0.9",
  },
  {
    name: "a trusted peer without the header is the client",
    peer: "127.0.0.1",
    forwardedFor: null,
    trusted: ["127.0.0.1"],
    expected: "127.0.0.1",
  },
  {
    name: "behind a trusted proxy: the last hop it saw",
    peer: "127.0.0.1",
    forwardedFor: "6.6.6.6, 1.2.3.4",
    trusted: ["127.0.0.1"],
    expected: "1.2.3.4",
  },
  {
    name: "trusted hops are skipped from the right",
    peer: "127.0.0.1",
    forwardedFor: "6.6.6.6, 1.2.3.4, ::ffff:10.0.0.2",
    trusted: ["127.0.0.1", "10.0.0.2"],
    expected: "1.2.3.4",
  },
  {
    name: "every hop trusted: the first",
    peer: "127.0.0.1",
    forwardedFor: "10.0.0.3, 10.0.0.2",
    trusted: ["127.0.0.1", "10.0.0.2", "10.0.0.3"],
    expected: "10.0.0.3",
  },
  {
    name: "an empty header: the peer",
    peer: "127.0.0.1",
    forwardedFor: " , ",
    trusted: ["127.0.0.1"],
    expected: "127.0.0.1",
  },
];

for (const c of ADDRESS_CASES) {
  Deno.test(`clientAddress: ${c.name}`, () => {
    assert.equal(
      clientAddress(c.peer, c.forwardedFor, new Set(c.trusted)),
      c.expected,
    );
  });
}

interface OriginCase {
  name: string;
  origin: string | null;
  host: string | null;
  allowed: string[];
  expected: boolean;
}

const ORIGIN_CASES: readonly OriginCase[] = [
  {
    name: "no Origin (not a browser) is allowed",
    origin: null,
    host: "chat.example",
    allowed: ["self"],
    expected: true,
  },
  {
    name: "* allows any origin",
    origin: "https://evil.example",
    host: "chat.example",
    allowed: ["*"],
    expected: true,
  },
  {
    name: "an origin listed exactly",
    origin: "https://app.example",
    host: "chat.example",
    allowed: ["https://app.example"],
    expected: true,
  },
  {
    name: "self: the page of the host it was reached at",
    origin: "http://localhost:8080",
    host: "localhost:8080",
    allowed: ["self"],
    expected: true,
  },
  {
    name: "self: another port is another origin",
    origin: "http://localhost:9090",
    host: "localhost:8080",
    allowed: ["self"],
    expected: false,
  },
  {
    name: "self without a Host",
    origin: "http://localhost:8080",
    host: null,
    allowed: ["self"],
    expected: false,
  },
  {
    name: "a malformed origin",
    origin: "not a url",
    host: "localhost:8080",
    allowed: ["self"],
    expected: false,
  },
  {
    name: "an origin not listed",
    origin: "https://evil.example",
    host: "chat.example",
    allowed: ["https://app.example"],
    expected: false,
  },
];

for (const c of ORIGIN_CASES) {
  Deno.test(`originAllowed: ${c.name}`, () => {
    assert.equal(originAllowed(c.origin, c.host, c.allowed), c.expected);
  });
}
