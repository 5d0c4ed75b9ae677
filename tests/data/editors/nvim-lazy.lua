-- ~/.config/nvim/lua/plugins/exlsp.lua (lazy.nvim)
return {
  -- the plugin lives in editors/nvim of a clone of exlsp
  dir = '~/src/exlsp/editors/nvim',
  name = 'exlsp',
  event = { 'BufReadPre', 'BufNewFile' },
  cmd = { 'ExlspChat', 'ExlspStatus' },
  opts = {
    -- cmd = { 'exlsp', 'serve' },
    -- filetypes = { 'python', 'lua', 'rust' }, -- nil: every file
    -- init_options = { completion = { maxTokens = 64 }, chat = { maxTokens = 512 } },
  },
}
