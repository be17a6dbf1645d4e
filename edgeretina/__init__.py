"""edgeretina: fundus-screening CNNs from fine-tuning to edge deployment."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("edgeretina")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+src"
