"""HomeWarden: a home camera recorder that answers for every second of footage."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("homewarden")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"

__all__ = ["__version__"]
