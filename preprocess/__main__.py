"""`python -m preprocess [sample|adopt] ...`: the build command, or one of its helpers."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from common.cli import run_main

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sample"]:
        from preprocess import sample

        return run_main(sample.main, argv[1:])
    if argv[:1] == ["adopt"]:
        from preprocess import adopt

        return run_main(adopt.main, argv[1:])
    from preprocess import cli

    return run_main(cli.main, argv)


if __name__ == "__main__":
    sys.exit(main())
