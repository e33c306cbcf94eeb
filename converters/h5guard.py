"""Read untrusted HDF5 files in a time-limited worker process.

libhdf5 can loop forever on a damaged file (a one-byte change to a Keras ``.h5`` made
``h5.attrs["keras_version"]`` spin, found by bench/fuzz.py) or crash the process. A C-level loop
cannot be interrupted from Python, so every read of a user's HDF5 file runs through
:func:`call`: the function runs in a persistent worker (``python -m converters.h5guard``, started
on first use and reused, so many small reads stay fast); if it does not answer within the time
limit, or dies, the worker is killed and a one-line :class:`ConversionError` is raised. The next
call starts a fresh worker.

The worker gets ``(module, function name, args)`` and sends back the result or the exception,
pickled over its own stdin/stdout: both ends are this code, the file's content only ever
becomes numpy arrays, strings and numbers inside the worker.

Time limit: ``ZOO_HDF5_TIMEOUT`` seconds (default 60) plus 1 s per 20 MB of the file.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from zoo.errors import ConversionError

ROOT = Path(__file__).resolve().parents[1]
_LOCK = threading.Lock()
_WORKER: subprocess.Popen[bytes] | None = None


def time_limit(path: str | Path | None = None) -> float:
    """Seconds a read of ``path`` may take before the worker is killed."""
    base = float(os.environ.get("ZOO_HDF5_TIMEOUT", "60"))
    try:
        size = Path(path).stat().st_size if path is not None else 0
    except OSError:
        size = 0
    return base + size / 20e6


def _start() -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.Popen(
        [sys.executable, "-m", "converters.h5guard"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=str(ROOT),
    )


def _stop() -> None:
    global _WORKER
    w, _WORKER = _WORKER, None
    if w is not None and w.poll() is None:
        w.kill()
        w.wait()


atexit.register(_stop)


def call(func: Any, *args: Any, path: str | Path | None = None, what: str = "HDF5 file") -> Any:
    """``func(*args)`` run in the worker (``func`` a module-level function), with the time limit
    of ``path``. Exceptions ``func`` raises are re-raised here; a hang or a crash of the worker
    becomes ConversionError naming ``path``."""
    global _WORKER
    name = Path(path).name if path is not None else what
    limit = time_limit(path)
    with _LOCK:
        if _WORKER is None or _WORKER.poll() is not None:
            _WORKER = _start()
        w = _WORKER
        assert w.stdin is not None and w.stdout is not None
        try:
            pickle.dump((func.__module__, func.__qualname__, args), w.stdin)
            w.stdin.flush()
            ready, _, _ = select.select([w.stdout], [], [], limit)
            if not ready:
                _stop()
                raise ConversionError(
                    f"{name}: the HDF5 library did not finish reading it within {limit:.0f} s "
                    "(damaged file?); stopped"
                )
            ok, value = pickle.load(w.stdout)
        except (BrokenPipeError, EOFError, pickle.UnpicklingError):
            code = w.poll()
            _stop()
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise ConversionError(
                f"{name}: the HDF5 library crashed reading it ({how}; damaged file?)"
            ) from None
    if ok:
        return value
    raise value


def _serve() -> None:
    """Worker loop: read a request, run it, write ``(True, result)`` or ``(False, exception)``."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the channel
    while True:
        try:
            mod, qual, args = pickle.load(inp)
        except EOFError:
            return
        try:
            fn: Any = importlib.import_module(mod)
            for part in qual.split("."):
                fn = getattr(fn, part)
            reply: tuple[bool, Any] = (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - sent back to the caller, which raises it
            reply = (False, e)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - an exception that does not pickle
            data = pickle.dumps((False, ConversionError(f"{type(e).__name__}: {str(e)[:300]}")))
        out.write(data)
        out.flush()


if __name__ == "__main__":
    _serve()
