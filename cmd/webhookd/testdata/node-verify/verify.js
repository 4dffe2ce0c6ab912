// Verifies webhookd deliveries with the official Standard Webhooks library,
// so the Go tests prove interoperability rather than agreement with
// themselves. Usage: node verify.js cases.json, where cases.json is
// [{secret, headers: {webhook-id, webhook-timestamp, webhook-signature}, body}].
// Prints one JSON line per case; exits 0 only if every case verifies.
"use strict";
const fs = require("fs");
const { Webhook } = require("standardwebhooks");

const cases = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
if (!Array.isArray(cases) || cases.length === 0) {
  // An empty list would "verify" vacuously.
  console.error("verify.js: want a non-empty JSON array of cases");
  process.exit(2);
}
let failed = 0;
cases.forEach((c, i) => {
  try {
    new Webhook(c.secret).verify(c.body, c.headers);
    console.log(JSON.stringify({ case: i, ok: true }));
  } catch (err) {
    failed++;
    console.log(JSON.stringify({ case: i, ok: false, error: String(err && err.message || err) }));
  }
});
process.exit(failed === 0 ? 0 : 1);
