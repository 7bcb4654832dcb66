"""The VNN-LIB 2.0 standard solver interface, and the ``gate`` subcommand.

``nnverify verify QUERY --network NAME=MODEL.onnx [--timeout T]`` prints one
line on stdout: ``sat``, ``unsat``, ``unknown`` or ``timed-out``; on ``sat``
the assignment follows, one block per declared variable in declaration order::

    X Real [1,5]
    0.6
    ...
    Y Real [1,5]
    -0.0184
    ...

(values row-major, one per line).  Errors (missing/extra ``--network``, a
query we cannot handle soundly) go to stderr with exit code 3.  The exit
code otherwise follows ``nnverify run``: 0 unsat, 1 sat, 2 unknown/timed-out.

``nnverify supports --CAPABILITY`` answers the standard's capability queries.
Theory names follow the standard's chapter on theories; we report only what we
verify soundly: one network (no equivalence theories), one input and one
output per network, no hidden nodes, linear arithmetic, real-valued analysis.
"""
from __future__ import annotations

import sys
import time

NAME = "nnverify"
VERSION = "0.1.0"

CAPABILITIES = ("onnx-opset-versions", "onnx-element-types", "onnx-operators", "onnx-operators-unsat-proofs",
                "vnnlib-versions", "hidden-node-theories", "multiple-input-output-theories",
                "multiple-network-theories", "multiple-node-comparison-theories", "arithmetic-complexity-theories",
                "optimised-disjunctive-reasoning", "serialise-assignments", "unsat-proofs")


def capabilities() -> dict[str, list[str]]:
    from bounds.ops.registry import supported_ops
    from verifier.onnx_import import CONSTANT_ONLY_OPS

    ops = sorted(set(supported_ops()) | set(CONSTANT_ONLY_OPS))
    """Capability -> lines printed by ``supports`` (imports the operator registry)."""
    return {
        "onnx-opset-versions": ["7", "21"],
        # float32 is the analysed precision; counterexamples are re-checked on onnxruntime,
        # but bounds are computed over the reals: we only claim the real type.
        "onnx-element-types": ["real"],
        "onnx-operators": ops,
        "onnx-operators-unsat-proofs": [],
        "vnnlib-versions": ["2.0", "2.0"],
        "hidden-node-theories": [],
        "multiple-input-output-theories": ["SNET"],
        "multiple-network-theories": [],
        "multiple-node-comparison-theories": ["MNC"],
        "arithmetic-complexity-theories": ["LIN"],
        "optimised-disjunctive-reasoning": ["false"],
        "serialise-assignments": ["false"],
        "unsat-proofs": ["false"],
    }


def add_commands(commands, positive_float, positive_int) -> None:
    """Register ``verify``, ``supports`` and ``gate`` on the CLI's subparsers
    (imports nothing heavy: ``nnverify --help`` must stay fast)."""
    verify = commands.add_parser("verify", help="VNN-LIB 2.0 standard interface: verify a query",
                                 description="Verify a VNN-LIB (2.0 or 1.0) query; prints sat/unsat/unknown/"
                                             "timed-out and, on sat, the assignment.")
    verify.add_argument("query", metavar="QUERY", help="VNN-LIB query file")
    verify.add_argument("--network", action="append", default=[], metavar="NAME=MODEL",
                        help="map a declared network to an ONNX file (once per network)")
    verify.add_argument("--timeout", type=positive_float, default=60.0, metavar="S", help="seconds (default 60)")
    verify.add_argument("--threads", type=positive_int, metavar="N", help="torch threads")
    verify.add_argument("--debug", action="store_true", help="tracebacks on errors")

    supports = commands.add_parser("supports", help="VNN-LIB 2.0 standard interface: report capabilities")
    group = supports.add_mutually_exclusive_group(required=True)
    for capability in CAPABILITIES:
        group.add_argument(f"--{capability}", dest="capability", action="store_const", const=capability)

    gate = commands.add_parser("gate", help="CI safety gate over a TOML/YAML suite",
                               description="Verify every property of SUITE; exit 0 when all hold, 1 when one is "
                                           "violated, 2 when one is undecided (unless allowed), 3 on errors.")
    gate.add_argument("suite", metavar="SUITE", help="suite file (.toml, .yaml)")
    gate.add_argument("--junit", metavar="F", help="write JUnit XML")
    gate.add_argument("--json", metavar="F", help="write a JSON report")
    gate.add_argument("--allow-undecided", action="store_true", help="undecided properties do not fail the gate")
    gate.add_argument("--threads", type=positive_int, metavar="N", help="torch threads")
    gate.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def dispatch(args) -> int | None:
    """Run one of our commands; ``None`` when ``args.command`` is not ours."""
    if args.command == "verify":
        return cmd_verify(args)
    if args.command == "supports":
        for line in capabilities()[args.capability]:
            print(line)
        return 0
    if args.command == "gate":
        from verifier.gate import main

        return main(args)
    return None


def _format_assignment(query, cex) -> str:
    lines = []
    for tensor in query.tensors():
        values = cex.inputs if tensor.kind == "input" else cex.outputs
        start = tensor.offset
        lines.append(f"{tensor.name} {tensor.element_type} [{','.join(map(str, tensor.shape))}]")
        lines.extend(repr(float(v)) for v in values[start:start + tensor.numel])
    return "\n".join(lines)


def cmd_verify(args) -> int:
    from verifier.api import verify
    from verifier.errors import NNVerifyError
    from vnnlib.errors import VnnlibError
    from vnnlib.v2 import is_v2, parse_query_string

    start = time.monotonic()
    try:
        from vnnlib.parser import read_vnnlib_text

        text = read_vnnlib_text(args.query)
        mapping = {}
        for item in args.network:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise NNVerifyError(f"--network expects NAME=MODEL.onnx, got {item!r}")
            if name in mapping:
                raise NNVerifyError(f"--network {name} given twice")
            mapping[name] = path
        if is_v2(text):
            query = parse_query_string(text, args.query)
            names = [n.name for n in query.networks]
            if len(names) > 1:
                raise NNVerifyError(f"query declares {len(names)} networks ({', '.join(names)}); this solver "
                                    "supports one network per query (supports --multiple-network-theories)")
            network = query.networks[0]
            if len(network.inputs) > 1 or len(network.outputs) > 1:
                raise NNVerifyError(f"network {network.name} declares several inputs or outputs; "
                                    "supported: one of each")
            missing = [n for n in names if n not in mapping]
            extra = [n for n in mapping if n not in names]
            if missing or extra:
                raise NNVerifyError("--network must map exactly the declared networks "
                                    f"({', '.join(names)}); missing: {missing or 'none'}, unknown: {extra or 'none'}")
            spec, model = query.spec, mapping[names[0]]
        else:
            from vnnlib import parse_vnnlib_string

            query = None
            spec = parse_vnnlib_string(text, args.query)
            if len(mapping) != 1:
                raise NNVerifyError("a VNN-LIB 1.0 query needs exactly one --network NAME=MODEL.onnx")
            model = next(iter(mapping.values()))
        remaining = max(1e-3, args.timeout - (time.monotonic() - start))
        result = verify(model, spec, timeout=remaining, threads=args.threads)
    except (NNVerifyError, VnnlibError) as exc:
        print(f"nnverify: error: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:  # internal failure: message on stderr, exit 3
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"nnverify: error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    status = {"timeout": "timed-out", "error": "unknown"}.get(result.status, result.status)
    print(status)
    if result.status == "sat":
        if query is not None:
            print(_format_assignment(query, result.counterexample))
        else:
            from verifier.results import format_vnncomp

            print(format_vnncomp(result).split("\n", 1)[1].rstrip())
    print(f"nnverify: {result.summary()}", file=sys.stderr)
    return result.exit_code
