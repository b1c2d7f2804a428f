"""The editor-side settings, from `initializationOptions` and `workspace/didChangeConfiguration`.

Editors nest settings differently (VS Code sends `{"banked": {...}}`, Neovim
usually the bare table), so both shapes are accepted and unknown keys ignored:
a typo in a user's settings must not stop their completions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

WARM_POLICIES = ("focused", "start", "manual")


@dataclass(frozen=True)
class Settings:
    enabled: bool = True  # completions on/off (banked.toggleCompletions flips it)
    languages: dict[str, bool] = field(default_factory=dict)  # per languageId; missing means enabled
    debounce_ms: int = 75  # wait this long after a keystroke before asking the daemon
    max_lines: int | None = None  # None: the daemon decides (1 mid-line, else its max_lines)
    socket: str | None = None  # the daemon's socket; None: the platformdirs default
    autostart: bool = True  # start a daemon when none runs
    metrics: bool = False  # send banked/metrics after each completion (bench/lsp.py uses it)
    reuse: bool = True  # typing through suggestions, the cache of recent ones, sharing a running model call
    speculate: bool = True  # compute the next suggestion (as if this one is accepted) while the user reads
    warm: str = "focused"  # when this window warms its folders: focused | start | manual (features/warming.py)

    def language_enabled(self, language_id: str | None) -> bool:
        return self.enabled and self.languages.get(language_id or "", self.languages.get("*", True))

    def updated(self, raw: Any) -> Settings:
        """These settings with the recognised keys of `raw` applied."""
        if not isinstance(raw, dict):
            return self
        if isinstance(raw.get("banked"), dict):
            raw = raw["banked"]
        changes: dict[str, Any] = {}
        if isinstance(raw.get("enabled"), bool):
            changes["enabled"] = raw["enabled"]
        if isinstance(raw.get("languages"), dict):
            changes["languages"] = {str(k): bool(v) for k, v in raw["languages"].items()}
        for key in ("debounce_ms", "max_lines"):
            value = raw.get(key, raw.get(_camel(key)))
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                changes[key] = value
        for key in ("socket",):
            value = raw.get(key)
            if isinstance(value, str):
                changes[key] = value or None
        if raw.get("warm") in WARM_POLICIES:
            changes["warm"] = raw["warm"]
        for key in ("autostart", "metrics", "reuse", "speculate"):
            if isinstance(raw.get(key), bool):
                changes[key] = raw[key]
        return replace(self, **changes)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
