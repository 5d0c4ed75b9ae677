-- :checkhealth exlsp

local M = {}

local health = vim.health

function M.check()
  local exlsp = require('exlsp')
  local cfg = exlsp.config

  health.start('Neovim')
  local v = vim.version()
  local version = ('%d.%d.%d'):format(v.major, v.minor, v.patch)
  if vim.fn.has('nvim-0.10') == 0 then
    health.error(('Neovim %s: exlsp needs 0.10 or later'):format(version))
  else
    health.ok(('Neovim %s'):format(version))
  end
  local mode = exlsp.inline_mode()
  if vim.lsp.inline_completion then
    health.ok('native inline completion (vim.lsp.inline_completion)' .. (mode == 'native' and ': in use' or (': not in use (inline = %s)'):format(tostring(cfg.inline))))
  elseif mode == 'ghost' then
    health.ok('no native inline completion before 0.12: exlsp draws ghost text with extmarks')
  end
  if mode == nil then
    health.info('inline completion is off (inline = false)')
  end

  health.start('exlsp executable')
  local cmd = cfg.cmd
  if type(cmd) ~= 'table' then
    health.ok('cmd is a function (custom transport)')
  elseif type(cmd[1]) == 'string' and vim.fn.executable(cmd[1]) == 1 then
    health.ok(('executable found: %s'):format(vim.fn.exepath(cmd[1])))
  else
    health.error(('%s not found'):format(tostring(cmd[1])), {
      'pip install exlsp (it installs the `exlsp` command)',
      'or set cmd: require("exlsp").setup({ cmd = { "/path/to/exlsp", "serve" } })',
    })
  end
  if not exlsp._did_setup then
    health.warn('require("exlsp").setup() has not run (or failed)')
  end

  health.start('exlsp server')
  local clients = vim.lsp.get_clients({ name = 'exlsp' })
  local client = clients[1]
  if not client then
    health.warn('not running: open a file (the server starts with the first buffer it attaches to)')
    return
  end
  local buffers = vim.tbl_keys(client.attached_buffers or {})
  health.ok(('server attached (client %d, %d buffer%s, position encoding %s)'):format(
    client.id, #buffers, #buffers == 1 and '' or 's', tostring(client.offset_encoding)))
  if client.server_capabilities and client.server_capabilities.inlineCompletionProvider then
    health.ok('the server offers textDocument/inlineCompletion')
  else
    health.warn('the server does not offer textDocument/inlineCompletion')
  end

  local bufnr = buffers[1] or vim.api.nvim_get_current_buf()
  local ok, resp = pcall(exlsp._call, client, 'request_sync', 'exlsp/status', {}, 3000, bufnr)
  if not ok or not resp then
    health.warn('exlsp/status did not answer in 3 s' .. (ok and '' or (': ' .. tostring(resp))))
    return
  end
  if resp.err then
    health.error('exlsp/status: ' .. (resp.err.message or vim.inspect(resp.err)))
    return
  end
  local st = resp.result or {}
  if st.ready then
    health.ok(('model ready: %s (%s)'):format(tostring(st.model), tostring(st.backend)))
  elseif st.loadError and st.loadError ~= vim.NIL then
    health.error('the model failed to load: ' .. tostring(st.loadError))
  else
    health.warn('the model is still loading')
  end
end

return M
