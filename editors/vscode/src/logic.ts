// Logic that does not need the `vscode` module, so node's test runner can check it.

/** What the language server sends as `banked/status`. */
export interface BankedStatus {
  state: "connected" | "disconnected" | "starting" | "failed" | string;
  detail?: string;
  enabled: boolean;
  engine?: string | null;
  model?: string | null;
  cached_tokens?: number;
  workspace_tokens?: number;
  percent?: number | null;
  pending_jobs?: number;
  workspace?: string | null; // the folder the daemon's cache holds
  here?: boolean | null; // whether that folder is one of this window's
  server?: string | null; // engine = "remote": the team server
  server_problem?: string; // what is wrong with it ("" when nothing)
}

/** The user's `banked.*` settings as read from the configuration. */
export interface UserSettings {
  enabled?: boolean;
  languages?: Record<string, boolean>;
  debounceMs?: number;
  maxLines?: number | null;
  socket?: string | null;
  warm?: string; // focused | start | manual
}

/** initializationOptions / didChangeConfiguration payload: only keys the user set, under "banked". */
export function serverSettings(s: UserSettings): { banked: Record<string, unknown> } {
  const out: Record<string, unknown> = {};
  if (typeof s.enabled === "boolean") out.enabled = s.enabled;
  if (s.languages && typeof s.languages === "object") out.languages = { ...s.languages };
  if (typeof s.debounceMs === "number" && s.debounceMs >= 0) out.debounceMs = Math.floor(s.debounceMs);
  if (typeof s.maxLines === "number" && s.maxLines >= 1) out.maxLines = Math.floor(s.maxLines);
  if (typeof s.socket === "string" && s.socket !== "") out.socket = s.socket;
  if (s.warm === "focused" || s.warm === "start" || s.warm === "manual") out.warm = s.warm;
  return { banked: out };
}

export function shortCount(n: number): string {
  if (n >= 1_000_000) return `${(n / 1_000_000).toFixed(1)}M`;
  if (n >= 10_000) return `${Math.round(n / 1000)}k`;
  if (n >= 1000) return `${(n / 1000).toFixed(1)}k`;
  return String(n);
}

/** The status-bar item: text (with a codicon) and tooltip. */
export function statusBar(st: BankedStatus | undefined): { text: string; tooltip: string } {
  if (!st) return { text: "$(loading~spin) banked", tooltip: "banked: connecting to the daemon" };
  if (st.state === "starting") return { text: "$(loading~spin) banked", tooltip: st.detail || "starting the daemon" };
  if (st.state === "failed") return { text: "$(error) banked", tooltip: `banked: ${st.detail || "the daemon failed"}` };
  if (st.state !== "connected") return { text: "$(debug-disconnect) banked", tooltip: "banked: daemon not connected; it reconnects on the next completion" };
  if (st.here === false) {
    const name = (st.workspace ?? "").split(/[\\/]/).filter(Boolean).pop() ?? "another folder";
    return {
      text: `$(flame) banked: ${name}`,
      tooltip: `banked: the cache holds ${st.workspace}, another window's folder; it moves here when this window keeps the focus (banked.warm), or run "banked: Warm workspace"`,
    };
  }
  if (st.server_problem) {
    return { text: "$(warning) banked", tooltip: `banked: ${st.server_problem}${st.engine !== "remote" ? "; answering from the local engine meanwhile" : ""}` };
  }
  const cached = st.cached_tokens ?? 0;
  const total = st.workspace_tokens ?? 0;
  const engine = st.engine ? ` · ${st.engine}${st.server ? ` at ${st.server}` : ""}` : "";
  const off = st.enabled ? "" : " (off)";
  const warming = total > 0 && cached < total;
  const icon = !st.enabled ? "$(circle-slash)" : warming ? "$(sync~spin)" : "$(flame)";
  const body = warming ? `${st.percent ?? Math.floor((100 * cached) / total)}%` : shortCount(cached);
  return {
    text: `${icon} banked ${body}${off}`,
    tooltip: `banked${engine}${st.model ? ` (${st.model})` : ""}: ${cached.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} workspace tokens cached${warming ? " (warming)" : ""}; completions ${st.enabled ? "on" : "off"}`,
  };
}

export interface LspPosition { line: number; character: number }
export interface LspRange { start: LspPosition; end: LspPosition }

/** The argument of banked.explain / banked.refactor: the file and the selection. */
export function commandTarget(uri: string, range: LspRange, instruction?: string): Record<string, unknown> {
  const arg: Record<string, unknown> = { uri, range };
  if (instruction && instruction.trim()) arg.instruction = instruction.trim();
  return arg;
}

/** True when a refactor command still needs an instruction from the user. */
export function needsInstruction(command: string, args: unknown[] | undefined): boolean {
  if (command !== "banked.refactor") return false;
  const a = args && args[0];
  return !(a && typeof a === "object" && typeof (a as { instruction?: unknown }).instruction === "string");
}

/** `~` and `~/…` in a path setting, expanded against `home`. */
export function expandHome(p: string, home: string): string {
  if (p === "~") return home;
  if (p.startsWith("~/")) return home + p.slice(1);
  return p;
}

export interface Finder {
  home: string;
  folders: string[]; // the workspace folders, as paths
  pathDirs: string[]; // $PATH split
  exists: (path: string) => boolean;
}

/**
 * Where banked-lsp is: the `banked.serverPath` setting (machine-scoped, `~` expanded) if set; else the
 * workspace's own `.venv` (a banked checkout, or a project that installed banked), pipx's `~/.local/bin`,
 * then `$PATH`. Undefined when it is nowhere: the caller says how to install it.
 */
export function resolveServerPath(setting: string | undefined | null, f: Finder): string | undefined {
  if (setting && setting.trim() && setting.trim() !== "banked-lsp") {
    const p = expandHome(setting.trim(), f.home);
    return p.includes("/") ? (f.exists(p) ? p : undefined) : f.pathDirs.map((d) => `${d}/${p}`).find(f.exists);
  }
  const candidates = [
    ...f.folders.map((d) => `${d}/.venv/bin/banked-lsp`),
    `${f.home}/.local/bin/banked-lsp`,
    ...f.pathDirs.map((d) => `${d}/banked-lsp`),
  ];
  return candidates.find(f.exists);
}

/** The one message shown when the server cannot be found or started: what happened and the fix. */
export function startupError(setting: string | undefined | null, found: string | undefined, why?: string): string {
  if (!found) {
    const asked = setting && setting.trim() && setting.trim() !== "banked-lsp" ? ` at ${setting}` : "";
    return (
      `banked: the language server (banked-lsp) was not found${asked}. Install banked (\`make install\` in its ` +
      "checkout puts it in .venv/bin), then set banked.serverPath in your user settings to that banked-lsp."
    );
  }
  return `banked: ${found} did not start${why ? ` (${why})` : ""}. Run \`banked doctor\` in a terminal to see why.`;
}

/** What the language server sends as `banked/refreshInline`: the suggestion for this version has grown. */
export interface RefreshInline { uri: string; version: number }

/** Re-trigger inline suggestions only in the editor the note is about, still at that version (typed on: the
 * next keystroke asks anyway). */
export function shouldRefresh(active: { uri: string; version: number } | undefined, note: RefreshInline): boolean {
  return active !== undefined && active.uri === note.uri && active.version === note.version;
}
