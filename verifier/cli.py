"""Command line: ``nnverify run MODEL PROP`` and ``nnverify check MODEL PROP``.

Exit codes: 0 verified (unsat), 1 falsified (sat), 2 unknown or timeout,
3 error (bad input, unsupported model, internal failure).  Errors print one
line ``nnverify: error: <message>`` on stderr; ``--debug`` adds the traceback.

torch and onnxruntime are imported lazily, so ``--help`` answers at once.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback

EXIT_ERROR = 3


class _ArgumentParser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; 2 means "unknown" here, so use 3."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"nnverify: error: {message}\n")


class _Interrupted(BaseException):
    """Raised from a SIGINT/SIGTERM handler to unwind to the result writer."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="nnverify",
        description="Verify neural networks (ONNX) against VNN-LIB properties.",
        epilog="exit codes: 0 unsat (verified), 1 sat (falsified), 2 unknown/timeout, 3 error",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)

    run = commands.add_parser("run", help="verify a property", description="Verify PROP on MODEL.")
    run.add_argument("model", metavar="MODEL", help="ONNX model (.onnx or .onnx.gz)")
    run.add_argument("prop", metavar="PROP", help="VNN-LIB property (.vnnlib)")
    run.add_argument("--timeout", type=_positive_float, default=60.0, metavar="S",
                     help="wall-clock budget in seconds, start-up included (default 60)")
    run.add_argument("--results-file", metavar="F", help="write the VNN-COMP result file")
    run.add_argument("--json", metavar="F", help="write the result as JSON")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                     help="torch device (default auto: CUDA when available)")
    run.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    run.add_argument("--threads", type=_positive_int, metavar="N", help="torch threads (default: 1 on CPU, measured fastest on 2 cores)")
    run.add_argument("--no-attack", action="store_true", help="skip falsification (verification only)")
    run.add_argument("--attack-only", action="store_true", help="falsification only (no bound propagation, no BaB)")
    run.add_argument("--no-bab", action="store_true",
                     help="incomplete verification only: attacks, CROWN and alpha-CROWN, no branch and bound")
    run.add_argument("--bab-strategy", choices=["auto", "input-split", "relu-split", "genbab"], default="auto",
                     help="branch-and-bound strategy (default auto: chosen from the instance)")
    run.add_argument("--batch-size", type=_positive_int, metavar="N",
                     help="BaB domains bounded per pass (default: from the network size, adaptive)")
    run.add_argument("--branching", metavar="RULE",
                     help="BaB branching rule: input split coefficient|widest, ReLU split babsr|fsb")
    run.add_argument("--alpha-iterations", type=int, metavar="N",
                     help="alpha-CROWN iterations per BaB pass (0: plain CROWN)")
    run.add_argument("--cuts", choices=("auto", "on", "off"), default="auto",
                     help="BICCOS cutting planes in ReLU-split BaB (default auto: off, measured not to pay yet)")
    run.add_argument("--verbose", action="store_true", help="progress on stderr")
    run.add_argument("--debug", action="store_true", help="tracebacks on errors")

    check = commands.add_parser("check", help="import and parse diagnostics, no verification",
                                description="Import MODEL and parse PROP; report shapes, operators, "
                                            "boxes and clauses, and agreement with onnxruntime.")
    check.add_argument("model", metavar="MODEL")
    check.add_argument("prop", metavar="PROP", nargs="?")
    check.add_argument("--points", type=_positive_int, default=16, metavar="N",
                       help="random points for the onnxruntime comparison (default 16)")
    check.add_argument("--debug", action="store_true", help="tracebacks on errors")

    # verify / supports (VNN-LIB 2.0 standard interface) and gate (CI safety gate)
    from verifier.standard_cli import add_commands

    add_commands(commands, _positive_float, _positive_int)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.no_attack and args.attack_only:
        parser.error("--no-attack and --attack-only exclude each other")
    if args.version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"nnverify {version('nnverify')}")
        except PackageNotFoundError:
            print("nnverify (not installed)")
        return 0
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    from verifier.config import keep_freed_memory

    keep_freed_memory()
    if args.command in ("verify", "supports", "gate"):
        from verifier.standard_cli import dispatch

        return dispatch(args)
    if args.command == "run":
        return _cmd_run(args)
    return _cmd_check(args)


# ---------------------------------------------------------------------- run
def _internal_error(exc: BaseException, debug: bool) -> str:
    """Report an unexpected exception in one line; returns the message."""
    text = str(exc).strip().splitlines()
    message = f"internal error: {type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
    _report_error(message + ("" if debug else " (run with --debug for the traceback)"), debug)
    return message


def _report_error(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"nnverify: error: {message}", file=sys.stderr, flush=True)


def _check_writable(path: str | None) -> None:
    """Fail before verifying when a result file could not be written."""
    from verifier.errors import InputError

    if path is None:
        return
    if os.path.isdir(path):
        raise InputError(f"{path}: cannot write results: is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise InputError(f"{path}: cannot write results: permission denied")
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"{path}: cannot write results: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"{path}: cannot write results: folder {folder} is not writable")


def _writable(path: str) -> bool:
    from verifier.errors import InputError

    try:
        _check_writable(path)
        return True
    except InputError:
        return False


def _write_outputs(result, args) -> bool:
    """Write the requested files; False (after a one-line message) on failure.

    An ``error`` result skips paths already known to be unwritable: that error
    is the one just reported.
    """
    from verifier.results import write_json, write_vnncomp

    ok = True
    for path, writer in ((args.results_file, write_vnncomp), (args.json, write_json)):
        if path is None or (result.status == "error" and not _writable(path)):
            continue
        try:
            writer(result, path)
        except OSError as exc:
            print(f"nnverify: error: {path}: cannot write results: {exc.strerror or exc}", file=sys.stderr)
            ok = False
    return ok


#: Seconds past ``--timeout`` after which the watchdog ends the process.
WATCHDOG_GRACE = 0.5


def _start_watchdog(args, start: float):
    """Guarantee the timeout even while a long native step (one CROWN pass, an
    onnxruntime call) cannot be interrupted: at ``start + timeout + grace`` a
    daemon thread writes a ``timeout`` result and ends the process.

    Returns ``finish()``: call it when the run is over; False means the
    watchdog already fired and is ending the process.
    """
    import threading

    from verifier.results import Result, exit_code

    lock = threading.Lock()
    fired = [False]

    def fire() -> None:
        with lock:
            if fired[0]:
                return
            fired[0] = True
        result = Result("timeout", time=time.monotonic() - start,
                        message="deadline reached inside an uninterruptible step")
        _write_outputs(result, args)
        print(f"nnverify: {result.summary()}", flush=True)
        sys.stderr.flush()
        os._exit(exit_code("timeout"))

    timer = threading.Timer(max(args.timeout, 0.0) + WATCHDOG_GRACE, fire)
    timer.daemon = True
    timer.start()

    def finish() -> bool:
        with lock:
            if fired[0]:
                return False
            fired[0] = True
        timer.cancel()
        return True

    return finish


def _cmd_run(args) -> int:
    from verifier.errors import NNVerifyError
    from verifier.results import Result, exit_code
    from vnnlib.errors import VnnlibError

    start = time.monotonic()
    finish = _start_watchdog(args, start)

    def on_signal(signum, frame):
        raise _Interrupted(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    result = None
    try:
        try:
            _check_writable(args.results_file)
            _check_writable(args.json)
            from verifier.config import VerifyConfig
            from verifier.pipeline import run

            config = VerifyConfig(timeout=args.timeout, device=args.device, seed=args.seed, threads=args.threads,
                                  verbose=args.verbose, debug=args.debug, attack=not args.no_attack, verify=not args.attack_only,
                                  bab=not args.no_bab,
                                  bab_strategy=args.bab_strategy, bab_batch_size=args.batch_size,
                                  bab_branching=args.branching, bab_alpha_iterations=args.alpha_iterations,
                                  bab_cuts={"auto": None, "on": True, "off": False}[args.cuts])
            result = run(args.model, args.prop, config)
        except (NNVerifyError, VnnlibError) as exc:
            _report_error(str(exc), args.debug)
            result = Result("error", time=time.monotonic() - start, message=str(exc))
        except _Interrupted as interrupt:
            # SIGTERM: an outer clock ran out (VNN-COMP); SIGINT: the user stopped it
            status = "timeout" if interrupt.signum == signal.SIGTERM else "unknown"
            name = signal.Signals(interrupt.signum).name
            print(f"nnverify: interrupted by {name}", file=sys.stderr, flush=True)
            result = Result(status, time=time.monotonic() - start, message=f"interrupted by {name}")
        except MemoryError:
            _report_error("out of memory", args.debug)
            result = Result("error", time=time.monotonic() - start, message="out of memory")
        except Exception as exc:  # an internal failure still ends with a result and exit code 3
            result = Result("error", time=time.monotonic() - start, message=_internal_error(exc, args.debug))
        if not finish():  # the watchdog is writing its timeout result and ending the process
            time.sleep(60)
        written = _write_outputs(result, args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"nnverify: {result.summary()}", flush=True)
    return exit_code(result.status) if written else EXIT_ERROR


# -------------------------------------------------------------------- check
def _cmd_check(args) -> int:
    from verifier.errors import NNVerifyError
    from vnnlib.errors import VnnlibError

    try:
        _check(args)
        return 0
    except (NNVerifyError, VnnlibError) as exc:
        _report_error(str(exc), args.debug)
    except Exception as exc:
        _internal_error(exc, args.debug)
    return EXIT_ERROR


def _check(args) -> None:
    from collections import Counter

    from verifier.config import VerifyConfig
    from verifier.pipeline import load_graph, parse_property
    from verifier.validate import OrtModel, check_spec_fits, read_model_bytes

    model = OrtModel.load(args.model, read_model_bytes(args.model))
    print(f"model      {args.model}")
    print(f"  onnxruntime: input {model.input_name!r} {list(model.input_shape)} ({model.num_inputs} values), "
          f"{model.num_outputs} outputs, batched evaluation: {'yes' if model.batched else 'no'}")
    spec = None
    if args.prop:
        spec = parse_property(args.prop)
        rows = sum(c.num_rows for p in spec.properties for c in p.clauses)
        print(f"property   {args.prop}")
        print(f"  {spec.num_inputs} inputs, {spec.num_outputs} outputs, {len(spec.properties)} boxes, "
              f"{spec.num_clauses} clauses, {rows} rows")
        check_spec_fits(spec, model.num_inputs, model.num_outputs, args.model)
    graph = load_graph(args.model, VerifyConfig(device="cpu"))
    counts = Counter(n.op.op_type for n in graph.nodes)
    print(f"graph      {len(graph.nodes)} nodes, input {list(graph.input_shape)}, output {list(graph.output_shape)}"
          + (f", input layout {graph.input_layout}" if graph.input_layout != "as-is" else ""))
    print("  operators: " + ", ".join(f"{op} x{n}" for op, n in sorted(counts.items())))
    import numpy as np

    from verifier.onnx_import import check_against_onnxruntime

    if spec is not None:
        lower, upper = spec.properties[0].box.lower, spec.properties[0].box.upper
    else:
        lower, upper = -np.ones(model.num_inputs), np.ones(model.num_inputs)
    max_diff = check_against_onnxruntime(graph, args.model, lower, upper, args.points)
    print(f"onnxruntime agreement: max |graph - ort| / (1 + |ort|) = {float(max_diff):.3g} on {args.points} points of "
          f"{'the first box' if spec is not None else '[-1, 1]^n'}")
