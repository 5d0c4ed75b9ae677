-- A minimal Neovim 0.12 config for exlsp: the editor's own LSP client and its native
-- `vim.lsp.inline_completion`, no plugins. What a user would put in their init.lua, plus a
-- debug log for the end-to-end test (tests/test_neovim_e2e.py).
--
--   EXLSP_E2E_CMD  JSON list, the server command (default: {"exlsp", "serve"})

local cmd = { 'exlsp', 'serve' }
if os.getenv('EXLSP_E2E_CMD') then
  cmd = vim.json.decode(os.getenv('EXLSP_E2E_CMD'))
end

vim.lsp.log.set_level(vim.log.levels.DEBUG)

vim.lsp.config('exlsp', {
  cmd = cmd,
  filetypes = { 'python' },
  -- single-file use: the file's directory is the root
  root_dir = function(bufnr, on_dir)
    on_dir(vim.fs.dirname(vim.api.nvim_buf_get_name(bufnr)))
  end,
})
vim.lsp.enable('exlsp')

vim.lsp.inline_completion.enable()

-- The keymap from `:help vim.lsp.inline_completion.get()`: <Tab> accepts the ghost text.
vim.keymap.set('i', '<Tab>', function()
  if not vim.lsp.inline_completion.get() then
    return '<Tab>'
  end
end, { expr = true, desc = 'Accept the current inline completion' })

-- <M-]> cycles to the next candidate (exlsp offers a one-line variant of multi-line items).
vim.keymap.set('i', '<M-]>', function()
  vim.lsp.inline_completion.select({ count = 1 })
end, { desc = 'Next inline completion' })
