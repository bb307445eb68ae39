"""What ``vaelab <command> --help`` says cites the literature, not the homework the project grew out of."""

from __future__ import annotations

import pytest

from vaelab.cli import build_parser, commands

pytestmark = pytest.mark.contract


@pytest.mark.parametrize("name", sorted(commands()))
def test_a_commands_help_cites_papers_not_the_homework(name, capsys):
    with pytest.raises(SystemExit):
        build_parser(name).parse_args([name, "--help"])
    text = capsys.readouterr().out
    assert f"usage: vaelab {name}" in text and "homework" not in text.lower(), text


def test_the_study_descriptions_cite_their_papers():
    assert "Kingma & Welling (2013" in commands()["compare"].description
    assert "Burda, Grosse & Salakhutdinov (2015)" in commands()["bounds"].description
