"""The `banked` command line: its commands, the demo, the system service, model conversion."""
