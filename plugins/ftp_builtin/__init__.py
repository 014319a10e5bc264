"""ftp's built-in plugins, written only against ftp's public API, like any third party's."""
