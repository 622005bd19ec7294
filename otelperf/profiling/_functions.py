"""``perf.profile(hook)`` for functions and blocks, and the ``module:qualname`` hooks.

A ``function:`` hook is applied at startup by replacing the attribute it names (a
module-level function, or a method, static method or class method) with a
profiled wrapper, and restored at shutdown. Code that took a reference before
startup (``from reports import build`` at import time) keeps calling the original:
decorate such functions with ``@perf.profile(...)`` instead.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from otelperf._errors import OtelperfError
from otelperf.profiling._select import Hook

if TYPE_CHECKING:
    from otelperf.profiling._profiling import Profiling, _Call

__all__ = ["Patch", "Profiled", "patch_function"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__otelperf_profiled__"


def _in_event_loop() -> bool:
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Profiled:
    """Profiles calls of a function, or a block, under one hook.

    As a decorator of a sync or async function (each call is profiled on its own), or
    as ``with`` / ``async with`` around a block::

        @perf.profile("reprice")
        def reprice_all(): ...

        async with perf.profile("render"):
            await render(report)

    A call the hook samples in gets a span named after the function (or the hook for a
    block), and, when it lasted at least ``min_duration``, the profile's event on it.
    Before otelperf is started, calls run unprofiled. One ``Profiled`` object may be
    reused, but not entered concurrently from several tasks: create one per block.
    """

    def __init__(self, owner: Profiling, hook: Hook) -> None:
        self._owner = owner
        self.hook = hook
        self._stack: list[_Call | None] = []

    def __repr__(self) -> str:
        return f"<Profiled hook={self.hook.label!r} engine={self.hook.engine}>"

    def __call__(self, func: F) -> F:
        if getattr(func, _MARK, False):
            return func
        owner, hook = self._owner, self.hook
        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
        module = getattr(func, "__module__", None)
        full_name = f"{module}.{name}" if module else name
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise OtelperfError(
                f"perf.profile({hook.label!r}) cannot wrap the generator {full_name}: its body "
                "runs while it is iterated; profile the code that consumes it"
            )
        if inspect.iscoroutinefunction(func):
            if hook.engine == "cprofile":
                raise OtelperfError(
                    f"profiling hook {hook.label!r} uses engine cprofile, which cannot tell the "
                    f"async function {full_name} from the other tasks running while it awaits; "
                    "use engine pyinstrument"
                )

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = owner._call_begin(hook, name, full_name, follow_awaits=True)
                if call is None:
                    return await func(*args, **kwargs)
                error: BaseException | None = None
                try:
                    return await func(*args, **kwargs)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    owner._call_end(call, error)

            setattr(async_wrapper, _MARK, True)
            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            # A sync function cannot be suspended: following awaits is not needed, and
            # without it the profile nests inside a request's (same thread, same task).
            call = owner._call_begin(hook, name, full_name, follow_awaits=False)
            if call is None:
                return func(*args, **kwargs)
            error: BaseException | None = None
            try:
                return func(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                owner._call_end(call, error)

        setattr(wrapper, _MARK, True)
        return cast(F, wrapper)

    def __enter__(self) -> Profiled:
        # A sync block inside a coroutine may still await: follow awaits there.
        label = self.hook.label
        self._stack.append(
            self._owner._call_begin(self.hook, label, label, follow_awaits=_in_event_loop())
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = self._stack.pop()
        if call is not None:
            self._owner._call_end(call, exc)

    async def __aenter__(self) -> Profiled:
        label = self.hook.label
        self._stack.append(self._owner._call_begin(self.hook, label, label, follow_awaits=True))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


@dataclass(frozen=True)
class Patch:
    """One attribute replaced by a profiled wrapper; :meth:`undo` puts the original back."""

    owner: Any
    attribute: str
    original: Any
    replacement: Any

    def undo(self) -> None:
        if inspect.getattr_static(self.owner, self.attribute, None) is self.replacement:
            setattr(self.owner, self.attribute, self.original)


def patch_function(profiled: Profiled, path: str) -> Patch:
    """Replace the function at ``module:qualname`` with ``profiled(function)``."""
    label = profiled.hook.label
    module_name, _, qualname = path.partition(":")
    where = f"profiling hook {label!r}: function {path!r}"
    try:
        owner: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise OtelperfError(
            f"{where}: module {module_name!r} cannot be imported ({type(exc).__name__}: {exc})"
        ) from None
    parts = qualname.split(".")
    for part in parts[:-1]:
        try:
            owner = getattr(owner, part)
        except AttributeError:
            raise OtelperfError(f"{where}: {part!r} not found in {owner!r}") from None
    attribute = parts[-1]
    try:
        raw = inspect.getattr_static(owner, attribute)
    except AttributeError:
        raise OtelperfError(f"{where}: {attribute!r} not found in {owner!r}") from None
    if isinstance(raw, (staticmethod, classmethod)):
        replacement: Any = type(raw)(profiled(raw.__func__))
    elif inspect.isfunction(raw):
        replacement = profiled(raw)
    else:
        raise OtelperfError(
            f"{where} is a {type(raw).__name__}, not a function or method; "
            "point the hook at a function defined in Python"
        )
    setattr(owner, attribute, replacement)
    return Patch(owner, attribute, raw, replacement)
