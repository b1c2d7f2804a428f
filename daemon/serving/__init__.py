"""The daemon process: the socket server, the RPC methods, the model's scheduler, workspaces and snapshots."""
