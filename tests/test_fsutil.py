"""Staging folders of killed writers: the next writer of the same output removes them, and
never the folder of a writer that still runs (live pid, lock held, another host or user)."""

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxslm.errors import JaxslmError
from jaxslm.fsutil import (
    atomic_directory,
    atomic_write_text,
    clear_stale_staging,
    prepare_output,
    prepare_output_file,
    prepare_output_folder,
)

WRITER = textwrap.dedent(
    """
    import os, sys, time
    from jaxslm.fsutil import staging_directory

    with staging_directory(sys.argv[1]) as staging:
        (staging / "weights.bin").write_bytes(bytes(100_000))
        print(staging, flush=True)
        if sys.argv[2] == "exit":
            os._exit(0)  # dies without cleaning up, as a killed process does
        time.sleep(600)
    """
)


FILE_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from jaxslm.fsutil import atomic_file

    with atomic_file(sys.argv[1]) as staging:
        staging.write_bytes(bytes(100_000))
        print(staging, flush=True)
        if sys.argv[2] == "exit":
            os._exit(0)
        time.sleep(600)
    """
)


def _start_writer(out: Path, then: str, script: str = WRITER) -> tuple[subprocess.Popen, Path]:
    """A writer process that stages `out` and then exits at once or waits to be killed."""
    writer = subprocess.Popen(
        [sys.executable, "-c", script, str(out), then],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    staging = Path(writer.stdout.readline().strip())
    assert staging.parent == out.parent and staging.exists()
    return writer, staging


def _dead_writers_folder(out: Path) -> Path:
    writer, staging = _start_writer(out, "exit")
    assert writer.wait(timeout=60) == 0
    return staging


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_a_killed_writers_folder_is_removed_and_a_live_ones_kept(tmp_path, capsys):
    out = tmp_path / "model"
    writer, staging = _start_writer(out, "wait")
    try:
        assert clear_stale_staging(out) == [] and staging.is_dir()  # the writer still runs
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    assert staging.is_dir()  # nothing cleans up after SIGKILL
    with atomic_directory(out) as new:
        (new / "done").write_text("yes")
    assert (out / "done").read_text() == "yes" and _leftovers(out) == []
    err = capsys.readouterr().err
    assert f"removed stale staging folder {staging}" in err and f"pid {writer.pid}" in err


def test_only_the_same_outputs_folders_are_touched(tmp_path):
    staging = _dead_writers_folder(tmp_path / "model")
    assert clear_stale_staging(tmp_path / "other") == [] and staging.is_dir()
    assert clear_stale_staging(tmp_path / "model") == [staging] and not staging.exists()


def test_a_folder_whose_lock_is_held_is_kept(tmp_path):
    """A writer in another pid namespace of this host: its pid looks dead here, its lock
    does not."""
    out = tmp_path / "model"
    staging = _dead_writers_folder(out)
    descriptor = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        assert clear_stale_staging(out) == [] and staging.is_dir()
    finally:
        os.close(descriptor)
    assert clear_stale_staging(out) == [staging]


def test_another_hosts_or_users_folder_is_kept(tmp_path):
    out = tmp_path / "model"
    staging = _dead_writers_folder(out)
    tag, suffix = staging.name.rsplit("-", 1)
    elsewhere = staging.with_name(f"{tag.split('@')[0]}@elsewhere.example-{suffix}")
    staging.rename(elsewhere)
    assert clear_stale_staging(out) == [] and elsewhere.is_dir()
    if os.geteuid() == 0:  # only root can hand a folder to another user
        elsewhere.rename(staging)
        os.chown(staging, os.geteuid() + 4321, -1)
        assert clear_stale_staging(out) == [] and staging.is_dir()


def test_an_old_output_comes_back_if_its_replacement_never_arrived(tmp_path, capsys):
    """A writer killed between its two renames: the output is in `.old`, the new one in
    `.partial`; the output as it was before the interrupted write comes back."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "kept").write_text("previous output")
    staging = _dead_writers_folder(out)
    retired = staging.with_name(staging.name.replace(".partial-", ".old-"))
    out.rename(retired)
    prepare_output(out, overwrite=True)
    assert (out / "kept").read_text() == "previous output" and _leftovers(out) == []
    assert f"restored {out}" in capsys.readouterr().err


def test_untagged_folders_of_older_versions_are_reported_not_removed(tmp_path, capsys):
    legacy = tmp_path / ".model.partial-abc_1234"
    legacy.mkdir()
    assert clear_stale_staging(tmp_path / "model") == [] and legacy.is_dir()
    assert f"{legacy} looks like an interrupted write" in capsys.readouterr().err


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(JaxslmError, match="file is a file; choose another output path"):
        prepare_output(tmp_path / "file" / "sub" / "out", overwrite=False)


def test_an_output_in_a_missing_folder_is_refused_unless_parents_are_made(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(JaxslmError, match="new does not exist; make it first"):
        prepare_output(out, overwrite=False, make_parents=False)
    assert prepare_output(out, overwrite=False) == out and not out.parent.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_output_in_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(JaxslmError, match="ro is not writable"):
        prepare_output(folder / "out", overwrite=False)


def test_a_killed_file_writers_staging_is_removed_and_a_live_ones_kept(tmp_path, capsys):
    out = tmp_path / "results.json"
    out.write_text("previous")
    writer, live = _start_writer(out, "wait", FILE_WRITER)
    try:
        atomic_write_text(out, "new")
        assert out.read_text() == "new" and live.is_file()  # its writer still runs
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    writer, dead = _start_writer(out, "exit", FILE_WRITER)  # it removes the killed one's file
    assert writer.wait(timeout=60) == 0 and out.read_text() == "new" and not live.exists()
    descriptor = os.open(dead, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # as a writer in another pid namespace
        assert clear_stale_staging(out) == [] and dead.is_file()
    finally:
        os.close(descriptor)
    atomic_write_text(out, "newer")
    assert out.read_text() == "newer" and _leftovers(out) == []
    assert f"removed stale staging file {dead}" in capsys.readouterr().err


def test_output_files_and_folders_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(JaxslmError, match="is a folder; give the path of a file"):
        prepare_output_file(tmp_path)
    with pytest.raises(JaxslmError, match="file is a file; choose another output path"):
        prepare_output_file(tmp_path / "file" / "results.json")
    with pytest.raises(JaxslmError, match="file is a file; choose another output path"):
        prepare_output_folder(tmp_path / "file")
    assert prepare_output_file(tmp_path / "file") == tmp_path / "file"  # replaced when written
    assert prepare_output_folder(tmp_path / "new" / "sweep") == tmp_path / "new" / "sweep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_outputs_in_a_read_only_folder_are_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    with pytest.raises(JaxslmError, match="ro is not writable"):
        prepare_output_file(folder / "results.json")
    with pytest.raises(JaxslmError, match="ro is not writable"):
        prepare_output_folder(folder)


def test_folders_written_whole_get_a_plain_folders_mode(tmp_path):
    """0777 less the umask, as `mkdir` gives: not mkdtemp's 0700, which would hide a corpus
    or checkpoint from the other users of a shared cluster."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "a").write_text("a")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
