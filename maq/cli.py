"""`maq` command line: one entry point, subcommands registered by the modules that own them.

Each module in SUBCOMMAND_MODULES defines ``register(subparsers)`` which adds its subcommand(s) and sets
``func`` on the parser to a callable ``func(args) -> int``. Modules must not import torch at import time.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from maq.errors import MAQError

SUBCOMMAND_MODULES = (
    "maq.runtime.info",        # maq info
    "maq.runtime.models",      # maq fetch
    "maq.converter.cli",       # maq convert
    "maq.runtime.cli",         # maq chat / generate / perplexity
    "maq.runtime.inspect",     # maq inspect
    "maq.evaluation.cli",      # maq eval
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maq",
        description="MAQ: memory-aligned 2/8-bit mixed-precision quantization of Llama-family models, "
                    "and a CPU runtime for the resulting GGUF files.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                # a stale install (made before that package existed): say so, never drop a subcommand silently
                raise MAQError(f"{name}: module not found in the installed maq package (from {__file__}); "
                               "reinstall it: pip install -e . (or pip install .)") from exc
            raise
        module.register(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so the same cleanup runs (temporary output removed)."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _install_sigterm() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)
    # A job started in the background of a script inherits SIGINT as ignored, and Python then installs no
    # KeyboardInterrupt handler: install it explicitly, so `kill -INT` stops it with the usual cleanup.
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. User errors (MAQError) print one line and return 1; Ctrl-C prints one line and
    returns 130 (128 + SIGINT, as a shell reports it), wherever it lands, argument parsing and imports included."""
    _install_sigterm()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except MAQError as exc:
        _close_progress_bars()
        print(f"maq: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        _close_progress_bars()
        if isinstance(exc, _Terminated):
            print("maq: terminated", file=sys.stderr)
            return 143
        print("maq: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: BaseException) -> str:
    """The error message on one line (a message quoting a file's content may hold newlines)."""
    return " ".join(str(exc).split("\n")).strip() or type(exc).__name__


def _close_progress_bars() -> None:
    """Close any open tqdm bar so that the error line starts on a line of its own."""
    tqdm_mod = sys.modules.get("tqdm")
    if tqdm_mod is None:
        return
    try:
        for bar in list(getattr(tqdm_mod.tqdm, "_instances", ())):
            bar.close()
    except Exception:  # noqa: BLE001 - cosmetic; never hide the error being reported
        pass


if __name__ == "__main__":
    sys.exit(main())
