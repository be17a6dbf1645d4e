"""User-facing errors: the CLI prints ``error: <message>`` on one line and exits non-zero."""


class EdgeRetinaError(Exception):
    """A user mistake or an unusable input. The message is one line that names the file and the problem."""

    exit_code = 2


class DataError(EdgeRetinaError):
    """A dataset, image, CSV row or split that cannot be used."""


class ModelError(EdgeRetinaError):
    """A model file, run dir or metadata that cannot be used."""


class ExportError(EdgeRetinaError):
    """A conversion that cannot be done as asked."""


class DeviceError(EdgeRetinaError):
    """A benchmark device that is missing or unusable (no GPU, no adb, no phone)."""
