-- exlsp for Neovim: starts (or attaches to) `exlsp serve` through the editor's own LSP client,
-- shows inline completions (native `vim.lsp.inline_completion` on Neovim >= 0.12, extmark ghost
-- text on 0.10/0.11), accepts them whole, by word or by line, and chats (lua/exlsp/chat.lua).
--
--   require('exlsp').setup({ cmd = { 'exlsp', 'serve' } })
--
-- See editors/nvim/README.md for every option and the default keymaps.

local api = vim.api

local M = {}

local NAME = 'exlsp'
local NATIVE_NS = 'nvim.lsp.inline_completion'

---@class exlsp.Keymaps
---@field accept? string|string[]|false       accept the whole suggestion (falls through when none)
---@field accept_word? string|string[]|false  accept its first word
---@field accept_line? string|string[]|false  accept its first line
---@field next? string|string[]|false         next candidate
---@field prev? string|string[]|false         previous candidate
---@field dismiss? string|string[]|false      hide the suggestion

---@class exlsp.Config
M.defaults = {
  --- the server command; `exlsp serve` attaches to the exlsp process that already owns the model
  cmd = { 'exlsp', 'serve' },
  --- filetypes to attach to; nil: every buffer that is a file (buftype '')
  filetypes = nil,
  --- markers of a project root (for workspace folders); the file's directory otherwise
  root_markers = { '.git' },
  --- sent as initializationOptions, e.g. { completion = { maxTokens = 64 }, chat = { maxTokens = 512 } }
  init_options = nil,
  --- inline completion: 'auto' (native on >= 0.12, extmarks before), 'native', 'ghost', or false
  inline = 'auto',
  --- debounce of the extmark fallback's automatic requests (native 0.12 has a fixed 200 ms)
  debounce_ms = 100,
  ---@type exlsp.Keymaps
  keymaps = {
    accept = '<Tab>',
    accept_word = { '<M-w>', '<C-Right>' },
    accept_line = '<M-l>',
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
  },
  chat = {
    --- 'vertical' (right), 'horizontal' (below) or 'tab'
    split = 'vertical',
    --- width (vertical) or height (horizontal) of the split; nil: half
    size = nil,
    --- maxTokens of each answer; nil: the server's chat.maxTokens
    max_tokens = nil,
    --- send the current file (textDocument) with each question, so /explain and friends see it
    include_buffer = true,
    --- focus the chat window when a question is asked
    focus = true,
    --- keys in the chat buffer (normal mode)
    keymaps = { stop = { 'q', '<C-c>' }, ask = '<CR>' },
  },
}

---@type exlsp.Config
M.config = vim.deepcopy(M.defaults)

--- The last partial or whole accept done by this plugin (for :ExlspStatus and tests).
M._last_accept = nil

local function has(v)
  return vim.fn.has('nvim-' .. v) == 1
end

--- Call a method of a client on Neovim 0.10 (`client.request(...)`) and later (`client:request(...)`).
local function call(client, method, ...)
  if has('0.11') then
    return client[method](client, ...)
  end
  return client[method](...)
end
M._call = call

--- The inline completion implementation in use: 'native', 'ghost' or nil (off).
function M.inline_mode()
  local mode = M.config.inline
  if mode == false then
    return nil
  end
  if mode == 'auto' then
    return vim.lsp.inline_completion and 'native' or 'ghost'
  end
  if mode == 'native' and not vim.lsp.inline_completion then
    return 'ghost'
  end
  return mode
end

--- The exlsp client attached to {bufnr} (or, without one there, any exlsp client).
---@param bufnr? integer
---@param attached_only? boolean
function M.client(bufnr, attached_only)
  bufnr = (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
  local c = vim.lsp.get_clients({ name = NAME, bufnr = bufnr })[1]
  if c or attached_only then
    return c
  end
  return vim.lsp.get_clients({ name = NAME })[1]
end

---------------------------------------------------------------------------------------------------
-- Positions and partial accepts (shared by the native and the extmark implementations)

--- Byte column of LSP {character} in {line} for {enc}.
function M._byte_col(line, enc, character)
  if enc == 'utf-8' or enc == nil then
    return math.min(character, #line)
  end
  local ok, col
  if has('0.11') then
    ok, col = pcall(vim.str_byteindex, line, enc, character, false)
  else
    ok, col = pcall(vim.str_byteindex, line, character, enc == 'utf-16')
  end
  return ok and col or #line
end

--- LSP character of byte {col} in {line} for {enc}.
function M._lsp_col(line, enc, col)
  col = math.min(col, #line)
  if enc == 'utf-8' or enc == nil then
    return col
  end
  if has('0.11') then
    return vim.str_utfindex(line, enc, col, false)
  end
  local u32, u16 = vim.str_utfindex(line, col)
  return enc == 'utf-16' and u16 or u32
end

--- The first word (leading blanks included) or the first line of {text}.
---@param text string
---@param kind 'word'|'line'|'all'
function M._piece(text, kind)
  if kind == 'word' then
    local blank = text:match('^%s*')
    local rest = text:sub(#blank + 1)
    -- a run of word characters (bytes >= 0x80 count: UTF-8 letters), else of punctuation
    local word = rest:match('^[%w_\128-\255]+') or rest:match('^[^%w_%s\128-\255]+') or ''
    return blank .. word
  elseif kind == 'line' then
    local nl = text:find('\n', 1, true)
    if not nl then
      return text
    end
    if nl == 1 then -- the suggestion starts on the next line: take that line
      local nl2 = text:find('\n', 2, true)
      return nl2 and text:sub(1, nl2 - 1) or text
    end
    return text:sub(1, nl - 1)
  end
  return text
end

---@class exlsp.Suggestion
---@field text string the full text of the item
---@field srow integer 0-based row where the item applies (its range start, or the cursor)
---@field scol integer 0-based byte column
---@field right integer bytes right of the request's position that the item replaces
---@field command? table the item's command (exlsp.accept)
---@field client_id integer

--- Where the cursor stands in {s}: the part not typed yet, or nil when the cursor left it.
---@param s exlsp.Suggestion
---@return {text: string, row: integer, col: integer, right: integer}?
function M._at_cursor(bufnr, win, s)
  local cursor = api.nvim_win_get_cursor(win)
  local row, col = cursor[1] - 1, cursor[2]
  if row ~= s.srow or col < s.scol then
    return nil
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  local typed = line:sub(s.scol + 1, col)
  if s.text:sub(1, #typed) ~= typed then
    return nil
  end
  local right = math.max(0, math.min(s.right, #line - col))
  return { text = s.text:sub(#typed + 1), row = row, col = col, right = right }
end

--- Send `exlsp.accept` for {s}: the item's own command for 'all', else one with {kind} 'word'/'line'
--- (the key that was pressed, even when the word or line was all that was left).
local function count_accept(bufnr, s, kind, chars)
  local client = vim.lsp.get_client_by_id(s.client_id)
  if not client then
    return
  end
  local command = s.command
  if kind ~= 'all' or not command then
    local args = command and type(command.arguments) == 'table' and type(command.arguments[1]) == 'table'
        and vim.deepcopy(command.arguments[1])
      or { uri = vim.uri_from_bufnr(bufnr) }
    args.kind = kind == 'all' and 'completion' or kind
    args.chars = chars
    command = { title = 'exlsp: accepted', command = 'exlsp.accept', arguments = { args } }
  end
  call(client, 'request', 'workspace/executeCommand', {
    command = command.command,
    arguments = command.arguments,
  }, function() end, bufnr)
end

--- Insert the first word/line (or all) of {s} at the cursor; returns the inserted text.
---@param s exlsp.Suggestion
---@param kind 'word'|'line'|'all'
---@return string?
function M._apply(bufnr, win, s, kind)
  local at = M._at_cursor(bufnr, win, s)
  if not at or at.text == '' then
    return nil
  end
  local piece = M._piece(at.text, kind)
  if piece == '' then
    return nil
  end
  local whole = piece == at.text
  local lines = vim.split(piece, '\n', { plain = true })
  -- only the whole suggestion replaces the text right of the cursor that it already contains
  api.nvim_buf_set_text(bufnr, at.row, at.col, at.row, at.col + (whole and at.right or 0), lines)
  local row = at.row + #lines - 1
  local col = (#lines == 1 and at.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(win, { row + 1, col })
  count_accept(bufnr, s, kind, #piece)
  M._last_accept = { kind = kind, item_text = s.text, remaining = at.text, inserted = piece, whole = whole }
  return piece
end

--- A native (0.12) item as an exlsp.Suggestion.
local function from_native(bufnr, win, item)
  local text = item.insert_text
  if type(text) == 'table' then -- a snippet: its plain text
    local ok, grammar = pcall(require, 'vim.lsp._snippet_grammar')
    text = ok and tostring(grammar.parse(text.value)) or text.value
  end
  local srow, scol, right
  local r = item.range
  if r and r.start and r.start.row then -- vim.Range (0-based rows, byte columns)
    srow, scol = r.start.row, r.start.col
    right = (r.end_.row == srow and r.end_.col > scol) and (r.end_.col - scol) or 0
  else
    local cursor = api.nvim_win_get_cursor(win)
    srow, scol, right = cursor[1] - 1, cursor[2], 0
  end
  return { text = text, srow = srow, scol = scol, right = right, command = item.command, client_id = item.client_id }
end

---------------------------------------------------------------------------------------------------
-- The public actions (what the keymaps call). Each returns true when a suggestion was there.

local function native(bufnr)
  return M.inline_mode() == 'native' and vim.lsp.inline_completion ~= nil
    and vim.lsp.inline_completion.is_enabled({ bufnr = bufnr })
end

--- Is a suggestion shown in the current buffer?
function M.visible()
  local bufnr = api.nvim_get_current_buf()
  if native(bufnr) then
    local ns = api.nvim_get_namespaces()[NATIVE_NS]
    return ns ~= nil and #api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { limit = 1 }) > 0
  end
  return require('exlsp.ghost').visible(bufnr)
end

--- Accept the whole suggestion, its first word or its first line ({kind} 'all'/'word'/'line').
--- Usable from an `expr` mapping (the edit is scheduled).
---@param kind? 'all'|'word'|'line'
---@return boolean
function M.accept(kind)
  kind = kind or 'all'
  local bufnr = api.nvim_get_current_buf()
  if native(bufnr) then
    if kind == 'all' then
      return vim.lsp.inline_completion.get({ bufnr = bufnr })
    end
    local win = api.nvim_get_current_win()
    return vim.lsp.inline_completion.get({
      bufnr = bufnr,
      on_accept = function(item)
        if api.nvim_buf_is_valid(bufnr) and api.nvim_win_is_valid(win) then
          M._apply(bufnr, win, from_native(bufnr, win, item), kind)
        end
      end,
    })
  end
  return require('exlsp.ghost').accept(bufnr, kind)
end

function M.accept_word()
  return M.accept('word')
end

function M.accept_line()
  return M.accept('line')
end

--- Show the next ({count} > 0) or previous candidate.
function M.select(count)
  local bufnr = api.nvim_get_current_buf()
  if native(bufnr) then
    if not M.visible() then
      return false
    end
    vim.lsp.inline_completion.select({ bufnr = bufnr, count = count })
    return true
  end
  return require('exlsp.ghost').select(bufnr, count)
end

function M.next()
  return M.select(1)
end

function M.prev()
  return M.select(-1)
end

--- Hide the suggestion (a new one comes with the next keystroke).
function M.dismiss()
  local bufnr = api.nvim_get_current_buf()
  if native(bufnr) then
    return vim.lsp.inline_completion.get({ bufnr = bufnr, on_accept = function() end })
  end
  return require('exlsp.ghost').dismiss(bufnr)
end

---------------------------------------------------------------------------------------------------
-- Keymaps

local function lhs_list(v)
  if not v then
    return {}
  end
  return type(v) == 'table' and v or { v }
end

--- <M-x> and <A-x> never fall through: typed raw they would be <Esc>x and leave insert mode.
local function falls_through(lhs)
  return not lhs:match('^<[MmAa]%-')
end

local ACTIONS = {
  accept = { fn = function() return M.accept('all') end, desc = 'exlsp: accept the suggestion' },
  accept_word = { fn = M.accept_word, desc = 'exlsp: accept the first word' },
  accept_line = { fn = M.accept_line, desc = 'exlsp: accept the first line' },
  next = { fn = M.next, desc = 'exlsp: next suggestion', nofall = true },
  prev = { fn = M.prev, desc = 'exlsp: previous suggestion', nofall = true },
  dismiss = { fn = M.dismiss, desc = 'exlsp: dismiss the suggestion' },
}

function M._set_keymaps(bufnr)
  for name, action in pairs(ACTIONS) do
    for _, lhs in ipairs(lhs_list((M.config.keymaps or {})[name])) do
      local fall = not action.nofall and falls_through(lhs)
      vim.keymap.set('i', lhs, function()
        if action.fn() then
          return ''
        end
        return fall and lhs or ''
      end, { buffer = bufnr, expr = true, silent = true, desc = action.desc })
    end
  end
end

---------------------------------------------------------------------------------------------------
-- Status

local STATUS_ORDER = {
  'ready', 'loadError', 'model', 'backend', 'lanes', 'cache_hit_rate', 'decode_tok_s',
  'accepted', 'accepted_by_kind', 'requests', 'jobs_cancelled', 'uptime_s', 'model_loads',
}

local function fmt(v)
  if type(v) == 'table' then
    return vim.inspect(v, { newline = ' ', indent = '' })
  elseif v == vim.NIL then
    return 'null'
  elseif type(v) == 'number' and v % 1 ~= 0 then
    return ('%.3g'):format(v)
  end
  return tostring(v)
end

--- exlsp/status as lines of text.
function M.format_status(st)
  local lines, seen = {}, {}
  local function add(k, v)
    seen[k] = true
    if v == vim.NIL then
      return
    end
    if k == 'plugins' and type(v) == 'table' then
      v = ('%d loaded'):format(#v)
    end
    table.insert(lines, ('%s: %s'):format(k, fmt(v)))
  end
  for _, k in ipairs(STATUS_ORDER) do
    if st[k] ~= nil then
      add(k, st[k])
    end
  end
  local rest = vim.tbl_keys(st)
  table.sort(rest)
  for _, k in ipairs(rest) do
    if not seen[k] and k ~= 'lsp' then
      add(k, st[k])
    end
  end
  if type(st.lsp) == 'table' then
    table.insert(lines, 'lsp:')
    local keys = vim.tbl_keys(st.lsp)
    table.sort(keys)
    for _, k in ipairs(keys) do
      table.insert(lines, ('  %s: %s'):format(k, fmt(st.lsp[k])))
    end
  end
  return lines
end

--- Request exlsp/status; {cb}(err, status).
function M.request_status(cb, bufnr)
  local client = M.client(bufnr)
  if not client then
    cb('exlsp is not running (open a file after require("exlsp").setup())', nil)
    return
  end
  call(client, 'request', 'exlsp/status', {}, function(err, result)
    cb(err and (err.message or vim.inspect(err)) or nil, result)
  end, bufnr)
end

--- :ExlspStatus: exlsp/status in a float ({echo}: in the message area instead).
function M.status(echo)
  M.request_status(function(err, st)
    if err or type(st) ~= 'table' then
      vim.notify('exlsp: ' .. tostring(err or 'no status'), vim.log.levels.ERROR)
      return
    end
    local lines = M.format_status(st)
    if echo then
      vim.notify(table.concat(lines, '\n'), vim.log.levels.INFO)
      return
    end
    local buf = api.nvim_create_buf(false, true)
    api.nvim_buf_set_lines(buf, 0, -1, true, lines)
    vim.bo[buf].modifiable = false
    vim.bo[buf].bufhidden = 'wipe'
    local width = 20
    for _, l in ipairs(lines) do
      width = math.max(width, vim.fn.strdisplaywidth(l))
    end
    width = math.min(width + 2, math.max(20, vim.o.columns - 4))
    local height = math.min(#lines, math.max(1, vim.o.lines - 4))
    local win = api.nvim_open_win(buf, true, {
      relative = 'editor',
      width = width,
      height = height,
      row = math.max(0, math.floor((vim.o.lines - height) / 2) - 1),
      col = math.max(0, math.floor((vim.o.columns - width) / 2)),
      style = 'minimal',
      border = 'rounded',
      title = ' exlsp status ',
      title_pos = 'center',
    })
    vim.wo[win].wrap = true
    for _, key in ipairs({ 'q', '<Esc>' }) do
      vim.keymap.set('n', key, function()
        if api.nvim_win_is_valid(win) then
          api.nvim_win_close(win, true)
        end
      end, { buffer = buf, nowait = true, desc = 'exlsp: close the status' })
    end
    api.nvim_create_autocmd('WinLeave', {
      buffer = buf,
      once = true,
      callback = function()
        if api.nvim_win_is_valid(win) then
          api.nvim_win_close(win, true)
        end
      end,
    })
  end)
end

---------------------------------------------------------------------------------------------------
-- Setup

--- Is {cmd}'s executable there? Notifies an error when it is not.
function M._check_cmd(cmd)
  if type(cmd) ~= 'table' then -- a function (custom transport): nothing to check
    return true
  end
  local exe = cmd[1]
  if type(exe) == 'string' and vim.fn.executable(exe) == 1 then
    return true
  end
  vim.notify(
    ('exlsp: the executable %q was not found (cmd = %s). Install exlsp (`pip install exlsp`) '
      .. 'or point `cmd` at it: require("exlsp").setup({ cmd = { "/path/to/exlsp", "serve" } })'):format(
      tostring(exe),
      vim.inspect(cmd, { newline = ' ', indent = '' })
    ),
    vim.log.levels.ERROR
  )
  return false
end

local function wants(bufnr)
  if not api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= '' or api.nvim_buf_get_name(bufnr) == '' then
    return false
  end
  local fts = M.config.filetypes
  return fts == nil or vim.tbl_contains(fts, vim.bo[bufnr].filetype)
end

local function root_of(bufnr)
  local name = api.nvim_buf_get_name(bufnr)
  local root = vim.fs.root and M.config.root_markers and vim.fs.root(bufnr, M.config.root_markers)
  return root or vim.fs.dirname(name)
end

--- `$/progress`: chat tokens go to the chat buffer, everything else to Neovim's handler.
local function progress_handler(err, result, ctx, config)
  if result and require('exlsp.chat').on_progress(result, ctx) then
    return vim.NIL
  end
  return vim.lsp.handlers['$/progress'](err, result, ctx, config)
end

local function reuse_client(client, config)
  return client.name == config.name -- one exlsp per Neovim, whatever the root
end

local function lsp_config()
  local cfg = M.config
  return {
    name = NAME,
    cmd = cfg.cmd,
    filetypes = cfg.filetypes,
    init_options = cfg.init_options,
    handlers = { ['$/progress'] = progress_handler },
    reuse_client = reuse_client,
  }
end

local function on_attach(bufnr, client)
  local mode = M.inline_mode()
  if mode == 'native' then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  elseif mode == 'ghost' then
    require('exlsp.ghost').attach(bufnr, client.id)
  end
  if mode then
    M._set_keymaps(bufnr)
  end
end

--- Deep merge where lists (cmd, filetypes, several keys for one action) replace the default.
local function merge(base, over)
  for k, v in pairs(over) do
    local b = base[k]
    if type(v) == 'table' and type(b) == 'table' and not vim.islist(b) and (next(v) == nil or not vim.islist(v)) then
      base[k] = merge(b, v)
    else
      base[k] = v
    end
  end
  return base
end

---@param opts? exlsp.Config
function M.setup(opts)
  M.config = merge(vim.deepcopy(M.defaults), opts or {})
  if vim.fn.has('nvim-0.10') == 0 then
    vim.notify('exlsp: needs Neovim 0.10 or later', vim.log.levels.ERROR)
    return false
  end
  if not M._check_cmd(M.config.cmd) then
    return false
  end

  local group = api.nvim_create_augroup('exlsp', { clear = true })
  api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == NAME then
        on_attach(ev.buf, client)
      end
    end,
  })

  if vim.lsp.config and vim.lsp.enable and has('0.11') then
    local c = lsp_config()
    c.root_dir = function(bufnr, on_dir)
      if wants(bufnr) then
        on_dir(root_of(bufnr))
      end
    end
    vim.lsp.config[NAME] = c -- replaces an earlier setup() (vim.lsp.config() would merge lists)
    vim.lsp.enable(NAME)
  else
    local function start(bufnr)
      if not wants(bufnr) then
        return
      end
      local c = lsp_config()
      c.root_dir = root_of(bufnr)
      vim.lsp.start(c, { bufnr = bufnr, reuse_client = reuse_client })
    end
    api.nvim_create_autocmd('FileType', {
      group = group,
      callback = function(ev)
        start(ev.buf)
      end,
    })
    for _, bufnr in ipairs(api.nvim_list_bufs()) do
      if api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
        start(bufnr)
      end
    end
  end
  -- clients that were already attached (setup() called late, or called again)
  for _, client in ipairs(vim.lsp.get_clients({ name = NAME })) do
    for bufnr in pairs(client.attached_buffers or {}) do
      on_attach(bufnr, client)
    end
  end
  M._did_setup = true
  return true
end

return M
