// banked for VS Code: runs `banked-lsp`, shows its inline completions, adds palette commands and a status item.
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as vscode from "vscode";
import { ExecuteCommandRequest, LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";
import {
  BankedStatus,
  RefreshInline,
  UserSettings,
  commandTarget,
  needsInstruction,
  resolveServerPath,
  serverSettings,
  shouldRefresh,
  startupError,
  statusBar,
} from "./logic";

let client: LanguageClient | undefined;
let item: vscode.StatusBarItem | undefined;

function settings(): UserSettings {
  const c = vscode.workspace.getConfiguration("banked");
  return {
    enabled: c.get<boolean>("enabled"),
    languages: c.get<Record<string, boolean>>("languages"),
    debounceMs: c.get<number>("debounceMs"),
    maxLines: c.get<number | null>("maxLines"),
    socket: c.get<string | null>("socket"),
    warm: c.get<string>("warm"),
  };
}

/** banked.serverPath is machine-scoped: a workspace's own settings can never point it at an executable. */
function serverPathSetting(): string | undefined {
  const inspected = vscode.workspace.getConfiguration("banked").inspect<string>("serverPath");
  return inspected?.globalValue ?? undefined;
}

function findServer(): string | undefined {
  return resolveServerPath(serverPathSetting(), {
    home: os.homedir(),
    folders: (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath),
    pathDirs: (process.env.PATH ?? "").split(path.delimiter).filter(Boolean),
    exists: (p) => {
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return true;
      } catch {
        return false;
      }
    },
  });
}

function show(st?: BankedStatus): void {
  if (!item) return;
  const s = statusBar(st);
  item.text = s.text;
  item.tooltip = s.tooltip;
}

async function fail(message: string): Promise<void> {
  show({ state: "failed", enabled: false, detail: message });
  const choice = await vscode.window.showErrorMessage(message, "Open Settings");
  if (choice === "Open Settings") {
    await vscode.commands.executeCommand("workbench.action.openSettings", "banked.serverPath");
  }
}

async function execute(command: string, arg?: unknown): Promise<unknown> {
  if (!client) throw new Error("banked-lsp is not running; see the banked item in the status bar");
  return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: arg === undefined ? [] : [arg] });
}

async function askInstruction(): Promise<string | undefined> {
  return vscode.window.showInputBox({ prompt: "banked: refactor how?", placeHolder: "e.g. use a dataclass; handle errors" });
}

function selectionTarget(instruction?: string): Record<string, unknown> | undefined {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showWarningMessage("banked: open a file first");
    return undefined;
  }
  const s = editor.selection;
  const range = { start: { line: s.start.line, character: s.start.character }, end: { line: s.end.line, character: s.end.character } };
  return commandTarget(editor.document.uri.toString(), range, instruction);
}

async function startClient(context: vscode.ExtensionContext): Promise<void> {
  const server = findServer();
  if (!server) {
    await fail(startupError(serverPathSetting(), undefined));
    return;
  }
  const serverOptions: ServerOptions = { command: server, args: ["--stdio"] };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }],
    initializationOptions: { banked: { ...serverSettings(settings()).banked, focused: vscode.window.state.focused } },
    middleware: {
      // Code actions resolve to banked.refactor without an instruction: ask for one with an input box.
      executeCommand: async (cmd, args, next) => {
        if (needsInstruction(cmd, args)) {
          const instruction = await askInstruction();
          if (!instruction) return undefined;
          args = [{ ...(args[0] as object), instruction }];
        }
        return next(cmd, args);
      },
    },
  };
  const c = new LanguageClient("banked", "banked", serverOptions, clientOptions);
  c.registerProposedFeatures(); // textDocument/inlineCompletion (LSP 3.18)
  try {
    await c.start();
  } catch (e) {
    await fail(startupError(serverPathSetting(), server, e instanceof Error ? e.message : String(e)));
    return;
  }
  client = c;
  context.subscriptions.push(c.onNotification("banked/status", (st: BankedStatus) => show(st)));
  // Part of a line was shown, the user paused, the model has finished it: ask for ghost text again.
  context.subscriptions.push(
    c.onNotification("banked/refreshInline", (note: RefreshInline) => {
      const doc = vscode.window.activeTextEditor?.document;
      if (shouldRefresh(doc && { uri: doc.uri.toString(), version: doc.version }, note)) {
        void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
      }
    }),
  );
  // The focused window's folders are the warm ones (see the server's lsp/features/warming.py).
  context.subscriptions.push(
    vscode.window.onDidChangeWindowState((w) => {
      if (client === c) void execute("banked.focus", { focused: w.focused }).catch(() => undefined);
    }),
  );
}

async function restartClient(context: vscode.ExtensionContext): Promise<void> {
  const old = client;
  client = undefined;
  if (old) await old.stop();
  show(undefined);
  await startClient(context);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  item.command = "banked.showStatus";
  show(undefined);
  item.show();
  context.subscriptions.push(item);

  const register = (id: string, fn: () => Promise<unknown>) =>
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async () => {
        try {
          await fn();
        } catch (e) {
          void vscode.window.showErrorMessage(`banked: ${e instanceof Error ? e.message : String(e)}`);
        }
      }),
    );
  register("banked.explainSelection", async () => {
    const t = selectionTarget();
    if (t) await execute("banked.explain", t);
  });
  register("banked.refactorSelection", async () => {
    const instruction = await askInstruction();
    const t = instruction ? selectionTarget(instruction) : undefined;
    if (t) await execute("banked.refactor", t);
  });
  register("banked.warm", () => execute("banked.warmWorkspace"));
  register("banked.showStatus", async () => {
    const r = (await execute("banked.status")) as { state: string; enabled: boolean; daemon?: Record<string, unknown> };
    const d = (r.daemon || {}) as { engine?: { name?: string; model?: string }; cached_tokens?: number; pid?: number };
    void vscode.window.showInformationMessage(
      `banked: ${r.state}, completions ${r.enabled ? "on" : "off"}; ${d.engine?.name ?? "-"} ${d.engine?.model ?? ""}; ${d.cached_tokens ?? 0} tokens cached; daemon pid ${d.pid ?? "-"}`,
    );
  });
  register("banked.restart", () => execute("banked.restartDaemon"));
  register("banked.toggle", () => execute("banked.toggleCompletions"));

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration("banked.serverPath")) {
        void restartClient(context); // a new server: no window reload needed
      } else if (e.affectsConfiguration("banked") && client) {
        void client.sendNotification("workspace/didChangeConfiguration", { settings: serverSettings(settings()) });
      }
    }),
  );
  await startClient(context);
}

export async function deactivate(): Promise<void> {
  if (client) await client.stop();
}
