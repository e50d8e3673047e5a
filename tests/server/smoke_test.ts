import assert from "node:assert/strict";
import { serve, TestClient } from "../support/helpers.ts";

Deno.test("seed README frames work unchanged", async () => {
  await using server = await serve();
  await using alice = await TestClient.connect(server.wsUrl);
  alice.send({
    message_type: "Enter",
    message_body: { sender_username: "user1" },
    token: "optional_uuid_token",
  });
  assert.deepEqual((await alice.expect("Presence")).members, ["user1"]);
  alice.send({
    message_type: "GroupChat",
    message_body: { sender_username: "user1", content: "your_message" },
    token: "optional_uuid_token",
  });
  const chat = await alice.expect("GroupChat");
  assert.equal(chat.seq, 1);
});
