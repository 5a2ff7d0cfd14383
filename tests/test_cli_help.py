"""`--help` of every command: it runs, and its text flows to the terminal's width (a docstring's
line breaks are not the reader's)."""
import pytest
import typer
from typer.testing import CliRunner

from autoslim_hw.cli import app

WIDTH = 80


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if hasattr(cmd, "commands"):  # a group
            yield from _commands(cmd, prefix + (name,))


COMMANDS = [()] + list(_commands(typer.main.get_command(app)))


def _ragged_lines(text: str) -> list[str]:
    """Lines of the description (above the option panels) that end although the next line's
    first word would have fit: greedy filling, the independent definition of flowed text."""
    body = text.split("╭─")[0].splitlines()
    bad = []
    for a, b in zip(body, body[1:]):
        a, b = a.rstrip(), b.strip()
        if a.strip() and b and not a.strip().startswith("Usage:"):
            if len(a) + 1 + len(b.split()[0]) <= WIDTH - 2:  # the panel pads a space each side
                bad.append(a.strip())
    return bad


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "autoslim-hw")
def test_help_runs_and_flows(command):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": str(WIDTH), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert _ragged_lines(result.output) == []
