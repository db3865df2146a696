"""Running the CLI in tests: exit code and output, never a traceback."""
from portraitrig.cli import main


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of ``portraitrig ARGS``; fails the test on a traceback."""
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def error_line(err):
    """The one error line (argparse adds a usage line before its own)."""
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    return lines[0]
