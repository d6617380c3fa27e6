"""The `ferhpo` command line: a table of subcommands, one module and one handler each.

The command modules are the only code that prints for the user and picks exit
codes: 0 success, 2 bad usage or bad input (one line on stderr), 1 internal error,
130 interrupted. Heavy imports (keras, optuna) happen inside handlers, so
`ferhpo --help` and `ferhpo data summary` stay instant.
"""

from __future__ import annotations

import os
import sys
import traceback

from ferhpo import __version__
from ferhpo.cli import baseline, bench, confirm, data, ensemble, export, predict, report, search, status
from ferhpo.cli.common import PROG, Command, Parser
from ferhpo.errors import FerhpoError
from ferhpo.redact import redact

COMMANDS: tuple[Command, ...] = (
    data.COMMAND,
    baseline.COMMAND,
    search.COMMAND,
    report.COMMAND,
    status.COMMAND,
    confirm.COMMAND,
    ensemble.COMMAND,
    export.COMMAND,
    predict.COMMAND,
    bench.COMMAND,
)


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Reproduce a FER2013 DenseNet/ResNet study, then beat it with architecture and hyperparameter search.",
        epilog="Exit codes: 0 success, 2 bad usage or input, 1 internal error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, required=True)
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help[0].upper() + cmd.help[1:] + ".")
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit code (never raises for user errors)."""
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) is not for users.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        args = build_parser().parse_args(argv)
        return args._run(args)
    except FerhpoError as exc:
        print(f"{PROG}: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ferhpo data summary | head`: the reader left; not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: keep the traceback for the report
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        print(f"{PROG}: internal error: {type(exc).__name__}: {redact(str(exc))} (please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
