-- :ExlspChat: a markdown chat buffer in a split. Each question goes to `exlsp/chat` with the
-- conversation so far (messages), the current file (textDocument) and, from a range, the
-- selection; the answer streams in from the `$/progress` reports on this request's
-- workDoneToken (their `message` is the delta). `q` / <C-c> in the chat buffer stop it
-- ($/cancelRequest) and the buffer shows [stopped].
--
-- Chat sessions (docs/chat-sessions.md): the server keeps the conversation, so each question
-- carries a `sessionId` and only itself as `messages`, and the chat buffer is filled from
-- `exlsp/chatSession` when it is first shown — the conversation survives restarts. One session
-- per working directory, `nvim:<hash of the cwd>[:<time>]`: `:ExlspChatReset` starts a new one
-- (the old one stays on the server: `exlsp sessions`), and a later Neovim in the same directory
-- continues the most recently used. A server without sessions (an older exlsp) is noticed from
-- its answer; the plugin then sends the whole conversation, as before.

local api = vim.api

local M = {}

local STOPPED = '[stopped]'
--- messages read back into the buffer at most
local RESTORE_LIMIT = 200
--- how long opening the chat may wait for the stored conversation
local RESTORE_TIMEOUT_MS = 3000

---@class exlsp.chat.Run
---@field id? integer request id
---@field token string workDoneToken
---@field client_id integer
---@field buf integer chat buffer
---@field question string
---@field params table what was sent
---@field streamed string the deltas received
---@field ended? string the progress end message ('done'/'cancelled')
---@field stopped? boolean stopped by the user
---@field result? table the exlsp/chat result
---@field error? string
---@field resynced? boolean the buffer was rewritten with the result's text
---@field retried? boolean asked again without the session (the server keeps none)
---@field req_buf? integer the buffer the request was sent for
---@field finished? boolean

local state = {
  buf = nil, ---@type integer?
  messages = {}, ---@type {role: string, content: string}[]
  runs = {}, ---@type table<string, exlsp.chat.Run> by token
  current = nil, ---@type exlsp.chat.Run?
  last = nil, ---@type exlsp.chat.Run?
  seq = 0,
  source = nil, ---@type integer? the buffer the last question came from
  session = nil, ---@type string? the session the chat continues
  base = nil, ---@type string? the working directory's session id (the session was chosen for it)
  loaded = nil, ---@type string? the session the buffer shows (read from the server)
  stateless = {}, ---@type table<integer, boolean> clients whose server keeps no sessions
}

-- Clients started without exlsp's `$/progress` handler (a config of the user's own) still
-- stream: Neovim's handler fires LspProgress for every token.
api.nvim_create_autocmd('LspProgress', {
  group = api.nvim_create_augroup('exlsp.chat', { clear = true }),
  callback = function(ev)
    if ev.data and ev.data.params then
      M.on_progress(ev.data.params, ev.data)
    end
  end,
})

local function config()
  return require('exlsp').config.chat or {}
end

local function exlsp()
  return require('exlsp')
end

local function set_text(buf, fn)
  vim.bo[buf].modifiable = true
  local ok, err = pcall(fn)
  vim.bo[buf].modifiable = false
  vim.bo[buf].modified = false
  if not ok then
    error(err, 0)
  end
end

--- Keep windows that show the chat at its end.
local function follow(buf)
  local last = api.nvim_buf_line_count(buf)
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    if win ~= api.nvim_get_current_win() or api.nvim_win_get_cursor(win)[1] >= last - 1 then
      api.nvim_win_set_cursor(win, { last, 0 })
    end
  end
end

--- Append {text} at the very end of the buffer (no new line unless {text} has one).
local function append(buf, text)
  if text == '' or not api.nvim_buf_is_valid(buf) then
    return
  end
  set_text(buf, function()
    local row = api.nvim_buf_line_count(buf) - 1
    local col = #(api.nvim_buf_get_lines(buf, row, row + 1, true)[1])
    api.nvim_buf_set_text(buf, row, col, row, col, vim.split(text, '\n', { plain = true }))
  end)
  follow(buf)
end

--- Append whole lines after the last line.
local function append_lines(buf, lines)
  if not api.nvim_buf_is_valid(buf) then
    return
  end
  set_text(buf, function()
    local n = api.nvim_buf_line_count(buf)
    local only_empty = n == 1 and api.nvim_buf_get_lines(buf, 0, 1, true)[1] == ''
    api.nvim_buf_set_lines(buf, only_empty and 0 or n, -1, true, lines)
  end)
  follow(buf)
end

local function buffer()
  if state.buf and api.nvim_buf_is_valid(state.buf) then
    return state.buf
  end
  local buf = api.nvim_create_buf(false, true)
  pcall(api.nvim_buf_set_name, buf, 'exlsp://chat')
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'hide'
  vim.bo[buf].swapfile = false
  vim.bo[buf].filetype = 'markdown'
  vim.bo[buf].modifiable = false
  local keys = config().keymaps or {}
  local stops = type(keys.stop) == 'table' and keys.stop or { keys.stop }
  for _, lhs in ipairs(stops) do
    if lhs then
      vim.keymap.set('n', lhs, function()
        if not M.stop() and lhs == 'q' then
          M.close()
        end
      end, { buffer = buf, nowait = true, desc = 'exlsp: stop the answer' .. (lhs == 'q' and ' (or close)' or '') })
    end
  end
  if keys.ask then
    vim.keymap.set('n', keys.ask, function()
      vim.ui.input({ prompt = 'exlsp> ' }, function(q)
        if q and q ~= '' then
          M.ask(q)
        end
      end)
    end, { buffer = buf, desc = 'exlsp: ask a follow-up question' })
  end
  state.buf = buf
  state.messages = {}
  return buf
end

---------------------------------------------------------------------------------------------------
-- Sessions

--- The session id of the working directory {cwd} (default: the current one).
function M.session_base(cwd)
  return 'nvim:' .. vim.fn.sha256(cwd or vim.fn.getcwd()):sub(1, 16)
end

local function base36(n)
  local digits, out = '0123456789abcdefghijklmnopqrstuvwxyz', ''
  repeat
    local d = n % 36
    out = digits:sub(d + 1, d + 1) .. out
    n = math.floor(n / 36)
  until n == 0
  return out
end

--- A new session id under {base}: `<base>:<milliseconds, base 36><4 hex digits>`.
function M.new_session_id(base, ms)
  local uv = vim.uv or vim.loop
  if not ms then
    local sec, usec = uv.gettimeofday()
    ms = sec * 1000 + math.floor(usec / 1000)
  end
  return ('%s:%s%04x'):format(base, base36(ms), uv.hrtime() % 0x10000)
end

--- The server keeps no sessions: an exlsp without them (MethodNotFound) or one that says so
--- (InvalidParams "... keeps no chat sessions"); other errors about a session are the turn's own.
function M._sessions_unavailable(err)
  if type(err) ~= 'table' then
    return false
  end
  if err.code == -32601 then
    return true
  end
  if err.code ~= -32602 or type(err.message) ~= 'string' then
    return false
  end
  local msg = err.message:lower()
  for _, needle in ipairs({ 'no chat sessions', 'no sessions', 'sessions are not available', 'sessions unavailable',
    'sessions are unavailable', 'sessions are disabled' }) do
    if msg:find(needle, 1, true) then
      return true
    end
  end
  return false
end

--- The chat buffer's lines for stored {messages} (as M.ask writes them: an answer cut short ends
--- with [stopped]), and the conversation they make. System messages are not shown.
---@return string[] lines, {role: string, content: string}[] messages
function M._render(messages, omitted, session_id)
  local lines, history = {}, {}
  if omitted and omitted > 0 then
    table.insert(lines, ('_%d earlier messages not shown (all of them: `exlsp sessions show %s`)_'):format(omitted, session_id))
  end
  for _, m in ipairs(messages or {}) do
    if (m.role == 'user' or m.role == 'assistant') and type(m.content) == 'string' then
      if #lines > 0 then
        table.insert(lines, '')
      end
      vim.list_extend(lines, { m.role == 'user' and '## You' or '## exlsp', '' })
      vim.list_extend(lines, vim.split(m.content, '\n', { plain = true }))
      if m.role == 'assistant' and m.complete == false then
        table.insert(lines, STOPPED)
      end
      table.insert(history, { role = m.role, content = m.content })
    end
  end
  return lines, history
end

local function request_sync(client, method, params)
  local ok, resp, err = pcall(exlsp()._call, client, 'request_sync', method, params, RESTORE_TIMEOUT_MS)
  if not ok then
    return nil, tostring(resp)
  end
  if not resp then
    return nil, tostring(err or 'no answer in time')
  end
  return resp
end

--- Choose the session for the working directory: the one chosen before, else its most recently
--- updated one on the server (the list is newest first), else its own id.
local function choose_session(client)
  local base = M.session_base()
  if state.session and state.base == base then
    return
  end
  state.base, state.session, state.loaded = base, base, nil
  if state.stateless[client.id] then
    return
  end
  local resp = request_sync(client, 'exlsp/chatSessions', { limit = 1000 })
  if resp and resp.err and M._sessions_unavailable(resp.err) then
    state.stateless[client.id] = true
  end
  local result = resp and type(resp.result) == 'table' and resp.result or {}
  for _, sess in ipairs(type(result.sessions) == 'table' and result.sessions or {}) do
    if sess.id == base or vim.startswith(tostring(sess.id), base .. ':') then
      state.session = sess.id
      return
    end
  end
end

--- Fill the chat buffer with the session's stored conversation (once per session).
local function restore(client)
  local id = state.session
  if not id or state.loaded == id or state.stateless[client.id] then
    return
  end
  state.loaded = id -- also when it fails: the chat must not wait for it again and again
  local resp, why = request_sync(client, 'exlsp/chatSession', { sessionId = id, limit = RESTORE_LIMIT })
  if resp and resp.err then
    if M._sessions_unavailable(resp.err) then
      state.stateless[client.id] = true
      return
    end
    why = resp.err.message or vim.inspect(resp.err)
  end
  if not resp or resp.err then
    vim.notify(('exlsp: the chat session %s could not be read: %s'):format(id, why), vim.log.levels.WARN)
    return
  end
  local found = type(resp.result) == 'table' and resp.result or {}
  local messages = type(found.messages) == 'table' and found.messages or {}
  local count = type(found.session) == 'table' and tonumber(found.session.messageCount) or #messages
  local lines, history = M._render(messages, count - #messages, id)
  local buf = buffer()
  state.messages = history
  set_text(buf, function()
    api.nvim_buf_set_lines(buf, 0, -1, true, lines)
  end)
  follow(buf)
end

--- The working directory's session, its conversation in the buffer.
local function ensure_session(client)
  choose_session(client)
  restore(client)
end

--- Show the chat buffer (reusing its window in this tab page); returns the window.
function M.open(focus)
  if not (state.current and not state.current.finished) then
    local client = exlsp().client(state.source)
    if client then
      ensure_session(client)
    end
  end
  local buf = buffer()
  local win
  for _, w in ipairs(api.nvim_tabpage_list_wins(0)) do
    if api.nvim_win_get_buf(w) == buf then
      win = w
      break
    end
  end
  if not win then
    local cfg = config()
    local prev = api.nvim_get_current_win()
    if cfg.split == 'tab' then
      vim.cmd('tab sbuffer ' .. buf)
    elseif cfg.split == 'horizontal' then
      vim.cmd((cfg.size and (cfg.size .. ' ') or '') .. 'botright sbuffer ' .. buf)
    else
      vim.cmd('vertical ' .. (cfg.size and (cfg.size .. ' ') or '') .. 'botright sbuffer ' .. buf)
    end
    win = api.nvim_get_current_win()
    vim.wo[win].wrap = true
    vim.wo[win].linebreak = true
    vim.wo[win].number = false
    vim.wo[win].relativenumber = false
    vim.wo[win].spell = false
    if not focus and api.nvim_win_is_valid(prev) then
      api.nvim_set_current_win(prev)
    end
  elseif focus then
    api.nvim_set_current_win(win)
  end
  return win
end

function M.close()
  if not state.buf then
    return
  end
  for _, win in ipairs(vim.fn.win_findbuf(state.buf)) do
    if #api.nvim_list_wins() > 1 then
      pcall(api.nvim_win_close, win, false)
    end
  end
end

--- The selection of a command's range, as LSP positions in {client}'s encoding, and its text.
---@return table? selection, string? text
local function selection_of(bufnr, range, enc)
  local line1, line2 = range.line1, range.line2
  local lines = api.nvim_buf_get_lines(bufnr, line1 - 1, line2, false)
  if #lines == 0 then
    return nil
  end
  local scol, ecol = 0, #lines[#lines]
  local vs, ve = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  if range.range == 2 and vim.fn.visualmode() == 'v' and vs[2] == line1 and ve[2] == line2 then
    scol = math.max(0, vs[3] - 1)
    local last = lines[#lines]
    if ve[3] > 0 and ve[3] <= #last then
      -- '> marks the first byte of the last selected character: include all of it
      local char_len = #vim.fn.strcharpart(last:sub(ve[3]), 0, 1)
      ecol = ve[3] - 1 + math.max(1, char_len)
    end
  end
  local start = { line = line1 - 1, character = exlsp()._lsp_col(lines[1], enc, scol) }
  local finish
  local linewise = scol == 0 and ecol == #lines[#lines]
  if linewise and line2 < api.nvim_buf_line_count(bufnr) then
    finish = { line = line2, character = 0 }
  else
    finish = { line = line2 - 1, character = exlsp()._lsp_col(lines[#lines], enc, ecol) }
  end
  local text_lines = vim.deepcopy(lines)
  text_lines[#text_lines] = text_lines[#text_lines]:sub(1, ecol)
  text_lines[1] = text_lines[1]:sub(scol + 1)
  return { start = start, ['end'] = finish }, table.concat(text_lines, '\n')
end

M._selection_of = selection_of

--- The token is ours: handle this `$/progress` (called by the client's `$/progress` handler).
---@return boolean handled
function M.on_progress(result, ctx)
  local run = type(result) == 'table' and state.runs[result.token]
  if not run then
    return false
  end
  local value = result.value or {}
  if value.kind == 'report' then
    if not run.stopped and type(value.message) == 'string' then
      run.streamed = run.streamed .. value.message
      append(run.buf, value.message)
    end
  elseif value.kind == 'end' then
    run.ended = value.message or ''
    state.runs[result.token] = nil
  end
  return true
end

local function finish_run(run)
  run.finished = true
  if state.current == run then
    state.current = nil
  end
end

--- Ask {run}'s question again without the session (the server keeps none): the whole conversation.
local function resend_stateless(run, handler)
  local client = vim.lsp.get_client_by_id(run.client_id)
  if not client or run.retried then
    return false
  end
  run.retried = true
  run.params.sessionId = nil
  run.params.messages = vim.deepcopy(state.messages) -- the question is its last message
  state.runs[run.token] = run
  local ok, id = exlsp()._call(client, 'request', 'exlsp/chat', run.params, handler, run.req_buf)
  if ok then
    run.id = id
  end
  return ok
end

local function on_result(run, err, result)
  if run.finished then
    return -- stopped already
  end
  if err and run.params.sessionId and M._sessions_unavailable(err) then
    state.stateless[run.client_id] = true
    if resend_stateless(run, function(e, r)
      on_result(run, e, r)
    end) then
      return
    end
  end
  if not err and run.params.sessionId and type(result) == 'table' and result.sessionId ~= run.params.sessionId then
    -- an exlsp from before sessions ignores sessionId: it answered, but keeps nothing
    state.stateless[run.client_id] = true
  end
  if err then
    run.error = err.message or vim.inspect(err)
    table.remove(state.messages) -- the question got no answer
    append_lines(run.buf, { '', ('[error: %s]'):format(run.error) })
    finish_run(run)
    return
  end
  run.result = result
  local text = type(result) == 'table' and result.text or ''
  if text ~= run.streamed and api.nvim_buf_is_valid(run.buf) then
    -- a report went missing: the result is authoritative
    run.resynced = true
    set_text(run.buf, function()
      local row = run.answer_row
      api.nvim_buf_set_lines(run.buf, row, -1, false, vim.split(text, '\n', { plain = true }))
    end)
    follow(run.buf)
  end
  table.insert(state.messages, { role = 'assistant', content = text })
  finish_run(run)
end

--- Stop the answer being written; true if there was one.
function M.stop()
  local run = state.current
  if not run or run.finished then
    return false
  end
  run.stopped = true
  local client = vim.lsp.get_client_by_id(run.client_id)
  if client and run.id then
    pcall(exlsp()._call, client, 'cancel_request', run.id)
  end
  -- keep what was written: the conversation goes on from there
  if run.streamed ~= '' then
    table.insert(state.messages, { role = 'assistant', content = run.streamed })
  else
    table.remove(state.messages)
  end
  append_lines(run.buf, { STOPPED })
  finish_run(run)
  return true
end

---@class exlsp.chat.AskOpts
---@field range? {range: integer, line1: integer, line2: integer} a command's range (selection)
---@field source? integer the buffer the question is about (default: current, unless the chat)
---@field max_tokens? integer

--- Ask {question}; the answer streams into the chat buffer.
---@param question string
---@param opts? exlsp.chat.AskOpts
function M.ask(question, opts)
  opts = opts or {}
  local cfg = config()
  local cur = api.nvim_get_current_buf()
  local source = opts.source or ((cur ~= state.buf) and cur or state.source)
  local client = exlsp().client(source)
  if not client then
    vim.notify('exlsp: not running — call require("exlsp").setup() and open a file', vim.log.levels.ERROR)
    return nil
  end
  local attached = source and api.nvim_buf_is_valid(source) and client.attached_buffers[source]
  M.stop()
  ensure_session(client) -- the stored conversation first: the question follows it
  local buf = buffer()
  state.source = attached and source or state.source

  local params = { messages = {} }
  local sel, sel_text
  local content = question
  if opts.range and opts.range.range > 0 and source and api.nvim_buf_is_valid(source) then
    sel, sel_text = selection_of(source, opts.range, client.offset_encoding)
    if sel_text and not attached then
      -- the server does not have this buffer: the selection goes into the question itself
      content = ('%s\n\n```%s\n%s\n```'):format(question, vim.bo[source].filetype, sel_text)
    end
  end
  if attached and (sel or cfg.include_buffer ~= false) then
    params.textDocument = { uri = vim.uri_from_bufnr(source) }
    params.selection = sel
  end
  params.maxTokens = opts.max_tokens or cfg.max_tokens

  table.insert(state.messages, { role = 'user', content = content })
  if state.session and not state.stateless[client.id] then
    -- the server has the conversation: only the new question travels
    params.sessionId = state.session
    params.messages = { { role = 'user', content = content } }
  else
    params.messages = vim.deepcopy(state.messages)
  end

  -- the question, the selection as a code block, then the answer's header
  local lines = {}
  local empty = api.nvim_buf_line_count(buf) == 1 and api.nvim_buf_get_lines(buf, 0, 1, true)[1] == ''
  if not empty then
    table.insert(lines, '')
  end
  vim.list_extend(lines, { '## You', '' })
  vim.list_extend(lines, vim.split(question, '\n', { plain = true }))
  if sel_text then
    local name = vim.fn.fnamemodify(api.nvim_buf_get_name(source), ':~:.')
    vim.list_extend(lines, {
      '',
      ('`%s:%d-%d`'):format(name, sel.start.line + 1, sel['end'].line + (sel['end'].character > 0 and 1 or 0)),
      '```' .. vim.bo[source].filetype,
    })
    vim.list_extend(lines, vim.split(sel_text, '\n', { plain = true }))
    table.insert(lines, '```')
  end
  vim.list_extend(lines, { '', '## exlsp', '', '' }) -- the answer goes on the last (empty) line
  append_lines(buf, lines)

  state.seq = state.seq + 1
  local token = ('exlsp-chat-%d-%d'):format(vim.fn.getpid(), state.seq)
  params.workDoneToken = token
  ---@type exlsp.chat.Run
  local run = {
    token = token, client_id = client.id, buf = buf, question = question, params = params,
    streamed = '', answer_row = api.nvim_buf_line_count(buf) - 1, req_buf = attached and source or nil,
  }
  state.runs[token] = run
  state.current = run
  state.last = run
  M.open(cfg.focus ~= false)

  local ok, id = exlsp()._call(client, 'request', 'exlsp/chat', params, function(err, result)
    on_result(run, err, result)
  end, attached and source or nil)
  if not ok then
    state.runs[token] = nil
    table.remove(state.messages)
    append_lines(buf, { '[error: exlsp/chat could not be sent]' })
    finish_run(run)
    return nil
  end
  run.id = id
  return run
end

--- Start a new conversation in a new session (the buffer is cleared; the old session stays on
--- the server).
function M.reset()
  M.stop()
  state.messages = {}
  state.base = M.session_base()
  state.session = M.new_session_id(state.base)
  state.loaded = state.session -- nothing is stored under a new id yet
  if state.buf and api.nvim_buf_is_valid(state.buf) then
    set_text(state.buf, function()
      api.nvim_buf_set_lines(state.buf, 0, -1, true, {})
    end)
  end
end

--- :ExlspChat [question] (from a range: with the selection).
function M.command(cmd)
  local question = vim.trim(cmd.args or '')
  local range = cmd.range and cmd.range > 0 and { range = cmd.range, line1 = cmd.line1, line2 = cmd.line2 } or nil
  local cur = api.nvim_get_current_buf()
  local source = cur ~= state.buf and cur or nil -- from the chat itself: the last file asked about
  if source == nil then
    range = nil
  end
  if question ~= '' then
    return M.ask(question, { range = range, source = source })
  end
  M.open(true)
  vim.ui.input({ prompt = 'exlsp> ' }, function(q)
    if q and q ~= '' then
      M.ask(q, { range = range, source = source })
    end
  end)
end

--- The chat's state (for tests and statuslines).
function M.state()
  return state
end

--- The text of the last answer as the buffer shows it.
function M.answer_text(run)
  run = run or state.last
  if not run or not api.nvim_buf_is_valid(run.buf) then
    return nil
  end
  local lines = api.nvim_buf_get_lines(run.buf, run.answer_row, -1, false)
  return table.concat(lines, '\n')
end

return M
