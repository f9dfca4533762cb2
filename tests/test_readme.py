"""README.md's examples run as doctests, and its commands match CI."""
import doctest
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_doctests():
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def test_ci_runs_the_readme_test_command():
    text = (ROOT / "README.md").read_text()
    marker = text.index("<!-- ci: test-command -->")
    cmd = text[marker:].splitlines()[2]
    assert "pytest" in cmd
    out = subprocess.run(["awk", "/<!-- ci: test-command -->/{getline; getline; print; exit}",
                          str(ROOT / "README.md")], capture_output=True, text=True, check=True).stdout.strip()
    assert out == cmd
    assert "eval \"$cmd\"" in (ROOT / ".ci" / "run").read_text()
