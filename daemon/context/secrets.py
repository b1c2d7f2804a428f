"""What banked never reads into a prompt, a cache or a snapshot: credentials, by name and by content.

Two lines of defence. By name: a deny list of the files where common tools keep
credentials (gitignore-style patterns, extendable with the `extra_secrets`
config key). By content: private-key blocks and the token formats of common
services; a workspace file that holds one is skipped, and in the text around a
cursor or a selection each one is replaced by `<redacted>`.
"""

from __future__ import annotations

import re

#: Files that hold credentials, by name (gitignore syntax). Documented in the README.
SECRET_PATTERNS = [
    # environment files and shell history
    ".env",
    ".env.*",
    "*.env",
    ".envrc",
    ".*_history",
    ".histfile",
    # keys and certificates
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "*.keytab",
    "*.kdbx",
    "*.gpg",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "ssh_host_*",
    ".ssh/",
    ".gnupg/",
    # cloud, container and package-registry credentials
    ".aws/",
    ".azure/",
    ".config/gcloud/",
    ".kube/",
    "kubeconfig",
    ".docker/config.json",
    ".npmrc",
    ".yarnrc.yml",
    ".pypirc",
    ".gem/credentials",
    ".cargo/credentials*",
    ".terraformrc",
    "*.tfstate",
    "*.tfstate.*",
    "*.tfvars",
    ".vault-token",
    ".git-credentials",
    ".netrc",
    "_netrc",
    ".pgpass",
    ".my.cnf",
    ".htpasswd",
    # files named for what they hold
    "credentials",
    "credentials.json",
    "credentials.y*ml",
    "client_secret*.json",
    "service-account*.json",
    "secrets.json",
    "secrets.y*ml",
    "secrets.toml",
    "secrets.ini",
    ".secrets",
    "*.secret",
    "*.secrets",
    # system account databases
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
]

_PRIVATE_KEY = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*-----|.*\Z)"

#: Token formats worth refusing on sight: (what it is, pattern of the secret itself).
TOKEN_PATTERNS: list[tuple[str, str]] = [
    ("a private key", _PRIVATE_KEY),
    ("an AWS access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("an AWS secret key", r"(?i:aws_secret_access_key)\s*[=:]\s*\S{20,}"),
    ("a GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})"),
    ("a GitLab token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    ("a Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("an OpenAI or Anthropic key", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{32,}"),
    ("a Stripe key", r"\b[rs]k_live_[0-9A-Za-z]{20,}"),
    ("a Google API key", r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    ("an npm token", r"\bnpm_[A-Za-z0-9]{36}\b|_authToken\s*=\s*\S+"),
    ("a PyPI token", r"\bpypi-AgE[A-Za-z0-9_\-]{50,}"),
    ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{34,}\b"),
    ("a credential in a URL", r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:[^\s@/]{6,}@"),
]
_TOKENS = re.compile("|".join(f"(?:{p})" for _, p in TOKEN_PATTERNS), re.S)
_WHICH = [(name, re.compile(p, re.S)) for name, p in TOKEN_PATTERNS]
REDACTED = "<redacted>"


def find(text: str) -> str | None:
    """What kind of secret `text` holds ("a private key", …), or None."""
    if not _TOKENS.search(text):
        return None
    return next(name for name, rx in _WHICH if rx.search(text))


def redact(text: str) -> str:
    """`text` with every secret the patterns know replaced by `<redacted>` (lengths change)."""
    return _TOKENS.sub(REDACTED, text)
