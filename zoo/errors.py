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
