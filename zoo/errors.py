"""The few error types users can cause. The CLI prints each as one line and exits non-zero."""

from __future__ import annotations


class ZooError(Exception):
    """Base class: anything a user can cause. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UnknownModelError(ZooError):
    """No entry with that id (the message suggests near matches)."""

    exit_code = 2


class RegistryError(ZooError):
    """A malformed registry or catalogue entry (names the id and the field path)."""

    exit_code = 3


class FetchError(ZooError):
    """A download failed: network, HTTP status, wrong length, HTML instead of a file."""

    exit_code = 4


class ChecksumError(FetchError):
    """Downloaded bytes do not match the published or pinned checksum."""

    exit_code = 5


class OfflineError(FetchError):
    """Offline mode and no cached copy."""

    exit_code = 6


class DiskFullError(FetchError):
    """The disk (or a file-size limit) refused the write."""

    exit_code = 7


class ConversionError(ZooError):
    """A source file could not be read or converted (names the layer and file)."""

    exit_code = 8


class VerificationError(ZooError):
    """Converted outputs differ from the reference beyond tolerance."""

    exit_code = 9


# The optional extras and the modules each brings (``pip install 'zoo[EXTRA]'``). The core install
# (registry, search, info, pull, cache, register) needs none of them.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "torch": (
        "torch",
        "torchvision",
        "timm",
        "safetensors",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "h5py",
        "google.protobuf",
    ),
    "keras": ("tensorflow", "tf2onnx", "keras"),
    "verify": ("cv2",),
    "report": ("matplotlib", "sklearn"),
    "serve": ("starlette", "uvicorn", "jinja2"),
    "s3": ("boto3",),
}


class MissingExtra(ZooError):
    """A command or function needs an optional extra that is not installed (names the extra)."""

    exit_code = 10

    def __init__(self, extra: str, module: str | None = None, what: str | None = None) -> None:
        self.extra, self.module, self.what = extra, module, what
        hint = f"pip install 'zoo[{extra}]'"
        if what:
            msg = f"{what} needs the {extra} extra: {hint}"
        else:
            msg = f"{module or extra} is not installed; it comes with the {extra} extra: {hint}"
        super().__init__(msg)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a parent package may load)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a half-initialised module
        return False


def require(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise MissingExtra unless ``modules`` (default: every module of ``extra``) are installed.

    Cheap: nothing is imported. ``what`` names the caller in the message (``"zoo.load"``)."""
    if extra not in EXTRA_MODULES:
        raise ValueError(f"unknown extra {extra!r} (one of {', '.join(EXTRA_MODULES)})")
    for m in modules or EXTRA_MODULES[extra]:
        if not _installed(m):
            raise MissingExtra(extra, m, what)


def missing_extra(exc: ModuleNotFoundError, what: str | None = None) -> MissingExtra | None:
    """The MissingExtra a ModuleNotFoundError means, or None when the module is no extra's or is
    in fact installed (then the error is a real bug and should stay as it is)."""
    name = exc.name or ""
    for extra, mods in EXTRA_MODULES.items():
        for m in mods:
            # "torch._C" is torch's; "google" missing means google.protobuf is missing too
            if (name == m or name.startswith(m + ".") or m.startswith(name + ".")) and not _installed(m):
                return MissingExtra(extra, m, what)
    return None
