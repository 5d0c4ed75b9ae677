-- The end-to-end scenario, run by tests/test_neovim_e2e.py as
--   nvim --headless --clean -u init.lua -c "luafile e2e.lua"
-- It drives Neovim like a user (keys through nvim_input, handled by the main loop) from a
-- coroutine that polls with timers, and writes what it saw to $EXLSP_E2E_RESULT as JSON.
--
--   EXLSP_E2E_FILE    the Python file to open (ends with "    if")
--   EXLSP_E2E_RESULT  where to write the result
--   EXLSP_E2E_STEP_MS timeout per step (default 20000)

local api = vim.api
local uv = vim.uv or vim.loop

local FILE = assert(os.getenv('EXLSP_E2E_FILE'), 'EXLSP_E2E_FILE not set')
local TYPED = ' n'

local d = dofile(vim.fs.joinpath(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)), '..', 'nvim_driver.lua'))
local buf_text, wait, step, status, sleep = d.buf_text, d.wait, d.step, d.status, d.sleep
local function ghost(bufnr)
  return d.ghost(bufnr, { 'nvim.lsp.inline_completion' })
end
local pending = d.pending
local result = { steps = {}, requests = {}, progress = {}, elapsed_ms = {} }

local function scenario()
  assert(vim.lsp.inline_completion, 'this Neovim has no vim.lsp.inline_completion (needs 0.12)')
  result.nvim_version = tostring(vim.version())

  api.nvim_create_autocmd('LspRequest', {
    callback = function(ev)
      local r = ev.data.request
      table.insert(result.requests, { id = ev.data.request_id, method = r.method, type = r.type })
    end,
  })

  vim.cmd.edit(vim.fn.fnameescape(FILE))
  local bufnr = api.nvim_get_current_buf()
  step('filetype', vim.bo[bufnr].filetype)

  -- 1. the server starts and attaches; the model is loaded
  local client = wait('exlsp to attach to the buffer', function()
    local c = vim.lsp.get_clients({ bufnr = bufnr, name = 'exlsp' })[1]
    return c and c.initialized and c
  end)
  result.client = {
    offset_encoding = client.offset_encoding,
    inline_completion_provider = client.server_capabilities.inlineCompletionProvider ~= nil,
    execute_commands = (client.server_capabilities.executeCommandProvider or {}).commands,
  }
  assert(vim.lsp.inline_completion.is_enabled({ bufnr = bufnr }), 'inline completion not enabled')
  wait('the model to be loaded (exlsp/status ready)', function()
    return status(client, bufnr).ready
  end)
  step('attached')

  -- 2. type at the end of the buffer in insert mode: automatic trigger (200 ms debounce)
  local before = buf_text(bufnr)
  api.nvim_input('GA' .. TYPED)
  wait('insert mode with the typed text', function()
    return api.nvim_get_mode().mode == 'i' and buf_text(bufnr) == before .. TYPED
  end)
  local typed_text = buf_text(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  step('typed', { text = typed_text, cursor = cursor })

  local shown = wait('a suggestion rendered as ghost text (extmark in nvim.lsp.inline_completion)', function()
    return ghost(bufnr)
  end)
  step('shown', shown)
  assert(api.nvim_get_mode().mode == 'i', 'left insert mode while waiting')
  assert(buf_text(bufnr) == typed_text, 'buffer changed before accept')

  -- 3. accept it with <Tab> (the keymap calls vim.lsp.inline_completion.get())
  local accepted_before = status(client, bufnr).accepted
  api.nvim_input('<Tab>')
  wait('the accepted suggestion in the buffer', function()
    return buf_text(bufnr) ~= typed_text
  end)
  sleep(50)
  step('accepted', {
    text = buf_text(bufnr),
    expected = typed_text .. shown.text,
    cursor = api.nvim_win_get_cursor(0),
    mode = api.nvim_get_mode().mode,
  })

  -- 4. the item's command went through workspace/executeCommand and was counted
  local st = wait('exlsp/status to count the accept', function()
    local s = status(client, bufnr)
    return (s.accepted or 0) > (accepted_before or 0) and s
  end)
  step('accept_counted', {
    before = accepted_before,
    accepted = st.accepted,
    lsp_accepted = st.lsp.accepted,
    position_encoding = st.lsp.positionEncoding or vim.NIL,
  })

  -- settle: leave insert mode (aborts any follow-up completion), let requests finish
  api.nvim_input('<Esc>')
  wait('normal mode and no pending requests', function()
    return api.nvim_get_mode().mode == 'n' and not pending(client)
  end)
  sleep(200)

  -- 5. chat streamed as $/progress into a scratch buffer
  local chat_buf = api.nvim_create_buf(false, true)
  local streamed = { t1 = '', t2 = '' }
  local ended = {}
  api.nvim_create_autocmd('LspProgress', {
    callback = function(ev)
      local p = ev.data.params
      if ev.data.client_id ~= client.id or streamed[p.token] == nil then
        return
      end
      local v = p.value
      table.insert(result.progress, { token = p.token, kind = v.kind, message = v.message })
      if v.kind == 'report' and v.message then
        streamed[p.token] = streamed[p.token] .. v.message
        if p.token == 't1' then
          api.nvim_buf_set_lines(chat_buf, 0, -1, true, vim.split(streamed.t1, '\n', { plain = true }))
        end
      elseif v.kind == 'end' then
        ended[p.token] = v.message or ''
      end
    end,
  })
  local chat_resp
  local ok, chat_id = client:request('exlsp/chat', {
    messages = { { role = 'user', content = 'Say hello in one short sentence.' } },
    workDoneToken = 't1',
    maxTokens = 24,
  }, function(err, res)
    chat_resp = { err = err, result = res }
  end, bufnr)
  assert(ok, 'exlsp/chat could not be sent')
  wait('the exlsp/chat response', function()
    return chat_resp
  end)
  wait('the end of the chat progress', function()
    return ended.t1
  end)
  assert(not chat_resp.err, 'exlsp/chat: ' .. vim.inspect(chat_resp.err))
  step('chat', { id = chat_id, text = chat_resp.result.text, buffer = buf_text(chat_buf), ended = ended.t1 })

  -- 6. stop a long chat: $/cancelRequest from client:cancel_request()
  local cancelled_before = status(client, bufnr).jobs_cancelled or 0
  local long_resp
  local ok2, long_id = client:request('exlsp/chat', {
    messages = { { role = 'user', content = 'Write a very long essay about the history of computers, with many paragraphs.' } },
    workDoneToken = 't2',
    maxTokens = 4096,
  }, function(err, res)
    long_resp = { err = err, result = res }
  end, bufnr)
  assert(ok2, 'the long exlsp/chat could not be sent')
  wait('the first streamed delta of the long chat', function()
    return streamed.t2 ~= ''
  end)
  client:cancel_request(long_id)
  local st2 = wait('exlsp/status to count the cancelled chat job', function()
    local s = status(client, bufnr)
    return (s.jobs_cancelled or 0) > cancelled_before and s
  end)
  wait('the end of the cancelled chat progress', function()
    return ended.t2
  end, 5000)
  sleep(100)
  step('cancel', {
    before = cancelled_before,
    jobs_cancelled = st2.jobs_cancelled,
    ended = ended.t2,
    streamed_chars = #streamed.t2,
    response = long_resp and { err = long_resp.err, finished = long_resp.result ~= nil } or vim.NIL,
  })

  step('done')
end

d.start(result, scenario)
