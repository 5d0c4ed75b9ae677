-- Ghost text for Neovim 0.10/0.11 (no `vim.lsp.inline_completion`), or with
-- `setup({ inline = 'ghost' })`: `textDocument/inlineCompletion` requested on TextChangedI /
-- CursorMovedI / InsertEnter after a debounce, the previous request cancelled, the suggestion
-- drawn with extmarks (first line as virt_text at the cursor, the rest as virt_lines), cleared on
-- InsertLeave / BufLeave. Typing through a suggestion keeps it visible.

local api = vim.api

local M = {}

M.ns = api.nvim_create_namespace('exlsp.ghost')

local function highlights()
  api.nvim_set_hl(0, 'ExlspGhost', { link = 'Comment', default = true })
  api.nvim_set_hl(0, 'ExlspGhostHint', { link = 'NonText', default = true })
end
highlights()
api.nvim_create_autocmd('ColorScheme', {
  group = api.nvim_create_augroup('exlsp.ghost.hl', { clear = true }),
  callback = highlights,
})

---@class exlsp.ghost.State
---@field client_id integer
---@field augroup integer
---@field timer? uv.uv_timer_t
---@field req_id? integer the pending request
---@field items? exlsp.Suggestion[]
---@field index integer
---@field hint? boolean show (i/n) after cycling

---@type table<integer, exlsp.ghost.State>
local states = {}

local function exlsp()
  return require('exlsp')
end

local function win_of(bufnr)
  local win = api.nvim_get_current_win()
  if api.nvim_win_get_buf(win) == bufnr then
    return win
  end
  return nil
end

local function stop_timer(st)
  if st.timer then
    st.timer:stop()
    if not st.timer:is_closing() then
      st.timer:close()
    end
    st.timer = nil
  end
end

local function cancel(bufnr, st)
  if st.req_id then
    local client = vim.lsp.get_client_by_id(st.client_id)
    if client then
      pcall(exlsp()._call, client, 'cancel_request', st.req_id)
    end
    st.req_id = nil
  end
end

function M.hide(bufnr)
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

--- Draw the current item, skipping what was typed since it came; hide it if the cursor left it.
function M.render(bufnr)
  M.hide(bufnr)
  local st = states[bufnr]
  local win = win_of(bufnr)
  if not st or not st.items or not win or not api.nvim_get_mode().mode:match('^i') then
    return
  end
  local item = st.items[st.index]
  local at = item and exlsp()._at_cursor(bufnr, win, item)
  if not at or at.text == '' then
    return
  end
  local lines = vim.split(at.text, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], 'ExlspGhost' } })
  end
  local first = { { lines[1], 'ExlspGhost' } }
  if st.hint and #st.items > 1 then
    local target = #virt_lines > 0 and virt_lines[#virt_lines] or first
    table.insert(target, { (' (%d/%d)'):format(st.index, #st.items), 'ExlspGhostHint' })
  end
  api.nvim_buf_set_extmark(bufnr, M.ns, at.row, at.col, {
    virt_text = first,
    -- a suggestion that ends with the text right of the cursor is drawn over it
    virt_text_pos = at.right > 0 and 'overlay' or 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
end

local function to_suggestions(bufnr, client, result)
  local items = result and (result.items or result) or {}
  local enc = client.offset_encoding or 'utf-16'
  local out = {}
  for _, item in ipairs(items) do
    local text = item.insertText
    if type(text) == 'table' then -- a snippet: its text, placeholders as written
      text = text.value
    end
    if type(text) == 'string' and text ~= '' then
      local srow, scol, right
      if item.range then
        local s, e = item.range.start, item.range['end']
        local line = api.nvim_buf_get_lines(bufnr, s.line, s.line + 1, false)[1] or ''
        srow, scol = s.line, exlsp()._byte_col(line, enc, s.character)
        right = 0
        if e.line == s.line and e.character > s.character then
          right = exlsp()._byte_col(line, enc, e.character) - scol
        end
      else
        local cursor = api.nvim_win_get_cursor(0)
        srow, scol, right = cursor[1] - 1, cursor[2], 0
      end
      table.insert(out, {
        text = text, srow = srow, scol = scol, right = right, command = item.command, client_id = client.id,
      })
    end
  end
  return out
end

--- Request a suggestion for the cursor now (cancelling the previous request).
---@param invoked? boolean an explicit request (trigger kind Invoked) rather than automatic
function M.request(bufnr, invoked)
  local st = states[bufnr]
  local win = win_of(bufnr)
  if not st or not win or not api.nvim_get_mode().mode:match('^i') then
    return
  end
  local client = vim.lsp.get_client_by_id(st.client_id)
  if not client then
    return
  end
  cancel(bufnr, st)
  local util = vim.lsp.util
  local params = util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = invoked and 1 or 2 }
  local req_id
  local ok, id = exlsp()._call(client, 'request', 'textDocument/inlineCompletion', params, function(err, result)
    if states[bufnr] ~= st or st.req_id ~= req_id then
      return -- superseded, cancelled or detached
    end
    st.req_id = nil
    if err or not api.nvim_buf_is_valid(bufnr) then
      return
    end
    st.items = to_suggestions(bufnr, client, result)
    st.index = 1
    st.hint = false
    M.render(bufnr)
  end, bufnr)
  if ok then
    req_id = id
    st.req_id = id
  end
end

local function on_change(bufnr)
  local st = states[bufnr]
  if not st then
    return
  end
  M.render(bufnr) -- keeps the suggestion while the typed text follows it
  stop_timer(st)
  local timer = assert((vim.uv or vim.loop).new_timer())
  st.timer = timer
  timer:start(exlsp().config.debounce_ms or 100, 0, vim.schedule_wrap(function()
    if st.timer == timer then
      stop_timer(st)
      M.request(bufnr)
    end
  end))
end

--- Forget the suggestion and any pending request.
function M.clear(bufnr)
  local st = states[bufnr]
  if st then
    stop_timer(st)
    cancel(bufnr, st)
    st.items = nil
  end
  M.hide(bufnr)
end

function M.detach(bufnr)
  local st = states[bufnr]
  if not st then
    return
  end
  M.clear(bufnr)
  pcall(api.nvim_del_augroup_by_id, st.augroup)
  states[bufnr] = nil
end

function M.attach(bufnr, client_id)
  if states[bufnr] then
    states[bufnr].client_id = client_id
    return
  end
  local group = api.nvim_create_augroup('exlsp.ghost.' .. bufnr, { clear = true })
  states[bufnr] = { client_id = client_id, augroup = group, index = 1 }
  api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI', 'CursorMovedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      on_change(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.clear(bufnr)
    end,
  })
  api.nvim_create_autocmd({ 'BufUnload', 'BufWipeout' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      M.detach(bufnr)
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    buffer = bufnr,
    callback = function(ev)
      if ev.data and ev.data.client_id == client_id then
        M.detach(bufnr)
      end
    end,
  })
end

function M.visible(bufnr)
  return api.nvim_buf_is_valid(bufnr) and #api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { limit = 1 }) > 0
end

--- Accept all, the first word or the first line; the edit is scheduled (callable from `expr` maps).
function M.accept(bufnr, kind)
  local st = states[bufnr]
  if not st or not st.items or not M.visible(bufnr) then
    return false
  end
  local item = st.items[st.index]
  local win = win_of(bufnr)
  if not item or not win then
    return false
  end
  vim.schedule(function()
    if not api.nvim_buf_is_valid(bufnr) or not api.nvim_win_is_valid(win) then
      return
    end
    stop_timer(st)
    cancel(bufnr, st)
    local at = exlsp()._at_cursor(bufnr, win, item)
    local piece = exlsp()._apply(bufnr, win, item, kind)
    if piece and at and piece == at.text then
      st.items = nil -- all of it is in: the next keystroke asks again
    end
    M.render(bufnr)
  end)
  return true
end

function M.select(bufnr, count)
  local st = states[bufnr]
  if not st or not st.items or #st.items == 0 or not M.visible(bufnr) then
    return false
  end
  st.index = (st.index - 1 + count) % #st.items + 1
  st.hint = true
  M.render(bufnr)
  return true
end

function M.dismiss(bufnr)
  if not M.visible(bufnr) then
    return false
  end
  M.clear(bufnr)
  return true
end

--- For tests and :checkhealth.
function M._state(bufnr)
  return states[bufnr]
end

return M
