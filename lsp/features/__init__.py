"""One module per LSP method (or small family of methods); ``exlsp.lsp.server`` registers them."""
