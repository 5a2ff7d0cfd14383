"""What the command modules share: the console, one-line output, human numbers."""
from __future__ import annotations

from rich.console import Console

from .._format import human_bytes, human_count  # noqa: F401  (re-exported for the command modules)

console = Console(highlight=False)


def say(text: str) -> None:
    """One unwrapped line (paths and commands stay copy-pastable), no markup."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)
