#!/usr/bin/env node
// Check that the published schemas work in a real editor client: start
// yaml-language-server (installed by setup.sh from package-lock.json), speak
// LSP to it over stdio, open a manifest whose modeline names a schema, and
// assert that
//   - the server publishes a diagnostic on the expected line whose message
//     holds the expected text (--invalid), and
//   - hovering a key shows the field's description (--hover-file).
//
// Usage (lines and columns are 1-based, as an editor shows them):
//   node tests/external/lsp_check.mjs \
//     --invalid FILE --expect-line N --expect-message-substring TEXT \
//     --hover-file FILE --hover-line N --hover-col C --expect-hover-substring TEXT \
//     [--timeout SECONDS] [--verbose]
// Either group may be given alone. A file's first line must be a modeline
// `# yaml-language-server: $schema=URL-or-relative-path`; a relative path is
// resolved against the file, so the document is opened with its real URI.
//
// Exit status: 0 all assertions hold, 1 an assertion failed or the server
// misbehaved (timeout, crash), 2 usage error.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const serverBin = join(here, 'node_modules', 'yaml-language-server', 'bin', 'yaml-language-server');
const MODELINE = /^#\s*yaml-language-server:\s*\$schema=(\S+)/m;

// ---------------------------------------------------------------- arguments

function usage(message) {
  process.stderr.write(`lsp: ${message}\n` +
    'usage: lsp_check.mjs [--invalid FILE --expect-line N --expect-message-substring TEXT]\n' +
    '                     [--hover-file FILE --hover-line N --hover-col C --expect-hover-substring TEXT]\n' +
    '                     [--timeout SECONDS] [--verbose]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const known = new Set(['invalid', 'expect-line', 'expect-message-substring', 'hover-file', 'hover-line',
    'hover-col', 'expect-hover-substring', 'timeout']);
  const opts = { timeout: '30', verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--verbose') { opts.verbose = true; continue; }
    if (a === '-h' || a === '--help') usage('help');
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(a);
    if (!m || !known.has(m[1])) usage(`unknown argument ${a}`);
    const value = m[2] ?? argv[++i];
    if (value === undefined) usage(`${a} needs a value`);
    opts[m[1]] = value;
  }
  const int = (name, min) => {
    const v = Number(opts[name]);
    if (!Number.isInteger(v) || v < min) usage(`--${name} must be an integer >= ${min}`);
    return v;
  };
  const checks = {};
  const diagArgs = ['invalid', 'expect-line', 'expect-message-substring'];
  if (diagArgs.some((k) => k in opts)) {
    for (const k of diagArgs) if (!(k in opts)) usage(`--${k} is needed with --invalid`);
    checks.diag = { file: resolve(opts.invalid), line: int('expect-line', 1), text: opts['expect-message-substring'] };
  }
  const hoverArgs = ['hover-file', 'hover-line', 'hover-col', 'expect-hover-substring'];
  if (hoverArgs.some((k) => k in opts)) {
    for (const k of hoverArgs) if (!(k in opts)) usage(`--${k} is needed with --hover-file`);
    checks.hover = {
      file: resolve(opts['hover-file']), line: int('hover-line', 1), col: int('hover-col', 1),
      text: opts['expect-hover-substring'],
    };
  }
  if (!checks.diag && !checks.hover) usage('nothing to check: give --invalid ... and/or --hover-file ...');
  const timeout = Number(opts.timeout);
  if (!(timeout > 0)) usage('--timeout must be a positive number of seconds');
  return { checks, timeoutMs: timeout * 1000, verbose: opts.verbose };
}

const { checks, timeoutMs, verbose } = parseArgs(process.argv.slice(2));

// ------------------------------------------------------------------ failing

let server = null;
const serverLog = []; // window/logMessage and stderr lines, shown on failure

function fail(message) {
  process.stderr.write(`lsp: FAILED: ${message}\n`);
  if (serverLog.length) {
    process.stderr.write('lsp: last server messages:\n' + serverLog.slice(-15).map((l) => `  ${l}\n`).join(''));
  }
  if (server && server.exitCode === null) server.kill('SIGKILL');
  process.exit(1);
}

function log(message) {
  if (verbose) process.stderr.write(`lsp: ${message}\n`);
}

// Nothing may hang CI: a hard bound on the whole run.
const hardStop = setTimeout(() => fail(`no result after ${(timeoutMs * 2) / 1000} s in total`), timeoutMs * 2);
hardStop.unref();

// ---------------------------------------------------------------- documents

const documents = new Map(); // path -> { uri, text }

function document(file) {
  if (!documents.has(file)) {
    if (!existsSync(file)) usage(`${file} does not exist`);
    const text = readFileSync(file, 'utf8');
    const m = MODELINE.exec(text);
    if (!m) fail(`${file} has no \`# yaml-language-server: $schema=...\` modeline, so no schema would apply`);
    documents.set(file, { uri: pathToFileURL(file).href, text, schema: m[1] });
  }
  return documents.get(file);
}

// Read documents (and fail on a missing modeline) before starting anything.
if (checks.diag) document(checks.diag.file);
if (checks.hover) document(checks.hover.file);

// ---------------------------------------------------- JSON-RPC over stdio

if (!existsSync(serverBin)) fail(`${serverBin} is missing: run tests/external/setup.sh first`);
server = spawn(process.execPath, [serverBin, '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'] });
server.on('error', (e) => fail(`cannot start yaml-language-server: ${e.message}`));
let shuttingDown = false;
server.on('exit', (code, signal) => {
  if (!shuttingDown) fail(`yaml-language-server exited early (code ${code}, signal ${signal})`);
});
server.stderr.setEncoding('utf8');
server.stderr.on('data', (d) => serverLog.push(...d.trimEnd().split('\n').map((l) => `[stderr] ${l}`)));
server.stdin.on('error', (e) => { if (!shuttingDown) fail(`writing to the server: ${e.message}`); });

function send(message) {
  const body = Buffer.from(JSON.stringify({ jsonrpc: '2.0', ...message }), 'utf8');
  server.stdin.write(`Content-Length: ${body.length}\r\n\r\n`);
  server.stdin.write(body);
}

let nextId = 1;
const pending = new Map(); // id -> { resolve, reject, method }

function request(method, params, ms = timeoutMs) {
  const id = nextId++;
  send({ id, method, params });
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`no answer to ${method} within ${ms / 1000} s`));
    }, ms);
    pending.set(id, {
      method,
      resolve: (v) => { clearTimeout(timer); resolvePromise(v); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    });
  });
}

function notify(method, params) {
  send({ method, params });
}

const settings = {
  validate: true,
  hover: true,
  completion: true,
  schemaStore: { enable: false },
  kubernetesCRDStore: { enable: false },
  schemas: {},
  yamlVersion: '1.2',
  format: { enable: false },
};

const diagnostics = new Map(); // uri -> latest published diagnostics
const diagnosticWaiters = new Set();

function onServerRequest(msg) {
  let result = null;
  switch (msg.method) {
    case 'workspace/configuration':
      result = (msg.params?.items ?? []).map(() => settings);
      break;
    case 'client/registerCapability':
    case 'client/unregisterCapability':
    case 'window/workDoneProgress/create':
    case 'workspace/codeLens/refresh':
    case 'workspace/semanticTokens/refresh':
      result = null;
      break;
    default:
      log(`answering unknown server request ${msg.method} with null`);
  }
  send({ id: msg.id, result });
}

function onMessage(msg) {
  if (msg.id !== undefined && msg.method === undefined) {
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    if (msg.error) p.reject(new Error(`${p.method} failed: ${msg.error.message} (${msg.error.code})`));
    else p.resolve(msg.result);
  } else if (msg.id !== undefined) {
    onServerRequest(msg);
  } else if (msg.method === 'textDocument/publishDiagnostics') {
    diagnostics.set(msg.params.uri, msg.params.diagnostics);
    log(`diagnostics for ${msg.params.uri}: ${JSON.stringify(msg.params.diagnostics.map(showDiag))}`);
    for (const w of diagnosticWaiters) w();
  } else if (msg.method === 'window/logMessage' || msg.method === 'window/showMessage') {
    serverLog.push(`[${msg.method}] ${msg.params?.message}`);
    log(`${msg.method}: ${msg.params?.message}`);
  }
}

// Content-Length framing.
let buffer = Buffer.alloc(0);
server.stdout.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  for (;;) {
    const headerEnd = buffer.indexOf('\r\n\r\n');
    if (headerEnd < 0) return;
    const header = buffer.subarray(0, headerEnd).toString('ascii');
    const m = /^content-length:\s*(\d+)\s*$/im.exec(header);
    if (!m) fail(`malformed message header from the server: ${JSON.stringify(header)}`);
    const length = Number(m[1]);
    const start = headerEnd + 4;
    if (buffer.length < start + length) return;
    const body = buffer.subarray(start, start + length).toString('utf8');
    buffer = buffer.subarray(start + length);
    let msg;
    try {
      msg = JSON.parse(body);
    } catch (e) {
      fail(`server sent invalid JSON: ${e.message}`);
    }
    onMessage(msg);
  }
});

// ------------------------------------------------------------------ helpers

function showDiag(d) {
  return `line ${d.range.start.line + 1}:${d.range.start.character + 1} ${d.message}`;
}

// Resolves with the diagnostics of `uri` once they satisfy `accept`; when
// diagnostics arrive that do not (none at all included), waits `settleMs`
// more for a later publish before rejecting, so a wrong answer fails in
// seconds, not at the timeout.
function waitForDiagnostics(uri, accept, settleMs = 3000) {
  return new Promise((resolvePromise, reject) => {
    let settleTimer = null;
    const finish = (f) => {
      clearTimeout(overall);
      clearTimeout(settleTimer);
      diagnosticWaiters.delete(check);
      f();
    };
    const check = () => {
      const list = diagnostics.get(uri);
      if (list === undefined) return;
      if (accept(list)) return finish(() => resolvePromise(list));
      if (settleTimer === null) {
        settleTimer = setTimeout(() => finish(() => reject(new Error('unexpected'))), settleMs);
      }
    };
    const overall = setTimeout(() => finish(() => reject(new Error('timeout'))), timeoutMs);
    diagnosticWaiters.add(check);
    check();
  });
}

// yaml-language-server shows a schema `description` as Markdown with the
// Markdown characters escaped (`family` becomes \`family\`); compare the
// expected text with that escaping undone too.
function unescapeMarkdown(text) {
  return text.replace(/\\([\\`*_{}[\]()#+\-.!|<>~])/g, '$1');
}

function hoverText(contents) {
  if (contents == null) return '';
  if (typeof contents === 'string') return contents;
  if (Array.isArray(contents)) return contents.map(hoverText).join('\n');
  return contents.value ?? '';
}

function hoverMatches(shown, text) {
  return shown.includes(text) || unescapeMarkdown(shown).includes(text);
}

const opened = new Set();
function open(file) {
  const doc = document(file);
  if (opened.has(file)) return doc;
  opened.add(file);
  notify('textDocument/didOpen', { textDocument: { uri: doc.uri, languageId: 'yaml', version: 1, text: doc.text } });
  return doc;
}

// --------------------------------------------------------------------- run

async function main() {
  const rootUri = pathToFileURL(resolve(here, '..', '..')).href;
  await request('initialize', {
    processId: process.pid,
    clientInfo: { name: 'reconcile-lsp-check' },
    rootUri,
    workspaceFolders: [{ uri: rootUri, name: 'reconcile' }],
    capabilities: {
      workspace: { configuration: true, didChangeConfiguration: { dynamicRegistration: true }, workspaceFolders: true },
      textDocument: {
        synchronization: { dynamicRegistration: false },
        hover: { dynamicRegistration: false, contentFormat: ['markdown', 'plaintext'] },
        publishDiagnostics: { relatedInformation: true, versionSupport: false },
        completion: { completionItem: { snippetSupport: false } },
      },
      window: { workDoneProgress: true },
    },
  });
  notify('initialized', {});
  notify('workspace/didChangeConfiguration', { settings: { yaml: settings } });

  const results = [];

  if (checks.diag) {
    const { file, line, text } = checks.diag;
    const doc = open(file);
    const matches = (d) => d.range.start.line + 1 === line && d.message.includes(text);
    let list;
    try {
      list = await waitForDiagnostics(doc.uri, (l) => l.some(matches));
    } catch (e) {
      const got = diagnostics.get(doc.uri);
      fail(`${file}: expected a diagnostic on line ${line} containing ${JSON.stringify(text)} ` +
        `(schema ${doc.schema}); ` +
        (got === undefined
          ? `no diagnostics were published within ${timeoutMs / 1000} s`
          : got.length === 0
            ? 'the server published no diagnostics (the document was judged valid)'
            : `got: ${got.map(showDiag).join(' | ')}`));
    }
    const hit = list.find(matches);
    results.push(`diagnostic at line ${line} "${hit.message}" ok`);
  }

  if (checks.hover) {
    const { file, line, col, text } = checks.hover;
    const doc = open(file);
    const position = { line: line - 1, character: col - 1 };
    // The first hover of a document may come before its schema is loaded;
    // ask again until the deadline.
    const deadline = Date.now() + timeoutMs;
    let shown = '';
    for (;;) {
      let result;
      try {
        result = await request('textDocument/hover', { textDocument: { uri: doc.uri }, position },
          Math.max(1000, deadline - Date.now()));
      } catch (e) {
        fail(`${file}: hover at ${line}:${col}: ${e.message}`);
      }
      shown = hoverText(result?.contents);
      log(`hover at ${line}:${col}: ${JSON.stringify(shown)}`);
      if (hoverMatches(shown, text) || Date.now() >= deadline) break;
      if (shown) break; // an answer, just not the expected one
      await new Promise((r) => setTimeout(r, 250));
    }
    if (!hoverMatches(shown, text)) {
      const lineText = doc.text.split('\n')[line - 1] ?? '';
      fail(`${file}: hover at ${line}:${col} (on ${JSON.stringify(lineText.trim())}, schema ${doc.schema}) ` +
        `should contain ${JSON.stringify(text)}; ` +
        (shown ? `got ${JSON.stringify(shown.slice(0, 400))}` : 'got no hover'));
    }
    results.push(`hover at ${line}:${col} ok`);
  }

  shuttingDown = true;
  try {
    await request('shutdown', null, 5000);
    notify('exit', null);
  } catch (e) {
    log(`shutdown: ${e.message}`);
  }
  const exited = await new Promise((r) => {
    if (server.exitCode !== null) return r(true);
    const t = setTimeout(() => r(false), 3000);
    server.once('exit', () => { clearTimeout(t); r(true); });
  });
  if (!exited) server.kill('SIGKILL');
  process.stdout.write(`lsp: ${results.join('; ')}\n`);
  process.exit(0);
}

main().catch((e) => fail(verbose ? e.stack || String(e) : e.message || String(e)));
