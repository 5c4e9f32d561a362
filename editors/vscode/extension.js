// The VS Code side of fcspec: start `fcspec lsp` (stdio) for .fc files; the server does the rest.
"use strict";
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace
    .getConfiguration("fcspec")
    .get("server.command", ["fcspec", "lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient(
    "fcspec",
    "fcspec language server",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "fcspec" }, { scheme: "untitled", language: "fcspec" }] }
  );
  context.subscriptions.push(client);
  return client.start().catch((err) => {
    vscode.window.showErrorMessage(
      `fcspec: cannot start \`${command} ${args.join(" ")}\` (${err.message}). ` +
        "Install it with pip install -e '.[lsp]' or set fcspec.server.command."
    );
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
