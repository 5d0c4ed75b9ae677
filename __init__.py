"""exlsp: one resident local LLM for editors (LSP) and shells (Unix socket).

The code lives in three subpackages: ``exlsp.runtime`` (engine, KV cache lanes, backends),
``exlsp.plugins`` (prompt building and post-processing) and ``exlsp.lsp`` (the front doors and CLI).
"""

__version__ = "0.1.0"
