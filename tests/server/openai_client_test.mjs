// SPDX-License-Identifier: MIT
// kvq serve through the official openai npm client: completions and chat, whole and streamed,
// usage counts, stop strings, seeds, and the errors the client surfaces (no chat template,
// a wrong API key). Usage: node openai_client_test.mjs BASE_URL API_KEY CHAT_BASE_URL
// (BASE_URL serves the TinyStories testbed, which has no chat template; CHAT_BASE_URL a model
// with a Llama-3 template). Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import OpenAI from "openai";

const [baseURL, apiKey, chatURL] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const chatClient = new OpenAI({ baseURL: chatURL, apiKey, maxRetries: 0 });
let checks = 0;
const ok = (what) => { checks++; console.log(`ok ${checks} - ${what}`); };

const models = await client.models.list();
assert.equal(models.data.length, 1);
assert.match(models.data[0].id, /tinystories/);
ok("models.list names the model");

const c = await client.completions.create({ model: "x", prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
assert.equal(c.object, "text_completion");
assert.equal(typeof c.choices[0].text, "string");
assert.ok(c.choices[0].text.length > 0);
assert.ok(["length", "stop"].includes(c.choices[0].finish_reason));
assert.equal(c.usage.prompt_tokens, 5);
assert.ok(c.usage.completion_tokens >= 1 && c.usage.completion_tokens <= 12);
assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
ok("completions.create: text, finish_reason, usage");

// Greedy is deterministic, and a stream carries the same text.
const again = await client.completions.create({ model: "x", prompt: "Once upon a time", max_tokens: 12, temperature: 0 });
assert.equal(again.choices[0].text, c.choices[0].text);
const stream = await client.completions.create({
  model: "x", prompt: "Once upon a time", max_tokens: 12, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
let streamed = "", usage = null, finish = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  if (chunk.choices.length) {
    streamed += chunk.choices[0].text;
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
}
assert.equal(streamed, c.choices[0].text);
assert.ok(chunks > 3);
assert.equal(finish, c.choices[0].finish_reason);
assert.deepEqual(usage, c.usage);
ok("streamed completion equals the whole one; usage chunk");

// Seeded sampling repeats; a stop string cuts the text before it.
const s1 = await client.completions.create({ model: "x", prompt: "The dog", max_tokens: 16, temperature: 1, seed: 7 });
const s2 = await client.completions.create({ model: "x", prompt: "The dog", max_tokens: 16, temperature: 1, seed: 7 });
assert.equal(s1.choices[0].text, s2.choices[0].text);
ok("same seed, same sample");
const full = c.choices[0].text;
const cut = full.indexOf(" ", 2);
assert.ok(cut > 0, `no space to stop at in '${full}'`);
const stopped = await client.completions.create({
  model: "x", prompt: "Once upon a time", max_tokens: 12, temperature: 0, stop: [full.slice(cut, cut + 3)],
});
assert.equal(stopped.choices[0].text, full.slice(0, cut));
assert.equal(stopped.choices[0].finish_reason, "stop");
ok("stop string");

// No chat template on the testbed: a 400 naming it.
await assert.rejects(
  client.chat.completions.create({ model: "x", messages: [{ role: "user", content: "hi" }] }),
  (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.code === "no_chat_template" &&
         /chat template/.test(e.message));
ok("chat without a template: 400 no_chat_template");

const bad = new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 });
await assert.rejects(bad.completions.create({ model: "x", prompt: "hi", max_tokens: 2 }),
  (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
ok("wrong API key: 401");

await assert.rejects(client.completions.create({ model: "x", prompt: "hi", max_tokens: 100000 }),
  (e) => e instanceof OpenAI.BadRequestError && e.code === "context_length_exceeded");
ok("max_tokens beyond the context: 400");

// Chat on a model with a Llama-3 template (random weights: any text will do).
const chat = await chatClient.chat.completions.create({
  model: "x", messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hello!" }],
  max_tokens: 8, temperature: 0,
});
assert.equal(chat.object, "chat.completion");
assert.equal(chat.choices[0].message.role, "assistant");
assert.equal(typeof chat.choices[0].message.content, "string");
// The rendered Llama-3 prompt: header tokens, "\n\n", content, <|eot_id|> per message.
assert.ok(chat.usage.prompt_tokens > 10, `prompt_tokens ${chat.usage.prompt_tokens}`);
ok("chat.completions.create with a Llama-3 template");
const chatStream = await chatClient.chat.completions.create({
  model: "x", messages: [{ role: "user", content: "Hello!" }], max_tokens: 8, temperature: 0, stream: true,
});
let role = null, content = "", chatFinish = null;
for await (const chunk of chatStream) {
  const d = chunk.choices[0]?.delta ?? {};
  if (d.role) role = d.role;
  if (d.content) content += d.content;
  if (chunk.choices[0]?.finish_reason) chatFinish = chunk.choices[0].finish_reason;
}
assert.equal(role, "assistant");
assert.ok(["length", "stop"].includes(chatFinish));
ok("chat stream: role, content deltas, finish_reason");
console.log(`all ${checks} openai-client checks passed`);
