-- ~/.config/nvim/init.lua (Neovim 0.12, no plugin)
vim.lsp.config('exlsp', {
  cmd = { 'exlsp', 'serve' },
  filetypes = { 'python', 'lua', 'rust', 'go', 'javascript', 'typescript', 'c', 'cpp', 'sh' },
  root_markers = { '.git' },
  -- init_options = { completion = { maxTokens = 64 }, chat = { maxTokens = 512 } },
})
vim.lsp.enable('exlsp')
vim.lsp.inline_completion.enable()

-- <Tab> accepts the ghost text; without one it is a plain <Tab>.
vim.keymap.set('i', '<Tab>', function()
  if not vim.lsp.inline_completion.get() then
    return '<Tab>'
  end
end, { expr = true, desc = 'Accept the inline completion' })
-- <M-]> shows the next candidate (a multi-line suggestion comes with its one-line variant).
vim.keymap.set('i', '<M-]>', function()
  vim.lsp.inline_completion.select({ count = 1 })
end, { desc = 'Next inline completion' })
