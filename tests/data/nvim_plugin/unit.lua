-- Unit checks of the plugin's pure parts, no server: run by tests/test_nvim_plugin.py as
--   nvim --headless --clean -n -u init.lua -c "luafile unit.lua"
-- Writes {results = {name: {ok, got, want}}} to $EXLSP_E2E_RESULT and quits.

local api = vim.api
local exlsp = require('exlsp')
local chat = require('exlsp.chat')
local results = {}

local function check(name, got, want)
  results[name] = { ok = vim.deep_equal(got, want), got = got, want = want }
end

local function scratch(lines)
  local buf = api.nvim_create_buf(true, false)
  api.nvim_set_current_buf(buf)
  api.nvim_buf_set_lines(buf, 0, -1, true, lines)
  return buf
end

vim.o.virtualedit = 'onemore' -- the cursor may stand after the last character, as in insert mode
local ok, err = pcall(function()
  -- the first word / line of a suggestion
  check('word: blanks then word characters', exlsp._piece(' n <= 1:', 'word'), ' n')
  check('word: stops at punctuation', exlsp._piece('foo.bar()', 'word'), 'foo')
  check('word: a run of punctuation', exlsp._piece('(x)', 'word'), '(')
  check('word: across a line break', exlsp._piece('\n    return x', 'word'), '\n    return')
  check('word: UTF-8 letters', exlsp._piece('été = 1', 'word'), 'été')
  check('word: only blanks', exlsp._piece('   ', 'word'), '   ')
  check('line: the first line', exlsp._piece('a = 1\nb = 2', 'line'), 'a = 1')
  check('line: starts on the next line', exlsp._piece('\n    b = 2\n    c', 'line'), '\n    b = 2')
  check('line: one line', exlsp._piece('abc', 'line'), 'abc')

  -- partial and whole accepts at the cursor (no client: nothing is counted)
  local buf = scratch({ 'x = f()' })
  local win = api.nvim_get_current_win()
  api.nvim_win_set_cursor(win, { 1, 6 })
  local s = { text = 'a, b)', srow = 0, scol = 6, right = 1, client_id = -1 }
  check('apply word: inserted', exlsp._apply(buf, win, s, 'word'), 'a')
  check('apply word: keeps the right text', api.nvim_buf_get_lines(buf, 0, -1, true), { 'x = f(a)' })
  check('apply word: cursor after it', api.nvim_win_get_cursor(win), { 1, 7 })
  check('typed through: the rest', exlsp._at_cursor(buf, win, s).text, ', b)')
  check('apply all: the rest, replacing the right text', exlsp._apply(buf, win, s, 'all'), ', b)')
  check('apply all: buffer', api.nvim_buf_get_lines(buf, 0, -1, true), { 'x = f(a, b)' })
  check('apply all: cursor at the end', api.nvim_win_get_cursor(win), { 1, 11 })
  check('typed elsewhere: no suggestion', exlsp._at_cursor(buf, win, { text = 'zz', srow = 0, scol = 0, right = 0 }), nil)
  buf = scratch({ 'if x:' })
  api.nvim_win_set_cursor(win, { 1, 5 })
  exlsp._apply(buf, win, { text = '\n    y = 1\n    z = 2', srow = 0, scol = 5, right = 0, client_id = -1 }, 'line')
  check('apply line: next line', api.nvim_buf_get_lines(buf, 0, -1, true), { 'if x:', '    y = 1' })
  check('apply line: cursor', api.nvim_win_get_cursor(win), { 2, 9 })
  check('last accept', exlsp._last_accept.inserted, '\n    y = 1')

  -- encodings
  check('utf-16 column to bytes', exlsp._byte_col('a = "é" + 1', 'utf-16', 6), 7)
  check('bytes to utf-16 column', exlsp._lsp_col('a = "é" + 1', 'utf-16', 7), 6)
  check('utf-8 is bytes', exlsp._byte_col('a = "é"', 'utf-8', 6), 6)

  -- the selection of a range: linewise, last line, charwise (visual marks)
  buf = scratch({ 'def f(x):', '    return "é" + x', 'print(f(1))' })
  check('range: lines 1-2', chat._selection_of(buf, { range = 2, line1 = 1, line2 = 2 }, 'utf-16'),
    { start = { line = 0, character = 0 }, ['end'] = { line = 2, character = 0 } })
  check('range: to the last line', chat._selection_of(buf, { range = 2, line1 = 2, line2 = 3 }, 'utf-16'),
    { start = { line = 1, character = 0 }, ['end'] = { line = 2, character = 11 } })
  api.nvim_win_set_cursor(win, { 2, 11 }) -- on the opening quote
  vim.cmd('normal! vf+')                  -- `"é" +`, charwise
  vim.cmd('normal! \27')
  local sel, text = chat._selection_of(buf, { range = 2, line1 = 2, line2 = 2 }, 'utf-16')
  check('charwise: positions in utf-16', sel, { start = { line = 1, character = 11 }, ['end'] = { line = 1, character = 16 } })
  check('charwise: text', text, '"é" +')
  sel = chat._selection_of(buf, { range = 2, line1 = 2, line2 = 2 }, 'utf-8')
  check('charwise: positions in utf-8', sel, { start = { line = 1, character = 11 }, ['end'] = { line = 1, character = 17 } })

  -- chat sessions: ids, "no sessions" errors, a stored conversation as the chat buffer shows it
  local base = chat.session_base('/home/u/proj')
  check('session: one id per directory', { base == chat.session_base('/home/u/proj'), base ~= chat.session_base('/home/u/other') }, { true, true })
  check('session: the id form', base:match('^nvim:%x+$') ~= nil and #base == 21, true)
  check('session: the current directory', chat.session_base(), chat.session_base(vim.fn.getcwd()))
  local new_id = chat.new_session_id(base, 36 * 36 + 35)
  check('session: new id under the base', new_id:match('^' .. vim.pesc(base) .. ':10z%x%x%x%x$') ~= nil, true)
  check('session: new ids differ', chat.new_session_id(base, 1) ~= chat.new_session_id(base, 2), true)
  check('no sessions: MethodNotFound', chat._sessions_unavailable({ code = -32601, message = 'Unhandled method' }), true)
  check('no sessions: said so', chat._sessions_unavailable({ code = -32602, message = 'exlsp/chat: this exlsp process keeps no chat sessions' }), true)
  check('no sessions: not a refused turn', chat._sessions_unavailable({ code = -32602,
    message = "exlsp/chat: the request adds no message to session 'x': send the new user turn" }), false)
  check('no sessions: not a bad id', chat._sessions_unavailable({ code = -32602, message = "exlsp/chat: sessionId: invalid session id '-x'" }), false)
  check('no sessions: not other errors', chat._sessions_unavailable({ code = -32603, message = 'keeps no chat sessions' }), false)
  local rlines, rhistory = chat._render({
    { role = 'system', content = 'Be brief.', complete = true },
    { role = 'user', content = 'Hi', complete = true },
    { role = 'assistant', content = 'Hello!\nHow can I help?', complete = true },
    { role = 'user', content = 'A story', complete = true },
    { role = 'assistant', content = 'Once', complete = false },
  }, 0, 's')
  check('render: lines as asked', rlines, { '## You', '', 'Hi', '', '## exlsp', '', 'Hello!', 'How can I help?', '', '## You', '',
    'A story', '', '## exlsp', '', 'Once', '[stopped]' })
  check('render: the conversation', rhistory, { { role = 'user', content = 'Hi' }, { role = 'assistant', content = 'Hello!\nHow can I help?' },
    { role = 'user', content = 'A story' }, { role = 'assistant', content = 'Once' } })
  check('render: left out', (chat._render({ { role = 'user', content = 'q' } }, 3, 'nvim:x'))[1],
    '_3 earlier messages not shown (all of them: `exlsp sessions show nvim:x`)_')

  -- the chat against in-process servers (no model): what travels with and without sessions
  local function fake_server(handlers, sent)
    return function()
      local closing, n = false, 0
      return {
        request = function(method, params, callback, notify_reply)
          n = n + 1
          local id = n
          table.insert(sent, { method = method, params = vim.deepcopy(params) })
          vim.schedule(function()
            local h = handlers[method]
            local e, r
            if h then
              e, r = h(params)
            else
              e = { code = -32601, message = 'Unhandled method ' .. method }
            end
            if notify_reply then
              notify_reply(id)
            end
            callback(e, r)
          end)
          return true, id
        end,
        notify = function()
          return true
        end,
        is_closing = function()
          return closing
        end,
        terminate = function()
          closing = true
        end,
      }
    end
  end
  local function answering(echo)
    local k = 0
    return function(p)
      k = k + 1
      return nil, { text = 'answer ' .. k, stopReason = 'eos', sessionId = echo and p.sessionId or nil }
    end
  end
  local function with_server(name, handlers)
    local sent = {}
    handlers.initialize = function()
      return nil, { capabilities = {} }
    end
    handlers.shutdown = function()
      return nil, vim.NIL
    end
    package.loaded['exlsp.chat'] = nil -- a fresh chat (its state is per Neovim)
    chat = require('exlsp.chat')
    local fbuf = scratch({ 'x = 1' })
    local id = assert(vim.lsp.start({ name = 'exlsp', cmd = fake_server(handlers, sent), root_dir = vim.fn.getcwd() }, { bufnr = fbuf }))
    local client = assert(vim.lsp.get_client_by_id(id))
    vim.wait(2000, function()
      return client.initialized
    end)
    local function ask(q)
      local run = assert(chat.ask(q, { source = fbuf }), 'ask ' .. q)
      vim.wait(2000, function()
        return run.finished
      end)
      return run
    end
    local r1, r2 = ask('q1'), ask('q2')
    local chats = {}
    for _, m in ipairs(sent) do
      if m.method == 'exlsp/chat' then
        table.insert(chats, { m.params.sessionId or false, vim.tbl_map(function(x)
          return x.content
        end, m.params.messages) })
      end
    end
    check(name .. ': answered', { r1.error or false, r2.error or false, chat.answer_text(r2) }, { false, false, 'answer 2' })
    client:stop(true)
    vim.wait(1000, function()
      return client:is_stopped()
    end)
    return chats
  end
  local here = chat.session_base()
  check('chat: with sessions, only the new question travels', with_server('sessions', {
    ['exlsp/chatSessions'] = function()
      return nil, { sessions = { { id = 'other', messageCount = 1 } } }
    end,
    ['exlsp/chatSession'] = function()
      return nil, vim.NIL
    end,
    ['exlsp/chat'] = answering(true),
  }), { { here, { 'q1' } }, { here, { 'q2' } } })
  local refusing = answering(true)
  check('chat: a server that keeps no sessions: asked again without, then the whole conversation', with_server('no sessions', {
    ['exlsp/chatSessions'] = function()
      return nil, { sessions = {} }
    end,
    ['exlsp/chatSession'] = function()
      return nil, vim.NIL
    end,
    ['exlsp/chat'] = function(p)
      if p.sessionId then
        return { code = -32602, message = 'exlsp/chat: this exlsp process keeps no chat sessions' }
      end
      return refusing(p)
    end,
  }), { { here, { 'q1' } }, { false, { 'q1' } }, { false, { 'q1', 'answer 1', 'q2' } } })
  check('chat: sessionId not echoed (ignored): then the whole conversation', with_server('not echoed', {
    ['exlsp/chatSessions'] = function()
      return nil, { sessions = {} }
    end,
    ['exlsp/chatSession'] = function()
      return nil, vim.NIL
    end,
    ['exlsp/chat'] = answering(false),
  }), { { here, { 'q1' } }, { false, { 'q1', 'answer 1', 'q2' } } })
  check('chat: an exlsp without the session methods: stateless from the start', with_server('no methods', {
    ['exlsp/chat'] = answering(false),
  }), { { false, { 'q1' } }, { false, { 'q1', 'answer 1', 'q2' } } })

  -- status lines
  local lines = exlsp.format_status({
    ready = true, loadError = vim.NIL, model = 'm', decode_tok_s = 12.3456, requests = { chats = 1 },
    zeta = 1, lsp = { accepted = 2 },
  })
  check('status lines', lines, { 'ready: true', 'model: m', 'decode_tok_s: 12.3', 'requests: { chats = 1 }', 'zeta: 1', 'lsp:', '  accepted: 2' })

  -- options: lists replace the defaults, dicts merge
  local notified = {}
  local notify = vim.notify
  vim.notify = function(msg, level)
    table.insert(notified, { msg = msg, level = level })
  end
  local started = exlsp.setup({ cmd = { 'no-such-exlsp' }, keymaps = { accept_word = { '<C-l>' } }, chat = { split = 'tab' } })
  vim.notify = notify
  check('missing executable: setup() returns false', started, false)
  check('missing executable: one error', #notified == 1 and notified[1].level == vim.log.levels.ERROR
    and notified[1].msg:find('no-such-exlsp', 1, true) ~= nil, true)
  check('keymaps: a list replaces the default list', exlsp.config.keymaps.accept_word, { '<C-l>' })
  check('keymaps: the others stay', exlsp.config.keymaps.accept, '<Tab>')
  check('chat: merged', { exlsp.config.chat.split, exlsp.config.chat.include_buffer }, { 'tab', true })
  check('commands', vim.fn.exists(':ExlspChat') == 2 and vim.fn.exists(':ExlspStatus') == 2 and vim.fn.exists(':ExlspChatReset') == 2, true)
end)

local f = assert(io.open(assert(os.getenv('EXLSP_E2E_RESULT')), 'w'))
f:write(vim.json.encode({ results = results, error = (not ok) and tostring(err) or vim.NIL }))
f:close()
vim.cmd('qa!')
