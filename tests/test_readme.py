"""README.md's examples run as doctests, and its commands match CI."""
import doctest
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_doctests():
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5
    assert result.failed == 0


def _readme_test_command(readme: str) -> str:
    return readme[readme.index("<!-- ci: test-command -->"):].splitlines()[2]


def test_ci_runs_the_readme_test_command():
    """.ci/run spells out README's test line (install, then pytest) and checks the two agree."""
    cmd = _readme_test_command((ROOT / "README.md").read_text())
    assert cmd == 'pip install -e ".[test]" && python -m pytest'
    run = (ROOT / ".ci" / "run").read_text().splitlines()
    assert f"CMD='{cmd}'" in run
    assert run[-2:] == ['pip install -e ".[test]"', "python -m pytest"]


def test_ci_refuses_a_readme_whose_test_command_differs(tmp_path):
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    readme = (ROOT / "README.md").read_text()
    cmd = _readme_test_command(readme)
    (tmp_path / "README.md").write_text(readme.replace(cmd, cmd + " -x", 1))
    r = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "differs from .ci/run's" in r.stderr
