"""Every command's help, read as a newcomer would: what to type, in words, with examples."""

from __future__ import annotations

import re

import pytest

from tcmtasks.cli.app import command

PYTHON_TYPES = re.compile(r"<(list\[|str|int|bool|path|float|Path)|\blist\[|NoneType")
DANGLING = re.compile(r"\w\s+[.,;:](\s|$)")  # "Where to install ." : a value went missing


def _helps(monkeypatch, capsys) -> dict[str, str]:
    monkeypatch.setenv("COLUMNS", "100")
    cmd = command()
    out = {}
    for path in [[], *([n] for n in cmd.commands)]:
        with pytest.raises(SystemExit) as exit_:
            cmd.main([*path, "--help"], prog_name="tcm")
        assert exit_.value.code == 0
        out[" ".join(["tcm", *path])] = capsys.readouterr().out
    return out


def test_every_help_names_values_in_words_and_shows_examples(monkeypatch, capsys):
    helps = _helps(monkeypatch, capsys)
    assert len(helps) >= 12  # tcm and its commands
    for name, text in helps.items():
        assert f"Usage: {name}" in text, name
        assert not PYTHON_TYPES.search(text), (name, PYTHON_TYPES.search(text))
        flat = re.sub(r"[│╭╮╰╯─]", " ", text)
        assert not DANGLING.search(flat), (name, DANGLING.search(flat))
        if name != "tcm":
            assert "Example" in text, f"{name} --help has no example"
    assert "Exit codes" in helps["tcm"]


def test_options_that_go_together_are_grouped(monkeypatch, capsys):
    helps = _helps(monkeypatch, capsys)
    assert "Selection" in helps["tcm list"] and "Registry" in helps["tcm push"]
