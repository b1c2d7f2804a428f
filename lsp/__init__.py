"""The banked language server (a client of the daemon; built in its own issue)."""
