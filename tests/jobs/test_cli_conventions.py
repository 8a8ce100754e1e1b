"""The command line's conventions: `--version`, each subcommand's own usage on a bad flag, configuration errors
before the model stack imports, and exit 2 for a missing input in every subcommand."""

import json
import subprocess
import sys

import pytest

from diffgen import __version__
from diffgen.jobs.api import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from diffgen.jobs.cli import main
from tests.conftest import REPO

SUBCOMMANDS = ("run", "validate", "submit", "verify", "qc", "utility", "sweep")


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == EXIT_OK
    assert capsys.readouterr().out.strip() == f"diffgen {__version__}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_a_bad_flag_shows_the_subcommands_usage(command, capsys):
    required = ["--grid", "sampler.steps=1,2"] if command == "sweep" else []
    with pytest.raises(SystemExit) as stopped:
        main([command, "x", *required, "--no-such-flag"])
    assert stopped.value.code == EXIT_INVALID
    err = capsys.readouterr().err
    assert err.startswith(f"usage: diffgen {command} "), err
    assert "unrecognized arguments: --no-such-flag" in err


# Runs in a fresh interpreter: which modules a --set typo pulled in, and the CPU it took (the wall time of
# a shared machine says little; the CPU does not depend on what else runs).
_PROBE = """
import json, resource, sys
from diffgen.jobs.cli import main
code = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
heavy = sorted(m for m in ("torch", "ray", "diffusers", "transformers") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


@pytest.mark.parametrize("command", ["run", "validate", "submit"])
def test_a_set_typo_is_reported_before_the_model_stack_imports(command):
    job = str(REPO / "examples" / "default" / "job.yaml")
    argv = [command, job, "--set", "sampler.stepz=3"] + (["--address", "http://127.0.0.1:9"] * (command == "submit"))
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, cwd=REPO,
                          timeout=120)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == EXIT_INVALID and "sampler.stepz: Extra inputs are not permitted" in done.stderr
    assert result["heavy"] == []
    assert result["cpu_s"] < 2.0, result


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_a_missing_input_file_exits_2(command, tmp_path, caplog):
    missing = str(tmp_path / "no-such-file")
    extra = {"submit": ["--address", "http://127.0.0.1:9"], "utility": ["--real", missing],
             "sweep": ["--grid", "sampler.steps=1,2"]}.get(command, [])  # fmt: skip
    assert main([command, missing, *extra]) == EXIT_INVALID
    if command != "utility":  # utility first refuses the settings the missing output cannot give it
        assert "no-such-file" in caplog.text


def test_verify_missing_trust_anchors_exit_2_and_a_file_that_is_no_image_fails_its_check(tmp_path):
    (tmp_path / "notes.txt").write_text("not a png")
    assert main(["verify", str(tmp_path / "notes.txt"), "--trust-anchors", str(tmp_path / "ca.pem")]) == EXIT_INVALID
    assert main(["verify", str(tmp_path / "notes.txt")]) == EXIT_FAILED  # read, and not a PNG: a failed check


@pytest.mark.parametrize("flags, level", [([], "INFO"), (["-q"], "WARNING"), (["--log-level", "error"], "ERROR"),
                                          (["-v"], "DEBUG")])  # fmt: skip
def test_quiet_and_log_level(flags, level):
    probe = ("import logging, sys; from diffgen.jobs.cli import build_parser, configure_logging, parse_arguments; "
             "a = parse_arguments(build_parser(), sys.argv[1:]); configure_logging(a.verbose, a.log_level); "
             "print(logging.getLevelName(logging.getLogger().level))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, "verify", "x.png", *flags], capture_output=True, text=True,
                          cwd=REPO, timeout=120)  # fmt: skip
    assert done.stdout.strip() == level, done.stderr


def test_a_progress_line_on_a_closed_stream_never_fails_the_run():
    """A handler left on a stream that has since closed (a test's capture, a pipe gone) reports through
    logging's handleError instead of raising into the run."""
    import io
    import logging

    from diffgen.jobs.cli import ProgressHandler

    stream = io.StringIO()
    handler = ProgressHandler(stream, logging.Formatter("%(message)s"))
    stream.close()
    record = logging.LogRecord("diffgen.progress", logging.INFO, __file__, 1, "progress: 1/2", None, None)
    handler.emit(record)  # must not raise
