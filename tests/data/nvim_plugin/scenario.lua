-- The plugin's end-to-end scenario, run by tests/test_nvim_plugin.py as
--   nvim --headless --clean -n -u init.lua -c "luafile scenario.lua"
-- Keys go through nvim_input (handled by the main loop, mappings included); a coroutine polls
-- with timers and writes what it saw to $EXLSP_E2E_RESULT as JSON.
--
--   EXLSP_E2E_CMD     JSON list, the server command
--   EXLSP_E2E_FILE    the Python file to open (ends with "    if")
--   EXLSP_E2E_RESULT  where to write the result
--   EXLSP_E2E_INLINE  setup's `inline` ('auto' by default; 'ghost': the extmark fallback)
--   EXLSP_E2E_PARTS   'all' (default) or 'inline' (completions only)
--   EXLSP_E2E_STEP_MS timeout per step (default 20000)

local api = vim.api
local uv = vim.uv or vim.loop

local CMD = vim.json.decode((assert(os.getenv('EXLSP_E2E_CMD'), 'EXLSP_E2E_CMD not set')))
local FILE = assert(os.getenv('EXLSP_E2E_FILE'), 'EXLSP_E2E_FILE not set')
local INLINE = os.getenv('EXLSP_E2E_INLINE') or 'auto'
local PARTS = os.getenv('EXLSP_E2E_PARTS') or 'all'

local d = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), '..', 'nvim_driver.lua'))
local buf_text, wait, step, status, sleep = d.buf_text, d.wait, d.step, d.status, d.sleep
local function ghost(bufnr)
  return d.ghost(bufnr, { 'nvim.lsp.inline_completion', 'exlsp.ghost' })
end
local pending = d.pending
local result = { steps = {}, requests = {}, notifications = {}, elapsed_ms = {} }

local function by_kind(st, kind)
  return (st.accepted_by_kind or {})[kind] or 0
end

local function scenario()
  result.nvim_version = tostring(vim.version())
  local exlsp = require('exlsp')

  -- 0. a missing executable: a clear error, nothing started
  local notify = vim.notify
  vim.notify = function(msg, level, opts)
    table.insert(result.notifications, { msg = tostring(msg), level = level })
    return notify(msg, level, opts)
  end
  local missing_ok = exlsp.setup({ cmd = { 'exlsp-missing-for-the-test', 'serve' } })
  step('missing_cmd', {
    returned = missing_ok,
    notifications = vim.deepcopy(result.notifications),
    enabled = vim.lsp.is_enabled('exlsp'),
    clients = #vim.lsp.get_clients({ name = 'exlsp' }),
  })

  -- short answers keep the run short on a loaded CPU (init_options reach the server as settings)
  assert(exlsp.setup({
    cmd = CMD,
    inline = INLINE,
    init_options = { completion = { maxTokens = 24 } },
    chat = { max_tokens = 24 },
  }), 'setup() failed')
  result.inline_mode = exlsp.inline_mode()

  api.nvim_create_autocmd('LspRequest', {
    callback = function(ev)
      local r = ev.data.request
      table.insert(result.requests, { id = ev.data.request_id, method = r.method, type = r.type })
    end,
  })

  vim.cmd.edit(vim.fn.fnameescape(FILE))
  local bufnr = api.nvim_get_current_buf()
  local src_win = api.nvim_get_current_win()
  local client = wait('exlsp to attach to the buffer', function()
    local c = vim.lsp.get_clients({ bufnr = bufnr, name = 'exlsp' })[1]
    return c and c.initialized and c
  end)
  wait('the model to be loaded (exlsp/status ready)', function()
    return status(client, bufnr).ready
  end)
  local maps = {}
  for _, lhs in ipairs({ '<Tab>', '<M-w>', '<C-Right>', '<M-l>', '<M-]>', '<M-[>', '<C-]>' }) do
    local m = vim.fn.maparg(lhs, 'i', false, true)
    maps[lhs] = m.buffer == 1 and m.desc or vim.NIL
  end
  step('attached', {
    filetype = vim.bo[bufnr].filetype,
    native_enabled = vim.lsp.inline_completion and vim.lsp.inline_completion.is_enabled({ bufnr = bufnr }) or false,
    keymaps = maps,
    clients = #vim.lsp.get_clients({ name = 'exlsp' }),
  })
  local st0 = status(client, bufnr)

  -- 1. insert mode at the end of "    if": a suggestion; <C-]> dismisses it (until the next
  --    keystroke), the text stays as it was
  local original = buf_text(bufnr)
  api.nvim_input('GA')
  local first_shown = wait('a suggestion at the end of "    if"', function()
    return api.nvim_get_mode().mode == 'i' and ghost(bufnr)
  end)
  api.nvim_input('<C-]>')
  wait('the dismissed suggestion to disappear', function()
    return not ghost(bufnr)
  end, 3000)
  sleep(400) -- longer than any debounce: nothing comes back by itself
  step('dismiss', {
    shown = first_shown,
    before = original,
    after = buf_text(bufnr),
    mode = api.nvim_get_mode().mode,
    still_hidden = ghost(bufnr) == nil,
  })

  -- 2. back into insert mode: the suggestion again; <M-w> takes its first word only
  api.nvim_input('<Esc>A')
  local shown = wait('the suggestion again', function()
    return api.nvim_get_mode().mode == 'i' and ghost(bufnr)
  end)
  api.nvim_input('<M-w>')
  wait('the first word in the buffer', function()
    return buf_text(bufnr) ~= original
  end)
  sleep(30)
  local st1 = wait('exlsp/status to count the word accept', function()
    local s = status(client, bufnr)
    return by_kind(s, 'word') > by_kind(st0, 'word') and s
  end)
  step('word', {
    before = original,
    shown = shown,
    text = buf_text(bufnr),
    last_accept = exlsp._last_accept,
    cursor = api.nvim_win_get_cursor(0),
    mode = api.nvim_get_mode().mode,
    accepted_before = st0.accepted,
    accepted = st1.accepted,
    word_before = by_kind(st0, 'word'),
    word = by_kind(st1, 'word'),
  })

  -- 3. the rest comes back as a suggestion; <Tab> accepts all of it (the item's own command)
  local typed = buf_text(bufnr)
  local shown2 = wait('the rest of the suggestion after the word', function()
    return ghost(bufnr)
  end)
  api.nvim_input('<Tab>')
  wait('the accepted suggestion in the buffer', function()
    return buf_text(bufnr) ~= typed
  end)
  sleep(30)
  local st2 = wait('exlsp/status to count the accept', function()
    local s = status(client, bufnr)
    return (s.accepted or 0) > (st1.accepted or 0) and s
  end)
  step('tab', {
    before = typed,
    shown = shown2,
    text = buf_text(bufnr),
    cursor = api.nvim_win_get_cursor(0),
    mode = api.nvim_get_mode().mode,
    accepted_before = st1.accepted,
    accepted = st2.accepted,
    by_kind = st2.accepted_by_kind,
  })

  -- 4. a new line: <M-]> cycles when there are several candidates, <M-l> takes the first line
  local before4 = buf_text(bufnr)
  api.nvim_input('<CR>')
  local shown4 = wait('a suggestion on the new line', function()
    local t = buf_text(bufnr)
    return t ~= before4 and ghost(bufnr)
  end)
  local typed4 = buf_text(bufnr)
  local cycled = vim.NIL
  api.nvim_input('<M-]>')
  sleep(100)
  cycled = ghost(bufnr) or vim.NIL
  api.nvim_input('<M-[>')
  sleep(100)
  local back = ghost(bufnr) or vim.NIL
  api.nvim_input('<M-l>')
  wait('the first line in the buffer', function()
    return buf_text(bufnr) ~= typed4
  end)
  sleep(30)
  local st4 = wait('exlsp/status to count the line accept', function()
    local s = status(client, bufnr)
    return by_kind(s, 'line') > by_kind(st2, 'line') and s
  end)
  step('line', {
    before = typed4,
    shown = shown4,
    cycled = cycled,
    back = back,
    text = buf_text(bufnr),
    last_accept = exlsp._last_accept,
    mode = api.nvim_get_mode().mode,
    line_before = by_kind(st2, 'line'),
    line = by_kind(st4, 'line'),
  })
  api.nvim_input('<Esc>')
  wait('normal mode and no pending requests', function()
    return api.nvim_get_mode().mode == 'n' and not pending(client)
  end)

  -- 5. <Tab> with no suggestion falls through to a plain Tab
  api.nvim_input('<Esc>')
  wait('normal mode and no pending requests', function()
    return api.nvim_get_mode().mode == 'n' and not pending(client)
  end)
  -- a fresh empty line: nothing visible yet, so <Tab> is a Tab (a bare tab for the check)
  vim.bo[bufnr].expandtab = false
  vim.bo[bufnr].softtabstop = 0
  vim.bo[bufnr].autoindent = false
  vim.bo[bufnr].indentexpr = ''
  local tab_before = buf_text(bufnr)
  api.nvim_input('o<Tab>')
  local tab_after = wait('the Tab typed', function()
    local t = buf_text(bufnr)
    return t ~= tab_before and t
  end)
  step('tab_fallthrough', { before = tab_before, after = tab_after })
  api.nvim_input('<Esc>')
  wait('normal mode and no pending requests', function()
    return api.nvim_get_mode().mode == 'n' and not pending(client)
  end)
  vim.cmd('silent! undo')
  sleep(100)

  if PARTS ~= 'all' then
    step('done')
    return
  end
  local chat = require('exlsp.chat')

  -- 6. :ExlspChat: a split with a markdown buffer, the answer streamed into it
  vim.cmd('ExlspChat Say hello in one short sentence.')
  local run1 = chat.state().current
  assert(run1, 'no chat run started')
  wait('the chat answer', function()
    return run1.finished and run1.ended
  end)
  local chat_buf = run1.buf
  step('chat', {
    text = run1.result and run1.result.text or vim.NIL,
    error = run1.error or vim.NIL,
    streamed = run1.streamed,
    answer = chat.answer_text(run1),
    buffer = buf_text(chat_buf),
    resynced = run1.resynced or false,
    ended = run1.ended,
    filetype = vim.bo[chat_buf].filetype,
    current_is_chat = api.nvim_get_current_buf() == chat_buf,
    windows = #api.nvim_tabpage_list_wins(0),
    messages = #run1.params.messages,
    has_document = run1.params.textDocument ~= nil,
    token = run1.params.workDoneToken,
    session = run1.params.sessionId or vim.NIL,
    base = chat.session_base(),
  })

  -- 7. a follow-up about lines 1-2 (a range): the history goes along, with the selection
  api.nvim_set_current_win(src_win)
  vim.cmd('1,2ExlspChat What does this code do?')
  local run2 = chat.state().current
  assert(run2, 'no follow-up run started')
  wait('the follow-up answer', function()
    return run2.finished and run2.ended
  end)
  step('followup', {
    text = run2.result and run2.result.text or vim.NIL,
    error = run2.error or vim.NIL,
    answer = chat.answer_text(run2),
    buffer = buf_text(chat_buf),
    same_buffer = run2.buf == chat_buf,
    windows = #api.nvim_tabpage_list_wins(0),
    messages = run2.params.messages,
    session = run2.params.sessionId or vim.NIL,
    history = vim.deepcopy(chat.state().messages),
    textDocument = run2.params.textDocument or vim.NIL,
    selection = run2.params.selection or vim.NIL,
    uri = vim.uri_from_bufnr(bufnr),
  })

  -- 8. q in the chat buffer stops a long answer ($/cancelRequest): [stopped]
  local cancelled_before = status(client, bufnr).jobs_cancelled or 0
  local run3 = chat.ask('Write a very long essay about the history of computers, with many paragraphs.',
    { source = bufnr, max_tokens = 2048 })
  assert(run3, 'the long chat did not start')
  wait('the first streamed delta of the long answer', function()
    return run3.streamed ~= ''
  end)
  assert(api.nvim_get_current_buf() == chat_buf, 'the chat window is not focused')
  api.nvim_input('q')
  wait('the run to stop', function()
    return run3.stopped and run3.finished
  end, 3000)
  local st3 = wait('exlsp/status to count the cancelled chat job', function()
    local s = status(client, bufnr)
    return (s.jobs_cancelled or 0) > cancelled_before and s
  end)
  wait('the end of the cancelled chat progress', function()
    return run3.ended
  end, 5000)
  local chat_lines = api.nvim_buf_get_lines(chat_buf, 0, -1, true)
  step('stop', {
    before = cancelled_before,
    jobs_cancelled = st3.jobs_cancelled,
    ended = run3.ended,
    streamed_chars = #run3.streamed,
    last_line = chat_lines[#chat_lines],
    answer = chat.answer_text(run3),
    streamed = run3.streamed,
    chat_open = #vim.fn.win_findbuf(chat_buf) > 0,
    history = #chat.state().messages,
    cancel_sent = vim.tbl_contains(vim.tbl_map(function(r)
      return r.type .. ':' .. r.method
    end, result.requests), 'cancel:exlsp/chat'),
  })

  -- 8b. Neovim restarted (the chat module and its buffer forgotten): opening the chat reads the
  --     directory's session back from the server, the stopped answer marked [stopped]
  local function forget_chat()
    local old = chat.state().buf
    if old and api.nvim_buf_is_valid(old) then
      api.nvim_buf_delete(old, { force = true })
    end
    package.loaded['exlsp.chat'] = nil
    chat = require('exlsp.chat')
  end
  local session1 = run1.params.sessionId
  forget_chat()
  api.nvim_set_current_win(src_win)
  chat.open(false)
  local restored_buf = chat.state().buf
  step('restore', {
    session = chat.state().session or vim.NIL,
    buffer = buf_text(restored_buf),
    history = vim.tbl_map(function(m)
      return m.role
    end, chat.state().messages),
    first_answer = run1.result and run1.result.text or vim.NIL,
    followup_answer = run2.result and run2.result.text or vim.NIL,
    stopped_streamed = run3.streamed,
    lines = #api.nvim_buf_get_lines(restored_buf, 0, -1, true),
  })

  -- 8c. :ExlspChatReset: a new session (the old one stays); a later Neovim continues the newest
  vim.cmd('ExlspChatReset')
  local session2 = chat.state().session
  local reset_buffer = buf_text(chat.state().buf)
  local run4 = chat.ask('Hi.', { source = bufnr, max_tokens = 4 })
  assert(run4, 'no chat run after the reset')
  wait('the answer in the new session', function()
    return run4.finished and run4.ended
  end)
  forget_chat()
  api.nvim_set_current_win(src_win)
  chat.open(false)
  step('reset', {
    before = session1,
    after = session2,
    reset_buffer = reset_buffer,
    sent_session = run4.params.sessionId or vim.NIL,
    sent_messages = #run4.params.messages,
    error = run4.error or vim.NIL,
    reopened = chat.state().session or vim.NIL,
    reopened_history = #chat.state().messages,
    reopened_buffer = buf_text(chat.state().buf),
  })
  chat.close()

  -- 9. :ExlspStatus in a float
  api.nvim_set_current_win(src_win)
  local wins_before = #api.nvim_list_wins()
  vim.cmd('ExlspStatus')
  local float = wait('the status float', function()
    for _, w in ipairs(api.nvim_list_wins()) do
      if api.nvim_win_get_config(w).relative ~= '' then
        return w
      end
    end
  end, 5000)
  step('status', {
    lines = api.nvim_buf_get_lines(api.nvim_win_get_buf(float), 0, -1, true),
    windows_before = wins_before,
  })
  if api.nvim_win_is_valid(float) then
    api.nvim_win_close(float, true)
  end

  -- 10. :checkhealth exlsp
  api.nvim_set_current_win(src_win)
  vim.cmd('checkhealth exlsp')
  local hbuf = wait('the health buffer', function()
    for _, b in ipairs(api.nvim_list_bufs()) do
      if api.nvim_buf_is_loaded(b) and vim.bo[b].filetype == 'checkhealth' then
        local t = buf_text(b)
        if t:find('exlsp', 1, true) then
          return b
        end
      end
    end
  end, 10000)
  step('health', { text = buf_text(hbuf) })

  step('done')
end

d.start(result, scenario)
