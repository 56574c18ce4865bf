// Drive the official TypeScript SDK v2 client (@modelcontextprotocol/client, pinned in package.json)
// from a JSON scenario, for the protocol-era end-to-end tests (tests/e2e/test_protocol_eras.py).
//
// Usage: echo '<scenario json>' | node client-v2.mjs
// Scenario: {"url", "token", "client_name", "mode": "auto" | "legacy", "steps": [{"call": TOOL, "args": {}}],
//            "answers": {"confirm": true}}  (optional: answer elicitation and sampling, as client.mjs does)
// Output: one JSON line per step: {"isError": bool, "texts": [...], "version": "<negotiated>"} or
// {"error": "message"}. Exit status 0 when every step produced a line.

import { readFileSync } from 'node:fs';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const scenario = JSON.parse(process.argv[2] ?? readFileSync(0, 'utf8'));
const headers = { ...(scenario.headers ?? {}) };
if (scenario.token) headers.Authorization = `Bearer ${scenario.token}`;
const transport = new StreamableHTTPClientTransport(new URL(scenario.url), { requestInit: { headers } });
const answers = scenario.answers;
const client = new Client(
  { name: scenario.client_name ?? 'ts-v2-client', version: '1.0.0' },
  {
    versionNegotiation: { mode: scenario.mode ?? 'legacy' },
    ...(answers ? { capabilities: { elicitation: {}, sampling: {} } } : {}),
  },
);
if (answers) {
  client.setRequestHandler('elicitation/create', async () => ({
    action: 'accept',
    content: { confirm: answers.confirm ?? true },
  }));
  client.setRequestHandler('sampling/createMessage', async (request) => ({
    role: 'assistant',
    content: { type: 'text', text: `summary-of-${request.params.messages[0].content.text}` },
    model: 'test-model',
  }));
}
try {
  await client.connect(transport);
  const version = client.getNegotiatedProtocolVersion();
  for (const step of scenario.steps) {
    try {
      const result = await client.callTool({ name: step.call, arguments: step.args ?? {} });
      const texts = (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text);
      process.stdout.write(JSON.stringify({ isError: Boolean(result.isError), texts, version }) + '\n');
    } catch (err) {
      process.stdout.write(JSON.stringify({ error: String(err?.message ?? err), version }) + '\n');
    }
  }
} catch (err) {
  for (const _ of scenario.steps) process.stdout.write(JSON.stringify({ error: `connect: ${err?.message ?? err}` }) + '\n');
} finally {
  await client.close().catch(() => {});
}
