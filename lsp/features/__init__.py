"""The language server's features, one module each, each owning its state (as esbonio does)."""
