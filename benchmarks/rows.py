"""One way every benchmark reports a row: printed as JSON and, with a path, appended as a JSON line."""

from __future__ import annotations

import json
from typing import Any


def emit(row: dict[str, Any], json_lines: str | None = None) -> None:
    """Print ``row``; append it to ``json_lines`` too (so a run that is stopped keeps what finished)."""
    print(json.dumps(row), flush=True)
    if json_lines:
        with open(json_lines, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
