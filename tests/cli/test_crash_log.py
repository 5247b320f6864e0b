"""An unexpected failure prints one line naming what failed and the log file that holds its traceback
(docs/design.md §2, "The error line"); the traceback never reaches the terminal."""

from __future__ import annotations

import os

import pytest


def _boom():
    raise RuntimeError("the tracking store said no\nsecond line")


def test_unexpected_error_is_one_line_and_its_traceback_is_in_the_named_file(workdir, monkeypatch, capsys):
    import ee_search.cli as cli_module

    monkeypatch.setattr(cli_module, "app", _boom)
    with pytest.raises(SystemExit) as stopped:
        cli_module.main()
    assert stopped.value.code == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert lines[0].startswith("error: RuntimeError: the tracking store said no second line; details in ")
    path = lines[0].rsplit("details in ", 1)[1]
    assert path.startswith(str(workdir / ".ee-search" / "logs"))
    text = open(path, encoding="utf-8").read()
    assert "Traceback (most recent call last)" in text and "in _boom" in text


def test_a_folder_that_cannot_be_written_falls_back_to_the_next(monkeypatch, tmp_path):
    from ee_search.cli import crash_log

    blocker = tmp_path / "file"  # a file where the folder should be: mkdir fails, as on a read-only disk
    blocker.write_text("")
    monkeypatch.setattr(crash_log, "log_folders", lambda: [blocker / "logs", tmp_path / "fallback"])
    line = crash_log.crash_line("writing the spool failed", ValueError("x"))
    path = line.rsplit("details in ", 1)[1]
    assert path.startswith(str(tmp_path / "fallback")) and os.path.isfile(path)


def test_no_folder_at_all_still_gives_one_line(monkeypatch, tmp_path):
    from ee_search.cli import crash_log

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setattr(crash_log, "log_folders", lambda: [blocker / "logs"])
    line = crash_log.crash_line("uploading failed", ValueError("x"))
    assert line.startswith("error: uploading failed; its traceback could not be saved (")
    assert "\n" not in line


def test_a_logged_traceback_stays_one_line_and_goes_to_a_file(workdir, capsys):
    import logging

    from ee_search.cli.crash_log import TracebacksToFile

    handler = logging.StreamHandler()
    handler.addFilter(TracebacksToFile())
    logger = logging.getLogger("test.crash_log")
    logger.addHandler(handler)
    try:
        _boom()
    except RuntimeError:
        logger.warning("Trial %d failed", 3, exc_info=True)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("Trial 3 failed (details in ")
    assert "in _boom" in open(err.strip().rsplit("details in ", 1)[1].rstrip(")"), encoding="utf-8").read()
