"""How the engine's functions are compiled: ``inner`` for those only compiled code calls.

numba gives every function it compiles two wrappers: one to call it from Python, which
unboxes each argument (for a function of the book, a dozen arrays in named tuples) and
boxes the result, and one to call it from C. Both are optimised and turned into machine
code, once per function and signature. The engine's functions call one another and only
a few are called from Python: on an empty cache the wrappers of the others were a quarter
of a first ``backtester run``'s compiling (7 of 31 CPU-s, in one process).

``inner`` compiles a function without them (numba's ``no_cpython_wrapper`` and
``no_cfunc_wrapper`` options); compiled callers link its code as before and numba's
cache holds it as before. Called from Python all the same (the public margin calculators
of ``backtester.liquidation`` and ``backtester.venues`` call a few rules so, and tests,
notebooks and debuggers may call any), it runs its twin: the same Python function compiled
with the wrappers on that first call, cached under a name of its own (numba names a
function's cache files after its qualified name, and would otherwise hand one's compiled
code to the other). ``InnerDispatcher.twins`` names the twins this process made: the
bar loop and the sweeps make none (a test says so).

``inlined`` gives one hot call site the body of a function every other site calls (numba
types and lowers an inlined function again at each site: ``engine.rules`` says which are).
"""

from __future__ import annotations

import types

from numba import njit
from numba.core import config
from numba.core.registry import CPUDispatcher

WITHOUT_WRAPPERS = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}


class InnerDispatcher(CPUDispatcher):
    """A dispatcher compiled without wrappers, whose Python calls go to its twin."""

    twins: list[str] = []  # the functions whose twin this process made

    def __call__(self, *args, **kwargs):
        twin = self.__dict__.get("_twin")
        if twin is None:
            twin = self.__dict__["_twin"] = _twin(self)
        return twin(*args, **kwargs)


def _twin(dispatcher: InnerDispatcher):
    """The dispatcher's function compiled with its wrappers, cached as ``<name>_from_python``."""
    fn = dispatcher.py_func
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                              fn.__closure__)
    copy.__qualname__ = f"{fn.__qualname__}_from_python"
    copy.__module__, copy.__doc__ = fn.__module__, fn.__doc__
    InnerDispatcher.twins.append(f"{fn.__module__}.{fn.__qualname__}")
    return njit(cache=True, **_njit_options(dispatcher))(copy)


def _njit_options(dispatcher) -> dict:
    """An inner dispatcher's options as ``njit`` takes them: wrappers on (``nopython`` is
    njit's own)."""
    return {key: value for key, value in dispatcher.targetoptions.items()
            if key not in WITHOUT_WRAPPERS and key != "nopython"}


def inner(func=None, **options):
    """``numba.njit(cache=True, **options)`` for a function only compiled code calls (the
    module's docstring). Under ``NUMBA_DISABLE_JIT`` the function itself."""

    def wrap(fn):
        if config.DISABLE_JIT:
            return fn
        targetoptions = {"nopython": True, "boundscheck": None, **options, **WITHOUT_WRAPPERS}
        dispatcher = InnerDispatcher(py_func=fn, locals={}, targetoptions=targetoptions)
        dispatcher.enable_caching()
        return dispatcher

    return wrap if func is None else wrap(func)


def inlined(dispatcher):
    """``dispatcher``'s function inlined by numba where it is called (``inline='always'``): for
    the one hot call site of a function every other site calls. Never compiled on its own,
    so never cached (its cache files would be the called one's). Under ``NUMBA_DISABLE_JIT``
    the function itself."""
    if config.DISABLE_JIT:
        return dispatcher
    return njit(inline="always", **_njit_options(dispatcher))(dispatcher.py_func)


def _prefetch_row_intrinsic():
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch_row(typingctx, array, t):
        """Ask the processor to bring row t of a 2-D array (element t of a 1-D one) into its
        caches: LLVM's ``llvm.prefetch`` for reading, on each cache line of the row's bytes
        (those of a C-contiguous row; of another layout, as many bytes from its first item).
        Nothing waits for it, and it never faults, even off the array."""
        def codegen(context, builder, signature, args):
            arrayty = signature.args[0]
            ary = context.make_array(arrayty)(context, builder, args[0])
            zero = context.get_constant(types.intp, 0)
            index = [args[1], zero] if arrayty.ndim == 2 else [args[1]]
            first = cgutils.get_item_pointer(context, builder, arrayty, ary, index)
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            # (named for the pointer type as this llvmlite writes it: LLVM reads both names)
            fn = builder.module.declare_intrinsic(
                "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
            start = builder.bitcast(first, i8p)
            itemsize = context.get_constant(types.intp, arrayty.dtype.bitwidth // 8)
            size = (builder.mul(cgutils.unpack_tuple(builder, ary.shape, 2)[1], itemsize)
                    if arrayty.ndim == 2 else itemsize)
            line = context.get_constant(types.intp, 64)
            with cgutils.for_range_slice(builder, zero, size, line) as (offset, _):
                builder.call(fn, [builder.gep(start, [offset]), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        if not (isinstance(array, types.Array) and array.ndim in (1, 2)
                and isinstance(t, types.Integer)):
            return None
        return types.void(array, t), codegen

    return prefetch_row


def _no_prefetch(array, t):
    """(``prefetch_row`` under ``NUMBA_DISABLE_JIT``: nothing to do.)"""


prefetch_row = _no_prefetch if config.DISABLE_JIT else _prefetch_row_intrinsic()
