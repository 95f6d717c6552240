"""Output paths users get wrong: one line naming the path, exit 2, nothing half-written; a bug keeps its traceback."""

from __future__ import annotations

import argparse
import errno

import pytest

from stdcl import cli
from stdcl.errors import OutputError
from stdcl.io import atomic_path, make_folder, write_text_atomic

BUILD_PARSER = cli.build_parser


def test_atomic_writes_refuse_bad_targets_with_the_path_named(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(OutputError, match=f"^{folder}: is a folder; give a file name to write$"):
        write_text_atomic(folder, "x")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = blocker / "deeper" / "x.json"
    with pytest.raises(OutputError, match=f"^{target}: cannot create it: {blocker} is a file, not a folder$"):
        write_text_atomic(target, "x")
    with pytest.raises(OutputError, match="^/proc/stdcl-x.json: cannot write in /proc"):
        write_text_atomic("/proc/stdcl-x.json", "x")  # not writable even for root
    # a folder appearing at the target while the file is written: refused, and no temporary file is left
    late = tmp_path / "late.txt"
    with pytest.raises(OutputError, match="is a folder"):
        with atomic_path(late) as tmp:
            tmp.write_text("x")
            late.mkdir()
            (late / "keep").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "late.txt", "out"]
    assert [p.name for p in late.iterdir()] == ["keep"]


def test_output_folders_refuse_files_with_the_path_named(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=f"^{blocker}: is a file; give a folder$"):
        make_folder(blocker)
    with pytest.raises(OutputError, match=f"^{blocker}/a/b: cannot create it: {blocker} is a file, not a folder$"):
        make_folder(blocker / "a" / "b")
    with pytest.raises(OutputError, match="^/proc/stdcl-x: cannot create /proc/stdcl-x"):
        make_folder("/proc/stdcl-x")
    assert make_folder(tmp_path / "new" / "deep").is_dir()


def _run_with(monkeypatch, capsys, exc: BaseException, *flags: str) -> tuple[int, str]:
    def boom(args: argparse.Namespace) -> int:
        raise exc

    parser = BUILD_PARSER()
    real = BUILD_PARSER().parse_args  # a parser of its own: this one's parse_known_args is replaced
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_known_args", lambda argv=None: (argparse.Namespace(
        **(vars(real([*flags, "data", "layouts"])) | {"func": boom})), []))
    code = cli.main([])
    return code, capsys.readouterr().err


def test_the_cli_funnel_names_the_path_and_keeps_bugs_visible(monkeypatch, capsys):
    code, err = _run_with(monkeypatch, capsys, PermissionError(errno.EACCES, "Permission denied", "/data/x.npz"))
    assert (code, err) == (2, "stdcl: error: /data/x.npz: Permission denied\n")
    code, err = _run_with(monkeypatch, capsys, OutputError("/out/r.json", "is a folder; give a file name to write"))
    assert (code, err) == (2, "stdcl: error: /out/r.json: is a folder; give a file name to write\n")
    with pytest.raises(OSError, match="no path here"):  # an OSError about no file is a bug: traceback
        _run_with(monkeypatch, capsys, OSError("no path here"))
    with pytest.raises(PermissionError):  # --debug: the traceback of every error
        _run_with(monkeypatch, capsys, PermissionError(errno.EACCES, "Permission denied", "/x"), "--debug")
    with pytest.raises(OutputError):
        _run_with(monkeypatch, capsys, OutputError("/x", "is a folder"), "--debug")
    monkeypatch.setenv("STDCL_DEBUG", "1")  # the environment variable does what --debug does
    with pytest.raises(OutputError):
        _run_with(monkeypatch, capsys, OutputError("/x", "is a folder"))
    monkeypatch.setenv("STDCL_DEBUG", "0")
    assert _run_with(monkeypatch, capsys, OutputError("/x", "is a folder"))[0] == 2



def test_a_real_command_with_an_output_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    code = cli.main(["data", "synth", "--out", str(blocker / "synthetic"), "--num-samples", "26"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"stdcl: error: {blocker}/synthetic")
    assert f"{blocker} is a file, not a folder" in err[0]


def test_overrides_may_follow_options_in_every_command_that_takes_them(capsys):
    parser = BUILD_PARSER()
    takes = []
    for action in parser._subparsers._group_actions:  # every (sub)command with a KEY=VALUE list
        for name, sub in action.choices.items():
            stack = [(name, sub)]
            while stack:
                path, p = stack.pop()
                if any(a.dest == "overrides" for a in p._actions):
                    takes.append(path)
                for a in p._actions:
                    if isinstance(a, argparse._SubParsersAction):
                        stack += [(f"{path} {n}", s) for n, s in a.choices.items()]
    assert {"train", "eval"} <= set(takes)
    args = cli.parse_args(parser, ["eval", "m.safetensors", "--out", "ev", "data.path=/d", "--split", "val", "a.b=1"])
    assert args.overrides == ["data.path=/d", "a.b=1"] and args.split == "val"
    args = cli.parse_args(parser, ["train", "x.y=0", "--config", "synthetic", "--out", "r", "train.epochs=2"])
    assert args.overrides == ["x.y=0", "train.epochs=2"]  # order kept: later ones win
    for bad in (["eval", "m.safetensors", "--nope"], ["data", "synth", "--out", "x", "a.b=1"]):
        with pytest.raises(SystemExit) as e:
            cli.parse_args(parser, bad)
        assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
