"""Run the real CLI in a subprocess, as a user would."""
import os
import signal
import subprocess
import sys


def run_cli(*args: str, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autoslim_hw", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def start_cli(*args: str, cwd=None, env=None) -> subprocess.Popen:
    """The CLI in the background, ready for a Ctrl-C (SIGINT). A shell that runs a job with `&`
    and no job control starts it with SIGINT ignored, which every child inherits; the CLI is
    started with the default handler, as from a terminal."""
    return subprocess.Popen([sys.executable, "-m", "autoslim_hw", *map(str, args)], cwd=cwd,
                            env=env if env is not None else os.environ.copy(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
