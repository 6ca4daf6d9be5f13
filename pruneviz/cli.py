"""The ``pruneviz`` console command. ``pruneviz report``: the criterion race as a report folder.

    pruneviz report --model cnn --out reports/cnn --seeds 3
    pruneviz report --checkpoint model.pt --data data.pt --out reports/mine --workers 2
    pruneviz report --model cnn --out reports/cnn --scheduler tcp://10.0.0.5:8786

``--checkpoint``/``--data`` files: see :mod:`pruneviz.core.report_inputs` (plain tensors, loaded with
``weights_only=True``). Exit status: 0 done, 2 bad input (a message says what and how to fix it), 130
interrupted; nothing is left half-written either way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

DASK_TIMEOUT_S = 5.0


def _floats(text: str) -> list[float]:
    out = []
    for part in text.replace(" ", ",").split(","):
        if part:
            try:
                out.append(float(part))
            except ValueError:
                raise argparse.ArgumentTypeError(f"{part!r} is not a number (e.g. --sparsities 0.5,0.75,0.9)") from None
    return out


def _names(text: str) -> list[str]:
    return [p for p in text.replace(" ", ",").split(",") if p]


def build_parser() -> argparse.ArgumentParser:
    from .core.race import DEFAULT_SPARSITIES, known_criteria
    from .core.report import REPORT_SCOPES

    parser = argparse.ArgumentParser(prog="pruneviz", description="See and measure neural-network pruning.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser(
        "report", help="race the pruning criteria on a model and write a ShrinkBench-style report folder",
        description="Race pruning criteria x scopes x sparsities x seeds on a demo model or your saved model, and "
        "write report.html, results.csv, latency.csv and summary.md into --out.")
    src = rep.add_argument_group("model and data (one of)")
    src.add_argument("--model", metavar="NAME", help="a demo model: cnn, mlp or detector")
    src.add_argument("--checkpoint", metavar="PATH", help="your model file (pruneviz.report.save_model)")
    src.add_argument("--data", metavar="PATH", help="your data file (pruneviz.report.save_data); with --checkpoint")
    rep.add_argument("--out", required=True, metavar="DIR", help="the report folder to write")
    rep.add_argument("--overwrite", action="store_true", help="replace --out if it exists and is not empty")
    rep.add_argument("--criteria", type=_names, metavar="A,B,...",
                     help=f"criteria to race (default: all that can run): {', '.join(known_criteria())}; random and "
                     "magnitude are always included")
    rep.add_argument("--scopes", type=_names, default=list(REPORT_SCOPES), metavar="A,B",
                     help="global, layer, structured (default: all three)")
    rep.add_argument("--sparsities", type=_floats, default=list(DEFAULT_SPARSITIES), metavar="S,S,...",
                     help="sparsities in [0, 1] (default: 0.1 ... 0.9, 0.95)")
    rep.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds per point (default 3)")
    rep.add_argument("--subset", type=int, metavar="N",
                     help="evaluate each seed on a different stratified subset of N samples (default: all)")
    par = rep.add_mutually_exclusive_group()
    par.add_argument("--workers", type=int, metavar="N", help="run the race in a local pool of N processes")
    par.add_argument("--scheduler", metavar="ADDRESS", help="run it on an existing Dask scheduler (tcp://host:port)")
    rep.add_argument("--threads", type=int, default=1, metavar="N",
                     help="threads for the CPU latency measurement (the race runs each task on one thread)")
    rep.add_argument("--no-latency", action="store_true", help="skip the measured CPU speed-up")
    rep.add_argument("--title", help="the report's title")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _probe_tcp(address: str, timeout: float) -> None:
    """Fail at once when nothing listens at a tcp:// address (Dask would retry until its timeout)."""
    import socket
    from urllib.parse import urlsplit

    from .core.report import ReportError

    if "://" not in address:
        address = "tcp://" + address
    parts = urlsplit(address)
    if parts.scheme != "tcp" or not parts.hostname:
        return  # other protocols (tls, inproc, ucx): let Dask judge
    try:
        port = parts.port or 8786
        with socket.create_connection((parts.hostname, port), timeout=min(timeout, 3.0)):
            return
    except ValueError:
        raise ReportError(f"--scheduler {address!r} is not an address such as tcp://127.0.0.1:8786.") from None
    except OSError as e:
        raise ReportError(f"no Dask scheduler answers at {address!r} ({e.strerror or type(e).__name__}). Start one "
                          "(`dask scheduler`, then `dask worker ADDRESS`), check the address, or drop --scheduler to "
                          "run in this process.") from None


def connect_dask(address: str, timeout: float = DASK_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` on ``address``, or a :class:`ReportError` within about ``timeout`` seconds."""
    from .core.report import ReportError

    _probe_tcp(address, timeout)
    try:
        from distributed import Client
    except ImportError:
        raise ReportError("--scheduler needs Dask: pip install 'pruneviz[sweep]' (dask and distributed).") from None
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except Exception as e:  # noqa: BLE001 - refused, timed out, a malformed address
        raise ReportError(f"no Dask scheduler answers at {address!r} within {timeout:g} s ({type(e).__name__}: {e}). "
                          "Start one (`dask scheduler`, then `dask worker ADDRESS`), check the address, or drop "
                          "--scheduler to run in this process.") from None
    try:
        from .core.race_tasks import warm_up

        client.run(warm_up)  # every worker imports what the first task needs, in parallel
    except Exception as e:  # noqa: BLE001 - workers without pruneviz: say so now, not after the first task
        client.close()
        raise ReportError(f"the Dask workers at {address!r} cannot run pruneviz ({type(e).__name__}: {e}): install "
                          "pruneviz (and the model's module) in the workers' environment.") from None
    return client


def _progress(quiet: bool) -> tuple[Callable[[int, int, dict], None] | None, Callable[[], None]]:
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(done: int, total: int, info: dict) -> None:
        phase = info.get("phase", "race")
        bar = bars.get(phase)
        if bar is None:
            for other in bars.values():
                other.close()
            unit = "evaluation" if phase == "race" else "model"
            bar = bars[phase] = tqdm(total=total, desc=phase, unit=unit, file=sys.stderr, dynamic_ncols=True)
        bar.n = done
        if info.get("criterion"):
            bar.set_postfix_str(f"{info['criterion']} · {info.get('scope', '')}", refresh=False)
        bar.refresh()

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close


def _report(args: argparse.Namespace) -> int:
    from .core.race import check_grid, resolve_criterion
    from .core.report import ReportError, check_out
    from .core.report_inputs import demo_input, file_input
    from .report import make_report

    if args.model is not None and (args.checkpoint or args.data):
        raise ReportError("pass either --model NAME (a demo) or --checkpoint PATH --data PATH, not both.")
    if args.model is None and not (args.checkpoint and args.data):
        raise ReportError("say what to report on: --model NAME (cnn, mlp, detector), or --checkpoint PATH and "
                          "--data PATH for your own model.")
    check_out(args.out, args.overwrite)  # cheap checks first: nothing runs on bad input
    check_grid(args.sparsities, args.seeds, args.scopes)
    for c in args.criteria or []:
        resolve_criterion(c)
    for name, v in (("--workers", args.workers), ("--threads", args.threads), ("--subset", args.subset)):
        if v is not None and v < 1:
            raise ReportError(f"{name} must be at least 1, got {v}.")
    client, executor, label = None, None, "in-process"
    if args.scheduler:
        client = connect_dask(args.scheduler)
        executor, label = client.get_executor(), f"Dask scheduler {args.scheduler}"
    elif args.workers and args.workers > 1:
        label = f"{args.workers} worker processes"
    progress, close = _progress(args.quiet)
    try:
        source = demo_input(args.model) if args.model is not None else file_input(args.checkpoint, args.data)
        report = make_report(
            source, out=args.out, criteria=args.criteria, scopes=args.scopes, sparsities=args.sparsities,
            seeds=args.seeds, overwrite=args.overwrite, executor=executor, workers=args.workers,
            evaluator_kwargs={"subset_size": args.subset} if args.subset else None, latency=not args.no_latency,
            threads=args.threads, progress=progress, title=args.title, executor_label=label)
    finally:
        close()
        if client is not None:
            client.close()
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {report.folder} ({', '.join(report.files)}) in {report.elapsed:.1f} s: open "
          f"{report.files.get('report.html', report.folder)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .core.errors import PrunevizError

    try:
        if args.command == "report":
            return _report(args)
    except PrunevizError as e:
        print(f"pruneviz {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pruneviz {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
