"""The banked language server: a client of the daemon that speaks LSP to editors (`banked-lsp`)."""
