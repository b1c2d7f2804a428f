// banked for VS Code: runs `banked-lsp`, shows its inline completions, adds palette commands and a status item.
import * as vscode from "vscode";
import { ExecuteCommandRequest, LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";
import { BankedStatus, UserSettings, commandTarget, needsInstruction, serverSettings, statusBar } from "./logic";

let client: LanguageClient | undefined;

function settings(): UserSettings {
  const c = vscode.workspace.getConfiguration("banked");
  return {
    enabled: c.get<boolean>("enabled"),
    languages: c.get<Record<string, boolean>>("languages"),
    debounceMs: c.get<number>("debounceMs"),
    maxLines: c.get<number | null>("maxLines"),
    socket: c.get<string | null>("socket"),
  };
}

async function execute(command: string, arg?: unknown): Promise<unknown> {
  if (!client) throw new Error("banked-lsp is not running");
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

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const command = vscode.workspace.getConfiguration("banked").get<string>("serverPath") || "banked-lsp";
  const serverOptions: ServerOptions = { command, args: ["--stdio"] };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }],
    initializationOptions: serverSettings(settings()),
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
  client = new LanguageClient("banked", "banked", serverOptions, clientOptions);
  client.registerProposedFeatures(); // textDocument/inlineCompletion (LSP 3.18)

  const item = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Right, 100);
  item.command = "banked.showStatus";
  const show = (st?: BankedStatus) => {
    const s = statusBar(st);
    item.text = s.text;
    item.tooltip = s.tooltip;
  };
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
      if (e.affectsConfiguration("banked") && client) {
        void client.sendNotification("workspace/didChangeConfiguration", { settings: serverSettings(settings()) });
      }
    }),
  );

  await client.start();
  context.subscriptions.push(client.onNotification("banked/status", (st: BankedStatus) => show(st)));
}

export async function deactivate(): Promise<void> {
  if (client) await client.stop();
}
