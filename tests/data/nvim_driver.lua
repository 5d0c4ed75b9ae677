-- What the headless Neovim scenarios share (tests/data/nvim/e2e.lua, tests/data/nvim_plugin/scenario.lua):
-- a coroutine that drives Neovim like a user and polls with timers, step bookkeeping, and the
-- result written to $EXLSP_E2E_RESULT as JSON when the scenario ends (or a watchdog fires).
--
--   local d = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), '..', 'nvim_driver.lua'))
--   local result = d.start({ steps = {}, ... }, scenario)   -- `scenario` runs in the coroutine
--
--   EXLSP_E2E_RESULT       where to write the result
--   EXLSP_E2E_STEP_MS      timeout per step (default 20000)
--   EXLSP_E2E_WATCHDOG_MS  the whole scenario (default 75000)

local api = vim.api
local uv = vim.uv or vim.loop

local M = {}

local RESULT = assert(os.getenv('EXLSP_E2E_RESULT'), 'EXLSP_E2E_RESULT not set')
M.STEP_MS = tonumber(os.getenv('EXLSP_E2E_STEP_MS') or '') or 20000

local result ---@type table
local done = false
local t0 = uv.now()
local co ---@type thread

function M.buf_text(bufnr)
  return table.concat(api.nvim_buf_get_lines(bufnr, 0, -1, true), '\n')
end

function M.finish()
  if done then
    return
  end
  done = true
  result.messages = vim.fn.execute('messages')
  result.log_file = vim.lsp.log.get_filename()
  local f = assert(io.open(RESULT, 'w'))
  f:write(vim.json.encode(result))
  f:close()
  vim.cmd('qa!')
end

function M.resume()
  if done or coroutine.status(co) ~= 'suspended' then
    return
  end
  local ok, err = coroutine.resume(co)
  if not ok then
    result.error = tostring(err)
    if not result.traceback then
      result.traceback = debug.traceback(co)
    end
    M.finish()
  end
end

function M.sleep(ms)
  vim.defer_fn(M.resume, ms)
  coroutine.yield()
end

--- Poll {pred} until it returns a truthy value (returned), or fail the step after {timeout} ms.
function M.wait(what, pred, timeout)
  local deadline = uv.now() + (timeout or M.STEP_MS)
  while true do
    local ok, value = pcall(pred)
    if ok and value then
      return value
    end
    if uv.now() > deadline then
      error(('timed out after %d ms waiting for: %s%s'):format(
        timeout or M.STEP_MS, what, ok and '' or (' (last error: ' .. tostring(value) .. ')')), 0)
    end
    M.sleep(20)
  end
end

function M.step(name, data)
  table.insert(result.steps, name)
  result.elapsed_ms[name] = uv.now() - t0
  if data ~= nil then
    result[name] = data
  end
end

function M.status(client, bufnr)
  local resp = client:request_sync('exlsp/status', {}, 5000, bufnr)
  assert(resp, 'exlsp/status: no response (timeout)')
  assert(not resp.err, 'exlsp/status: ' .. vim.inspect(resp.err))
  return resp.result
end

--- The ghost text drawn by the first of {namespaces} that has one, read back from its extmark
--- (what the user sees): { ns, row, col, pos, text }.
function M.ghost(bufnr, namespaces)
  for _, name in ipairs(namespaces) do
    local ns = api.nvim_get_namespaces()[name]
    if ns then
      for _, mark in ipairs(api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })) do
        local d = mark[4]
        if d.virt_text and d.virt_text[1] then
          local lines = { d.virt_text[1][1] }
          for _, vl in ipairs(d.virt_lines or {}) do
            table.insert(lines, vl[1] and vl[1][1] or '')
          end
          return { ns = name, row = mark[2], col = mark[3], pos = d.virt_text_pos, text = table.concat(lines, '\n') }
        end
      end
    end
  end
  return nil
end

--- Does {client} have a request pending (of {method}, when given)?
function M.pending(client, method)
  for _, req in pairs(client.requests or {}) do
    if req.type == 'pending' and (method == nil or req.method == method) then
      return true
    end
  end
  return false
end

--- Run {scenario} in the driving coroutine; the result is written when it returns or fails.
function M.start(initial, scenario)
  result = initial
  result.steps = result.steps or {}
  result.elapsed_ms = result.elapsed_ms or {}
  co = coroutine.create(function()
    local ok, err = xpcall(scenario, debug.traceback)
    if not ok then
      result.error = tostring(err)
    end
    M.finish()
  end)
  -- a last resort: never hang the test
  vim.defer_fn(function()
    if not done then
      result.error = 'global watchdog: scenario did not finish in time'
      M.finish()
    end
  end, tonumber(os.getenv('EXLSP_E2E_WATCHDOG_MS') or '') or 75000)
  vim.schedule(M.resume)
  return result
end

return M
