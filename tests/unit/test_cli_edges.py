"""The CLI's edges a new user meets first: a pipe closed early, --version, negative numbers, `down` with nothing up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ebbflow import __version__
from ebbflow.cli import _ordinal, main
from ebbflow.up import StateDirLock

SERVICES = Path(__file__).resolve().parents[2] / "services"

# A command that writes far more than a pipe buffer holds, as `history` over days does.
MANY_LINES = """
import sys
import ebbflow.cli as cli
def many(args):
    for index in range(200_000):
        print(f"{index},{index * 0.5},some more text to fill the pipe")
    return 0
cli.cmd_history = many
sys.exit(cli.main(["history", "llm"]))
"""


def test_a_reader_that_stops_early_ends_the_command_quietly() -> None:
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    process = subprocess.Popen([sys.executable, "-c", MANY_LINES], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()  # what `| head -1` does after its line
    stderr = process.stderr.read().decode()
    code = process.wait(timeout=60)
    assert first.startswith(b"0,")
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert code == 141  # 128 + SIGPIPE, as a Unix tool killed by the closed pipe


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.strip() == f"ebbflow {__version__}"


def test_down_with_nothing_running_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state.json").write_text('{"pid": 1}')  # left behind by an `up` that was killed
    assert main(["down", "--state-dir", str(tmp_path)]) == 2
    assert "no running ebbflow up found" in capsys.readouterr().err
    assert not (tmp_path / "state.json").exists()
    assert StateDirLock.holder(tmp_path) is None


def test_a_negative_limit_is_refused_by_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["decisions", "llm", "--limit", "-2"])
    assert exited.value.code == 2 and "--limit: must be at least 1, got -2" in capsys.readouterr().err


@pytest.mark.parametrize("n, text", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"), (21, "21st"), (102, "102nd")])
def test_ordinal(n: int, text: str) -> None:
    assert _ordinal(n) == text
