"""DVC remotes are verified: an object corrupted on the remote is refused on pull, not checked out."""

import configparser
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, check=check)


def test_the_projects_remotes_verify_what_they_download():
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    remotes = [s for s in config.sections() if s.startswith("'remote ")]
    assert remotes and all(config[s].get("verify") == "true" for s in remotes)


@pytest.mark.parametrize("verify", [True, False])
def test_a_corrupted_remote_object_is_refused_on_pull(tmp_path, verify):
    project, remote = tmp_path / "project", tmp_path / "remote"
    project.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    _dvc("init", "-q", cwd=project)
    (project / "corpus.txt").write_text("vibration detects bearing wear\n")
    _dvc("add", "-q", "corpus.txt", cwd=project)
    _dvc("remote", "add", "-d", "team", str(remote), cwd=project)
    _dvc("remote", "modify", "team", "verify", str(verify).lower(), cwd=project)
    _dvc("push", "-q", cwd=project)
    (stored,) = [p for p in remote.rglob("*") if p.is_file()]
    stored.write_text("flipped bits\n")  # same path, wrong content
    for path in (project / ".dvc" / "cache", project / "corpus.txt"):
        subprocess.run(["rm", "-rf", str(path)], check=True)

    pulled = _dvc("pull", cwd=project, check=False)
    if verify:  # the project's setting: the download is hashed and refused
        assert pulled.returncode != 0 and not (project / "corpus.txt").exists()
    else:  # the control: without it DVC checks the corrupted object out as if it were the file
        assert pulled.returncode == 0 and (project / "corpus.txt").read_text() == "flipped bits\n"
