"""The wire between the daemon and its clients: msgpack-RPC framing, the typed protocol, the blocking client."""
