"""Built-in plugins: each module is one plugin, loaded through the `exlsp` entry-point group."""
