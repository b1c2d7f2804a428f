"""What the model sees: workspace files and their watcher, secrets rules, syntax, the repo map, the workspace
cache that lays it all out as one token sequence, prompt templates and texts, and completion shaping."""
