"""The banked daemon: one model, one KV cache holding whole workspaces, served over a Unix socket."""

__version__ = "0.1.0"
