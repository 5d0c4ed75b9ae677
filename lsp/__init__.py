"""The front doors: the command line (and, as they land, the language server and the socket)."""
