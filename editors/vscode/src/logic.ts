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
}

/** The user's `banked.*` settings as read from the configuration. */
export interface UserSettings {
  enabled?: boolean;
  languages?: Record<string, boolean>;
  debounceMs?: number;
  maxLines?: number | null;
  socket?: string | null;
}

/** initializationOptions / didChangeConfiguration payload: only keys the user set, under "banked". */
export function serverSettings(s: UserSettings): { banked: Record<string, unknown> } {
  const out: Record<string, unknown> = {};
  if (typeof s.enabled === "boolean") out.enabled = s.enabled;
  if (s.languages && typeof s.languages === "object") out.languages = { ...s.languages };
  if (typeof s.debounceMs === "number" && s.debounceMs >= 0) out.debounceMs = Math.floor(s.debounceMs);
  if (typeof s.maxLines === "number" && s.maxLines >= 1) out.maxLines = Math.floor(s.maxLines);
  if (typeof s.socket === "string" && s.socket !== "") out.socket = s.socket;
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
  const cached = st.cached_tokens ?? 0;
  const total = st.workspace_tokens ?? 0;
  const engine = st.engine ? ` · ${st.engine}` : "";
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
