"""Where the compiled kernel spends its time, by function and by instruction, with Linux perf.

numba's machine code has no symbols that perf can read: this script runs a scenario after
writing ``/tmp/perf-<pid>.map`` (perf's convention for code made at run time), which names
every function of numba's JIT engine by its Python name, and can save the machine code of
chosen functions, so that each instruction's samples can be counted after the process has
ended (perf reads the code of a JIT only while it runs).

    perf record -e cpu-clock -F 10000 -o perf.data \\
        python benchmarks/perf_kernel.py --scenario engine --runs 15 --dump fill_wants,simulate
    perf report -i perf.data --no-children --sort symbol
    python benchmarks/perf_kernel.py --annotate perf.data --code perf-code/fill_wants.bin

Scenarios: those of ``ab_trees.py`` (``engine``: ``bench_engine.py``'s kernel; ``held``: the
same with the targets of bar 0 only; ``vectorbt``: ``bench_vectorbt.py``'s workload;
``sweep-batch``: ``bench_sweep.py``'s compiled batch; ...). It profiles the checkout it lies
in (``python ../before/benchmarks/perf_kernel.py`` the one in ``../before``), not whichever
``backtester`` is installed. The market is built first: restrict the
report to the runs with ``perf report --time 60%-100%`` or read the JIT functions' lines.
The annotation prints each instruction of a saved function with its samples, hottest
first with ``--top N``; a load that waits on memory shows its samples on the instruction
after it.

It reads numba's internals (the JIT engine's defined symbols): a tool, not an interface.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

# this checkout's benchmarks and its backtester, before any installed one
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]


def python_name(symbol: str) -> str:
    """``_ZN10backtester6engine6kernel8simulateB3v27B...`` -> ``backtester.engine.kernel.simulate``
    (numba's wrappers keep their prefix: ``cpython.``, ``cfunc.``)."""
    prefix, _, rest = symbol.rpartition("_ZN")
    parts, k = [], 0
    while k < len(rest) and rest[k].isdigit():
        digits = re.match(r"\d+", rest[k:]).group()
        k += len(digits)
        parts.append(rest[k:k + int(digits)])
        k += int(digits)
    return prefix + ".".join(parts) if parts else symbol


def jit_functions() -> dict[int, str]:
    """Address -> name of every function numba's JIT engine has defined so far."""
    from backtester.engine import batch, kernel

    # (the JIT engine is shared: any compiled function leads to it; the sweep's batch
    # compiles no simulate of its own)
    compiled = [o for f in (kernel.simulate, batch.run_batch_serial)
                for o in f.overloads.values()]
    engine = compiled[0].library._codegen._engine
    found = {}
    for symbol in engine._defined_symbols:
        address = engine._ee.get_function_address(symbol)
        if address:
            found[address] = symbol
    return found


def write_map(functions: dict[int, str], dump: list[str], code_dir: Path) -> None:
    """perf's map of this process's JIT code; the machine code of the functions whose Python
    name ends with one of ``dump`` into ``code_dir``/<name>.bin (with its address)."""
    addresses = sorted(functions)
    ends = addresses[1:] + [addresses[-1] + 4096]
    with open(f"/tmp/perf-{os.getpid()}.map", "w") as out:
        for address, end in zip(addresses, ends, strict=True):
            name = python_name(functions[address])
            size = min(end - address, 1 << 20)
            out.write(f"{address:x} {size:x} {name}\n")
            short = name.rsplit(".", 1)[-1]
            # (not numba's wrappers, nor the environment and constants it names alike)
            if short in dump and name.startswith("backtester."):
                code_dir.mkdir(parents=True, exist_ok=True)
                (code_dir / f"{short}.bin").write_bytes(ctypes.string_at(address, size))
                (code_dir / f"{short}.address").write_text(f"{address:x}\n")


def scenario_runner(name: str):
    """A no-argument callable running the scenario once (compiled, warmed up): the scenarios
    of ``ab_trees.py``, defined there once."""
    from ab_trees import SETUP

    namespace = {"sys": sys, "EVERY": 10**9 if name == "held" else 24}
    exec(SETUP[name], namespace)  # (the code the A/B's processes run)
    namespace["execute"]()
    return namespace["execute"]


def annotate(data: Path, code: Path, top: int) -> None:
    """Each instruction of a saved function with the samples perf recorded at it."""
    base = int((code.with_suffix(".address")).read_text(), 16)
    size = code.stat().st_size
    ips = subprocess.run(["perf", "script", "-i", str(data), "-F", "ip"], capture_output=True,
                         text=True, check=True).stdout.split()
    counts = collections.Counter(int(ip, 16) - base for ip in ips
                                 if base <= int(ip, 16) < base + size)
    total = sum(counts.values())
    listing = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386:x86-64",
                              "--no-show-raw-insn", str(code)], capture_output=True, text=True,
                             check=True).stdout
    lines = []
    for line in listing.splitlines():
        match = re.match(r"\s*([0-9a-f]+):\s*(.*)", line)
        if match:
            offset = int(match.group(1), 16)
            lines.append((counts.get(offset, 0), offset, match.group(2)))
    print(f"{code.stem}: {total} samples")
    chosen = sorted(lines, reverse=True)[:top] if top else lines
    for n, offset, text in chosen:
        print(f"{n:7d} {100 * n / max(total, 1):5.1f}%  {offset:6x}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from ab_trees import SETUP

    parser.add_argument("--scenario", choices=sorted(SETUP), default="engine")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--dump", default="", help="functions to save, by name: a,b,c")
    parser.add_argument("--code-dir", type=Path, default=Path("perf-code"))
    parser.add_argument("--annotate", type=Path, metavar="PERF_DATA")
    parser.add_argument("--code", type=Path, help="with --annotate: a saved function")
    parser.add_argument("--top", type=int, default=30, help="with --annotate (0: every line)")
    args = parser.parse_args()
    if args.annotate:
        if args.code is None:
            parser.error("--annotate needs --code (a .bin file that --dump saved)")
        annotate(args.annotate, args.code, args.top)
        return
    once = scenario_runner(args.scenario)
    write_map(jit_functions(), [d for d in args.dump.split(",") if d], args.code_dir)
    for _ in range(args.runs):
        once()


if __name__ == "__main__":
    main()
