// Drive the official TypeScript MCP SDK client (@modelcontextprotocol/sdk, pinned in package.json)
// from a JSON scenario, for the end-to-end tests in tests/e2e.
//
// Usage: node client.mjs '<scenario json>'   or   echo '<scenario json>' | node client.mjs
//
// Scenario:
//   {
//     "url": "http://127.0.0.1:8080/mcp",
//     "token": "secret",                  // sent as "Authorization: Bearer <token>" (optional)
//     "client_name": "claude-ai",          // clientInfo.name of every initialize
//     "headers": {"X-Extra": "v"},         // optional extra request headers
//     "answers": {"confirm": true},        // optional: answer elicitation (accept, content {confirm})
//                                          // and sampling ("summary-of-<text>"), as Claude Code does
//     "steps": [
//       {"reconnect": true},                // close the current client, open a fresh transport+Client
//       {"call": "list_projects", "args": {}}
//     ]
//   }
// A call step with no open client opens one first (a fresh initialize).
//
// Output: one JSON line per step on stdout:
//   {"step": 0, "reconnect": true, "session_id": "..."}
//   {"step": 1, "call": "list_projects", "isError": false, "texts": ["..."], "session_id": "..."}
//   {"step": 2, "call": "...", "error": "message", "code": <number|null>}
// Exit status: 0 when every step produced a line (tool errors included), 2 on a bad scenario.

import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js';

function readScenario() {
  const raw = process.argv[2] ?? readFileSync(0, 'utf8');
  try {
    return JSON.parse(raw);
  } catch (err) {
    process.stderr.write(`client.mjs: scenario is not valid JSON: ${err.message}\n`);
    process.exit(2);
  }
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function connect(scenario) {
  const headers = { ...(scenario.headers ?? {}) };
  if (scenario.token) headers.Authorization = `Bearer ${scenario.token}`;
  const transport = new StreamableHTTPClientTransport(new URL(scenario.url), {
    requestInit: { headers },
  });
  const answers = scenario.answers;
  const options = answers ? { capabilities: { elicitation: {}, sampling: {} } } : {};
  const client = new Client({ name: scenario.client_name ?? 'ts-e2e', version: '1.0' }, options);
  if (answers) {
    client.setRequestHandler(ElicitRequestSchema, async () => ({
      action: 'accept',
      content: { confirm: answers.confirm ?? true },
    }));
    client.setRequestHandler(CreateMessageRequestSchema, async (request) => ({
      role: 'assistant',
      content: { type: 'text', text: `summary-of-${request.params.messages[0].content.text}` },
      model: 'test-model',
    }));
  }
  await client.connect(transport);
  return { client, transport };
}

async function close(conn) {
  if (!conn) return;
  try {
    await conn.client.close();
  } catch (err) {
    process.stderr.write(`client.mjs: close failed: ${err.message}\n`);
  }
}

async function main() {
  const scenario = readScenario();
  if (!scenario.url || !Array.isArray(scenario.steps)) {
    process.stderr.write('client.mjs: scenario needs "url" and a "steps" list\n');
    process.exit(2);
  }
  let conn = null;
  for (const [i, step] of scenario.steps.entries()) {
    try {
      if (step.reconnect) {
        await close(conn);
        conn = null;
        conn = await connect(scenario);
        emit({ step: i, reconnect: true, session_id: conn.transport.sessionId ?? null });
      } else if (step.call) {
        if (!conn) conn = await connect(scenario);
        const result = await conn.client.callTool({ name: step.call, arguments: step.args ?? {} });
        const texts = (result.content ?? []).filter((c) => c.type === 'text').map((c) => c.text);
        emit({
          step: i,
          call: step.call,
          isError: result.isError === true,
          texts,
          session_id: conn.transport.sessionId ?? null,
        });
      } else {
        process.stderr.write(`client.mjs: step ${i} is neither reconnect nor call\n`);
        process.exit(2);
      }
    } catch (err) {
      emit({
        step: i,
        call: step.call ?? null,
        reconnect: step.reconnect === true ? true : undefined,
        error: String(err?.message ?? err),
        code: typeof err?.code === 'number' ? err.code : null,
      });
      // A failed connect leaves no usable client; the next call step opens a fresh one.
      if (step.reconnect) conn = null;
    }
  }
  await close(conn);
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`client.mjs: ${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
