"""docker-compose.yml's variables as compose fills them in from an empty environment."""

from __future__ import annotations

import re

_DEFAULTED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}")


def with_defaults(value: str) -> str:
    """``value`` with each ``${NAME:-default}`` / ``${NAME-default}`` replaced by its
    default (what compose substitutes when NAME is unset)."""
    return _DEFAULTED.sub(lambda match: match[1], value)
