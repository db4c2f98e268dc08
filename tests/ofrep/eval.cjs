// Evaluates flags through the real OpenFeature JavaScript server SDK and its
// stock OFREP provider (tests/tests/ofrep.rs runs it against a real agent,
// with NODE_PATH at the project-local node_modules).
//
// stdin:  {"base_url": URL, "evaluations": [{"type": "boolean"|"object",
//          "key": KEY, "default": VALUE, "context": {...}}]}
// stdout: one JSON list, per evaluation: value, variant, reason, error_code,
//          metadata, as the SDK's evaluation details report them.
'use strict';

const fs = require('fs');
const { OpenFeature } = require('@openfeature/server-sdk');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

async function main() {
  const request = JSON.parse(fs.readFileSync(0, 'utf8'));
  await OpenFeature.setProviderAndWait(new OFREPProvider({ baseUrl: request.base_url }));
  const client = OpenFeature.getClient();
  const out = [];
  for (const e of request.evaluations) {
    const context = e.context || {};
    const d =
      e.type === 'boolean'
        ? await client.getBooleanDetails(e.key, e.default, context)
        : await client.getObjectDetails(e.key, e.default, context);
    out.push({
      value: d.value,
      variant: d.variant ?? null,
      reason: d.reason ?? null,
      error_code: d.errorCode ?? null,
      metadata: d.flagMetadata ?? {},
    });
  }
  process.stdout.write(JSON.stringify(out));
  await OpenFeature.close();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
