"""``python -m ftp`` is the ``ftp`` command."""

from ftp.cli import main

if __name__ == "__main__":
    main()
