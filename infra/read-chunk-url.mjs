#!/usr/bin/env node
// read-chunk-url.mjs — a browser-style reader of one result chunk URL, with no project code:
// fetch(url) as a browser does (it undoes `Content-Encoding: gzip` itself), the text to stdout.
//
// Usage: node infra/read-chunk-url.mjs '<url from GET /api/trace/job/{id}/chunks>'
// Exit 1 when the URL does not answer 2xx (the status and body go to stderr).
const url = process.argv[2];
if (!url) {
  console.error("usage: node infra/read-chunk-url.mjs <chunk url>");
  process.exit(2);
}
const response = await fetch(url);
const text = await response.text();
if (!response.ok) {
  console.error(`HTTP ${response.status}: ${text.slice(0, 300)}`);
  process.exit(1);
}
process.stdout.write(text);
