"""Every float option of every command refuses NaN and infinity before any work: exit code 2,
one line naming the option, no traceback. The commands and options come from the CLI itself,
so a new command or option gets the check for free."""
import pytest
import typer.main

from autoslim_hw.cli import app, main


def _float_options():
    from autoslim_hw.cli import _floats

    root = typer.main.get_command(app)

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, path + [name])
        for p in command.params:
            d = getattr(p, "type_descriptor", None)
            if d is not None and _floats(d.annotation) and p.opts:
                yield path, p.opts[0]

    return list(walk(root, []))


OPTIONS = _float_options()


def test_the_cli_has_float_options():
    # --lr, --width, --width-max, --warmup-epochs ... : an empty list would make the test below vacuous
    assert {opt for _, opt in OPTIONS} >= {"--lr", "--width", "--width-max", "--warmup-epochs"}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("path,option", OPTIONS, ids=[" ".join(p) + " " + o for p, o in OPTIONS])
def test_non_finite_float_is_one_line_exit_2(path, option, value, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["autoslim-hw", *path, option, value])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert option in lines[0] and "finite" in lines[0], lines[0]
