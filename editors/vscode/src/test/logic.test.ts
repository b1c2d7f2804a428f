import { strict as assert } from "node:assert";
import { test } from "node:test";
import { commandTarget, expandHome, needsInstruction, resolveServerPath, serverSettings, shortCount, shouldRefresh, startupError, statusBar } from "../logic";

test("settings reach the server under 'banked', unset keys left out", () => {
  assert.deepEqual(serverSettings({ enabled: true, debounceMs: 40.7, maxLines: null, socket: "" }), {
    banked: { enabled: true, debounceMs: 40 },
  });
  assert.deepEqual(serverSettings({ languages: { markdown: false }, maxLines: 3, socket: "/run/x.sock" }), {
    banked: { languages: { markdown: false }, maxLines: 3, socket: "/run/x.sock" },
  });
  assert.deepEqual(serverSettings({ debounceMs: -1, maxLines: 0, warm: "sometimes" }), { banked: {} });
  assert.deepEqual(serverSettings({ warm: "manual" }), { banked: { warm: "manual" } });
});

test("the status bar shows warming percent, then cached tokens, and failures", () => {
  const base = { state: "connected", enabled: true, engine: "llamacpp", model: "qwen" };
  assert.equal(statusBar({ ...base, cached_tokens: 500, workspace_tokens: 2000, percent: 25 }).text, "$(sync~spin) banked 25%");
  const warm = statusBar({ ...base, cached_tokens: 12_345, workspace_tokens: 12_345 });
  assert.equal(warm.text, "$(flame) banked 12k");
  assert.match(warm.tooltip, /12,345 of 12,345 workspace tokens cached; completions on/);
  assert.equal(statusBar({ ...base, enabled: false, cached_tokens: 10, workspace_tokens: 10 }).text, "$(circle-slash) banked 10 (off)");
  assert.match(statusBar({ state: "failed", enabled: true, detail: "model missing" }).tooltip, /model missing/);
  assert.equal(statusBar({ state: "disconnected", enabled: true }).text, "$(debug-disconnect) banked");
  assert.equal(statusBar(undefined).text, "$(loading~spin) banked");
  const elsewhere = statusBar({ ...base, cached_tokens: 10, workspace_tokens: 10, workspace: "/home/u/other", here: false });
  assert.equal(elsewhere.text, "$(flame) banked: other");
  assert.match(elsewhere.tooltip, /holds \/home\/u\/other, another window's folder/);
  const away = statusBar({ ...base, engine: "llamacpp", server: "https://gpu:8080", server_problem: "the server at https://gpu:8080 does not answer" });
  assert.equal(away.text, "$(warning) banked");
  assert.match(away.tooltip, /does not answer; answering from the local engine meanwhile/);
  assert.match(statusBar({ ...base, engine: "remote", server: "https://gpu:8080", server_problem: "" }).tooltip, /remote at https:\/\/gpu:8080/);
});

test("counts are short", () => {
  assert.deepEqual([999, 1500, 25_000, 2_500_000].map(shortCount), ["999", "1.5k", "25k", "2.5M"]);
});

test("refactor asks for an instruction only when it has none", () => {
  const r = { start: { line: 1, character: 0 }, end: { line: 3, character: 0 } };
  assert.deepEqual(commandTarget("file:///a.py", r, "  simplify "), { uri: "file:///a.py", range: r, instruction: "simplify" });
  assert.deepEqual(commandTarget("file:///a.py", r, " "), { uri: "file:///a.py", range: r });
  assert.equal(needsInstruction("banked.refactor", [{ uri: "file:///a.py" }]), true);
  assert.equal(needsInstruction("banked.refactor", [{ uri: "file:///a.py", instruction: "x" }]), false);
  assert.equal(needsInstruction("banked.explain", []), false);
});

test("the server is found: the machine setting (with ~), else the workspace .venv, pipx, then PATH", () => {
  const have = new Set(["/home/u/bin/banked-lsp", "/w/proj/.venv/bin/banked-lsp", "/home/u/.local/bin/banked-lsp", "/usr/bin/banked-lsp"]);
  const f = { home: "/home/u", folders: ["/w/proj"], pathDirs: ["/usr/bin"], exists: (p: string) => have.has(p) };
  assert.equal(resolveServerPath("~/bin/banked-lsp", f), "/home/u/bin/banked-lsp");
  assert.equal(resolveServerPath("", f), "/w/proj/.venv/bin/banked-lsp");
  assert.equal(resolveServerPath(undefined, { ...f, folders: [] }), "/home/u/.local/bin/banked-lsp");
  assert.equal(resolveServerPath(undefined, { ...f, folders: [], exists: (p) => p === "/usr/bin/banked-lsp" }), "/usr/bin/banked-lsp");
  assert.equal(resolveServerPath("/nowhere/banked-lsp", f), undefined); // set but missing: not silently replaced
  assert.equal(resolveServerPath(undefined, { ...f, exists: () => false }), undefined);
  assert.equal(expandHome("~", "/h"), "/h");
  assert.equal(expandHome("/a/~b", "/h"), "/a/~b");
});

test("a server that cannot start is one clear message with the fix", () => {
  assert.match(startupError(undefined, undefined), /not found\. Install banked .*banked\.serverPath/);
  assert.match(startupError("/x/banked-lsp", undefined), /not found at \/x\/banked-lsp/);
  assert.match(startupError(undefined, "/v/banked-lsp", "spawn EACCES"), /did not start \(spawn EACCES\).*banked doctor/);
  assert.equal(statusBar({ state: "failed", enabled: false, detail: "x" }).text, "$(error) banked");
});

test("a refresh re-triggers ghost text only in its editor, at its version", () => {
  const note = { uri: "file:///w/a.py", version: 7 };
  assert.equal(shouldRefresh({ uri: "file:///w/a.py", version: 7 }, note), true);
  assert.equal(shouldRefresh({ uri: "file:///w/a.py", version: 8 }, note), false);
  assert.equal(shouldRefresh({ uri: "file:///w/b.py", version: 7 }, note), false);
  assert.equal(shouldRefresh(undefined, note), false);
});
