"""The command line: every subcommand has --help with examples; errors are one line."""

import subprocess
import sys

import numpy as np
import pytest

from stdcl.cli import build_parser, main


def all_commands(parser=None, prefix=()):
    parser = parser or build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for name, sub in action.choices.items():
            yield prefix + (name,), sub
            yield from all_commands(sub, prefix + (name,))


def test_every_subcommand_has_help_with_examples(capsys):
    commands = list(all_commands())
    leaves = [c for c, p in commands if not p._subparsers]
    assert ("data", "prepare") in leaves and ("data", "inspect") in leaves and ("bench", "encoders") in leaves
    for cmd in leaves:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"stdcl {' '.join(cmd)}" in out, cmd


def test_every_command_group_lists_its_subcommands(capsys):
    """The help of the top level and of every group renders (a '%' in a subcommand's summary once broke it)."""
    groups = [(), *(c for c, p in all_commands() if p._subparsers)]
    assert ("experiment",) in groups and ("data",) in groups
    for cmd in groups:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: stdcl {' '.join(cmd)}".rstrip()), cmd
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    assert "95 % CI" in capsys.readouterr().out


def test_every_integer_option_has_a_range(capsys):
    """No option takes a bare int (a negative batch or bank size once ended in a traceback deep inside)."""
    for cmd, p in all_commands():
        for action in p._actions:
            assert action.type is not int, (cmd, action.option_strings)
    for argv, message in [
            (["bench", "loss", "--bank-size", "-3"], "argument --bank-size: must be a whole number >= 1, got -3"),
            (["eval", "x.safetensors", "--workers", "-1"], "argument --workers: must be a whole number >= 0, got -1"),
            (["data", "synth", "--out", "d", "--num-samples", "0"], "must be a whole number >= 1, got 0"),
            (["analyze", "project", "c.safetensors", "--out", "p.csv", "--n-neighbors", "x"],
             "argument --n-neighbors: must be a whole number >= 2, got 'x'")]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message), argv


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "stdcl", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("stdcl ")


def test_layouts_command(capsys):
    assert main(["data", "layouts"]) == 0
    out = capsys.readouterr().out
    assert "ntu25: 25 joints, centre spine_shoulder" in out and "ucla20: 20 joints" in out


def test_inspect_npz_and_error(tmp_path, capsys):
    x = np.zeros((3, 3, 30, 25, 1), np.float32)
    x[0, :, :10] = 1
    x[1, :, :20] = 1
    x[1, :, 5] = 0  # a dropped frame inside the sequence
    x[2, :, :30] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1]))
    assert main(["data", "inspect", str(tmp_path / "d.npz")]) == 0
    out = capsys.readouterr().out
    assert "format: numpy" in out and "split all: 3 samples" in out
    assert "valid frames: min 10, mean 15.0, median 15, max 20" in out
    assert "samples with NaN: 1; all-zero frames inside sequences: 1" in out
    assert main(["data", "inspect", str(tmp_path / "nothing.npz")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"stdcl: error: {tmp_path / 'nothing.npz'}: no such file or directory"


def test_inspect_ucla(shared_data, capsys):
    assert main(["data", "inspect", str(shared_data / "nw_ucla_ctrgcn"), "--limit", "50"]) == 0
    out = capsys.readouterr().out
    assert "format: ucla" in out and "split train: 1020 samples (50 inspected)" in out
    assert "split test: 464 samples" in out and "classes: 10 (pick up with one hand" in out
