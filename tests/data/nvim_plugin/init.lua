-- The config of tests/test_nvim_plugin.py: the plugin from editors/nvim on the runtimepath, a
-- debug LSP log. scenario.lua calls require('exlsp').setup() itself (first with a missing
-- executable, then with $EXLSP_E2E_CMD).
--
--   EXLSP_NVIM_PLUGIN  the plugin's directory (editors/nvim)

vim.opt.runtimepath:prepend(assert(os.getenv('EXLSP_NVIM_PLUGIN'), 'EXLSP_NVIM_PLUGIN not set'))
vim.lsp.log.set_level(vim.log.levels.DEBUG)
