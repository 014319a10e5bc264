"""ftp-example: an ftp plugin providing the ``lines`` data loader.

ftp loads this module through the ``ftp.plugins`` entry point named ``example`` (see
pyproject.toml) and calls the hook implementations below. A plugin with more components
returns more classes from the same hooks, or implements more of them.
"""

from ftp import hookimpl
from ftp_example.lines import LinesLoader

__version__ = "0.1.0"

__all__ = ["LinesLoader", "ftp_data_loaders"]


@hookimpl
def ftp_data_loaders() -> list[type]:
    """Register the ``lines`` loader."""
    return [LinesLoader]
