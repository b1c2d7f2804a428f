-- banked for Neovim: starts `banked-lsp`, shows its completions as ghost text, adds :Banked* commands.
--
-- Ghost text uses vim.lsp.inline_completion where Neovim has it (0.12+); otherwise this
-- file's own extmark renderer asks the server for textDocument/inlineCompletion after
-- each change, cancelling the previous request (the server debounces and never answers
-- a stale one), and draws the answer as inline virtual text plus virtual lines.
local M = {}

local ns = vim.api.nvim_create_namespace("banked")

-- editors/neovim/lua/banked/init.lua -> the banked checkout (its .venv holds banked-lsp after `make install`)
local checkout = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h:h:h:h")

M.config = {
  cmd = nil, -- nil: found (see M.find_server); or { "/path/to/.venv/bin/banked-lsp" }
  cmd_env = nil,
  filetypes = nil, -- nil: every filetype
  root_markers = { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml" },
  init_options = {}, -- sent as initializationOptions = { banked = init_options } (debounceMs, maxLines, ...)
  keymaps = {
    accept = "<Tab>", -- not mapped when nvim-cmp or a snippet engine owns <Tab>; copilot.lua's layout: "<M-l>"
    accept_word = "<M-Right>",
    accept_line = "<M-Down>",
    dismiss = "<C-]>",
    next = "<M-]>",
    prev = "<M-[>",
  },
  builtin_inline = true, -- use vim.lsp.inline_completion when this Neovim has it
}

M.status = {} -- the last banked/status notification
M.server = nil -- the banked-lsp command in use (after setup)
M.problem = nil -- why banked is not running, if it is not (after setup)

-- The suggestion being shown: { buf, row, col, tick, items, index, text }
local current = nil
local pending = nil -- { client, id, buf }

local function client_for(buf)
  return vim.lsp.get_clients({ bufnr = buf, name = "banked" })[1]
end

function M.clear()
  if current then
    pcall(vim.api.nvim_buf_clear_namespace, current.buf, ns, 0, -1)
  end
  current = nil
end

local function cancel_pending()
  if pending then
    pcall(function()
      pending.client:cancel_request(pending.id)
    end)
    pending = nil
  end
end

local function item_text(item)
  local t = item.insertText
  if type(t) == "table" then
    t = t.value -- a StringValue (snippet): shown and inserted as plain text
  end
  return t or ""
end

local function render()
  local s = current
  if not s then
    return
  end
  vim.api.nvim_buf_clear_namespace(s.buf, ns, 0, -1)
  local lines = vim.split(s.text, "\n", { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    table.insert(virt_lines, { { lines[i], "BankedSuggestion" } })
  end
  vim.api.nvim_buf_set_extmark(s.buf, ns, s.row, s.col, {
    virt_text = { { lines[1], "BankedSuggestion" } },
    virt_text_pos = "inline",
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = "combine",
  })
end

--- Ask the server for a completion at the cursor (trigger 1 = invoked, 2 = automatic). `keep`: the text shown
--- stays until the answer replaces it (a refresh, which only grows it: no flicker).
function M.request(trigger, keep)
  local buf = vim.api.nvim_get_current_buf()
  local client = client_for(buf)
  if not client then
    return
  end
  cancel_pending()
  if not keep then
    M.clear()
  end
  local win = vim.api.nvim_get_current_win()
  local cursor = vim.api.nvim_win_get_cursor(win)
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local params = vim.lsp.util.make_position_params(win, client.offset_encoding)
  params.context = { triggerKind = trigger or 2 }
  local ok, id = client:request("textDocument/inlineCompletion", params, function(err, result)
    if pending and pending.buf == buf then
      pending = nil
    end
    if err or not result then
      return
    end
    -- Stale if the user typed or moved on while the server worked.
    if vim.api.nvim_get_current_buf() ~= buf or vim.api.nvim_buf_get_changedtick(buf) ~= tick then
      return
    end
    local now = vim.api.nvim_win_get_cursor(0)
    if now[1] ~= cursor[1] or now[2] ~= cursor[2] or vim.fn.mode() ~= "i" then
      return
    end
    local items = result.items or result
    if type(items) ~= "table" or #items == 0 then
      return
    end
    local text = item_text(items[1])
    if text == "" then
      return
    end
    current = { buf = buf, row = cursor[1] - 1, col = cursor[2], tick = tick, items = items, index = 1, text = text }
    render()
  end, buf)
  if ok then
    pending = { client = client, id = id, buf = buf }
  end
end

--- The suggestion now shown (nil if none): for statuslines and tests.
function M.suggestion()
  return current and current.text or nil
end

local function insert(s, text)
  M.accepted = text -- what the last accept put in (the suggestion may have grown since it was first drawn)
  M.clear()
  cancel_pending()
  local lines = vim.split(text, "\n", { plain = true })
  vim.api.nvim_buf_set_text(s.buf, s.row, s.col, s.row, s.col, lines)
  local last_row = s.row + #lines - 1
  local last_col = (#lines == 1 and s.col or 0) + #lines[#lines]
  vim.api.nvim_win_set_cursor(0, { last_row + 1, last_col })
end

-- The suggestion `s` (default: the one shown now) if it still fits the buffer, else nil. A key's action gets
-- the suggestion shown when the key was pressed: a refresh's answer may replace `current`, or a dismissal
-- clear it, between the key and the scheduled accept, and the user accepts what they saw.
local function usable(s)
  s = s or current
  if s and s.buf == vim.api.nvim_get_current_buf() and vim.api.nvim_buf_get_changedtick(s.buf) == s.tick then
    return s
  end
end

function M.accept(s)
  s = usable(s)
  if not s then
    return false
  end
  insert(s, s.text)
  return true
end

function M.accept_line(s)
  s = usable(s)
  if not s then
    return false
  end
  local first = s.text:match("^([^\n]*\n?)")
  if first == "" then
    return false
  end
  insert(s, first)
  return true
end

function M.accept_word(s)
  s = usable(s)
  if not s then
    return false
  end
  local word = s.text:match("^%s*[%w_]+") or s.text:match("^%s*[^%w_%s]+") or s.text:sub(1, 1)
  insert(s, word)
  return true
end

local function cycle(step)
  if current and #current.items > 1 then
    current.index = (current.index - 1 + step) % #current.items + 1
    current.text = item_text(current.items[current.index])
    render()
  else
    M.request(1)
  end
end

function M.next()
  cycle(1)
end

function M.prev()
  cycle(-1)
end

--- Typing through: the user typed the start of the suggestion shown, so show the rest at once (the server
--- answers the same from its cache; this only saves the round trip and the flicker).
local function typed_through(buf)
  local s = current
  if not s or s.buf ~= buf then
    return false
  end
  local c = vim.api.nvim_win_get_cursor(0)
  local row, col = c[1] - 1, c[2]
  if row ~= s.row or col <= s.col then
    return false
  end
  local typed = vim.api.nvim_buf_get_text(buf, row, s.col, row, col, {})[1] or ""
  if typed == "" or s.text:sub(1, #typed) ~= typed or #typed >= #s.text then
    return false
  end
  s.text = s.text:sub(#typed + 1)
  s.col = col
  s.tick = vim.api.nvim_buf_get_changedtick(buf)
  render()
  return true
end

-- -- commands ---------------------------------------------------------------------------------

local function target(opts)
  local buf = vim.api.nvim_get_current_buf()
  local arg = { uri = vim.uri_from_bufnr(buf) }
  if opts and opts.range and opts.range > 0 then
    arg.range = {
      start = { line = opts.line1 - 1, character = 0 },
      ["end"] = { line = opts.line2, character = 0 },
    }
  else
    local row = vim.api.nvim_win_get_cursor(0)[1] - 1
    arg.range = { start = { line = row, character = 0 }, ["end"] = { line = row, character = 0 } }
  end
  return buf, arg
end

--- Run a server command; `on_result` gets its result.
function M.execute(command, arg, on_result, buf)
  buf = buf or vim.api.nvim_get_current_buf()
  local client = client_for(buf) or vim.lsp.get_clients({ name = "banked" })[1]
  if not client then
    vim.notify("banked: the language server is not running in this buffer", vim.log.levels.WARN)
    return
  end
  client:request("workspace/executeCommand", { command = command, arguments = arg and { arg } or nil }, function(err, result)
    if err then
      vim.notify("banked: " .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
      return
    end
    if on_result then
      on_result(result)
    end
  end, buf)
end

local function refactor(arg, buf)
  local function run(instruction)
    if not instruction or instruction == "" then
      return
    end
    arg.instruction = instruction
    M.execute("banked.refactor", arg, nil, buf)
  end
  if arg.instruction then
    run(arg.instruction)
  else
    vim.ui.input({ prompt = "banked: refactor how? " }, run)
  end
end

local function status_line(st)
  local d = st.daemon or {}
  local engine = d.engine or {}
  return string.format(
    "banked: %s, completions %s, %s %s, %s cached tokens",
    st.state or "?",
    st.enabled and "on" or "off",
    engine.name or "-",
    engine.model or "",
    d.cached_tokens or 0
  )
end

local function create_commands()
  vim.api.nvim_create_user_command("BankedExplain", function(opts)
    local buf, arg = target(opts)
    M.execute("banked.explain", arg, nil, buf)
  end, { range = true, desc = "banked: explain the selection (or the block at the cursor)" })
  vim.api.nvim_create_user_command("BankedRefactor", function(opts)
    local buf, arg = target(opts)
    if opts.args ~= "" then
      arg.instruction = opts.args
    end
    refactor(arg, buf)
  end, { range = true, nargs = "*", desc = "banked: refactor the selection as instructed" })
  vim.api.nvim_create_user_command("BankedWarm", function()
    M.execute("banked.warmWorkspace", nil, function(r)
      local w = r and r[1] or {}
      vim.notify(string.format("banked: %s warm, %s tokens", w.root or "workspace", w.tokens or "?"))
    end)
  end, { desc = "banked: prefill the whole workspace" })
  vim.api.nvim_create_user_command("BankedStatus", function()
    M.execute("banked.status", nil, function(r)
      vim.notify(status_line(r or {}))
    end)
  end, { desc = "banked: daemon and cache status" })
  vim.api.nvim_create_user_command("BankedToggle", function()
    M.execute("banked.toggleCompletions", nil, function(r)
      vim.notify("banked: completions " .. ((r and r.enabled) and "on" or "off"))
    end)
  end, { desc = "banked: turn completions on or off" })
  vim.api.nvim_create_user_command("BankedRestart", function()
    M.execute("banked.restartDaemon")
  end, { desc = "banked: restart the daemon" })
end

-- Code actions resolve to `banked.refactor` without an instruction: ask for one here.
vim.lsp.commands["banked.refactor"] = function(command, ctx)
  local arg = vim.deepcopy((command.arguments or {})[1] or {})
  refactor(arg, ctx.bufnr)
end

-- -- setup ------------------------------------------------------------------------------------

-- Insert-mode maps are expr maps (so a key with nothing to do falls through to its usual meaning);
-- text cannot change inside an expr map, so the action itself runs right after it.
local function map(lhs, can, action, fallback)
  if not lhs or lhs == "" then
    return
  end
  local tab = lhs:lower() == "<tab>"
  vim.keymap.set("i", lhs, function()
    if can() then
      local shown = current -- what the user saw when pressing the key (see `usable`)
      vim.schedule(function()
        action(shown)
      end)
      return ""
    end
    if tab and vim.snippet and vim.snippet.active({ direction = 1 }) then
      vim.schedule(function()
        vim.snippet.jump(1) -- what Neovim's default <Tab> does in a snippet
      end)
      return ""
    end
    return fallback and vim.api.nvim_replace_termcodes(lhs, true, false, true) or ""
  end, { expr = true, silent = true, desc = "banked" })
end

local function attach_renderer()
  local group = vim.api.nvim_create_augroup("banked_ghost_text", { clear = true })
  vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
    group = group,
    callback = function(ev)
      if client_for(ev.buf) and not typed_through(ev.buf) then
        M.request(2)
      end
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, {
    group = group,
    callback = function()
      cancel_pending()
      M.clear()
    end,
  })
  vim.api.nvim_create_autocmd("CursorMovedI", {
    group = group,
    callback = function()
      if current then
        local c = vim.api.nvim_win_get_cursor(0)
        if c[1] - 1 ~= current.row or c[2] ~= current.col then
          M.clear()
        end
      end
    end,
  })
  local k = M.config.keymaps
  local function always()
    return true
  end
  -- <Tab> and <C-]> fall back to their usual meaning when nothing is shown
  if not M.tab_owner(k.accept) then
    map(k.accept, usable, M.accept, true)
  end
  map(k.accept_word, usable, M.accept_word, true)
  map(k.accept_line, usable, M.accept_line, true)
  map(k.dismiss, function()
    return current ~= nil or pending ~= nil
  end, function()
    cancel_pending()
    M.clear()
  end, true)
  map(k.next, always, M.next, false)
  map(k.prev, always, M.prev, false)
end

--- Who else owns an insert-mode key (nvim-cmp, a snippet engine, another map), or nil: banked then leaves it.
function M.tab_owner(lhs)
  if not lhs or lhs == "" then
    return nil
  end
  local existing = vim.fn.maparg(lhs, "i", false, true)
  local builtin = existing.desc and existing.desc:find("^vim%.snippet") -- Neovim's own default: banked keeps it working
  if type(existing) == "table" and existing.lhs and existing.desc ~= "banked" and not builtin then
    return existing.desc or existing.rhs or "another insert-mode map"
  end
  if lhs:lower() == "<tab>" then
    for _, mod in ipairs({ "cmp", "blink.cmp", "luasnip", "snippy", "vsnip" }) do
      if package.loaded[mod] then
        return mod
      end
    end
  end
  return nil
end

--- The banked-lsp to run: `cmd` if set, else this checkout's .venv, the project's .venv, pipx's ~/.local/bin,
--- then $PATH. Returns the command (a list) or nil and where it looked.
function M.find_server(cmd)
  if cmd then
    return vim.fn.executable(cmd[1]) == 1 and cmd or nil, { cmd[1] }
  end
  local places = {
    checkout .. "/.venv/bin/banked-lsp",
    vim.fn.getcwd() .. "/.venv/bin/banked-lsp",
    vim.fn.expand("~/.local/bin/banked-lsp"),
  }
  for _, p in ipairs(places) do
    if vim.fn.executable(p) == 1 then
      return { p }, places
    end
  end
  local found = vim.fn.exepath("banked-lsp")
  table.insert(places, "$PATH")
  return found ~= "" and { found } or nil, places
end

--- For a statusline (lualine: `{ require("banked").statusline }`): "" when banked is not attached here.
function M.statusline()
  if M.problem then
    return "banked ✗"
  end
  if not client_for(vim.api.nvim_get_current_buf()) then
    return ""
  end
  local st = M.status
  if st.state ~= "connected" then
    return "banked " .. (st.state or "…")
  end
  if st.enabled == false then
    return "banked off"
  end
  if st.server_problem and st.server_problem ~= "" then -- a team server that does not answer
    return "banked ⚠ server"
  end
  if st.here == false then -- the cache holds another window's folder (see init_options.warm)
    return "banked: " .. vim.fn.fnamemodify(st.workspace or "?", ":t")
  end
  local total, cached = st.workspace_tokens or 0, st.cached_tokens or 0
  if total > 0 and cached < total then
    return string.format("banked %d%%", st.percent or math.floor(100 * cached / total))
  end
  return cached >= 1000 and string.format("banked %.0fk", cached / 1000) or ("banked " .. cached)
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", M.config, opts or {})
  vim.api.nvim_set_hl(0, "BankedSuggestion", { link = "Comment", default = true })
  local cfg = M.config
  local server, looked = M.find_server(cfg.cmd)
  if not server then
    M.problem = "banked-lsp not found (looked in " .. table.concat(looked, ", ") .. ")"
    vim.notify(
      "banked: "
        .. M.problem
        .. ". Run `make install` in the banked checkout, or pass cmd = { '/path/to/.venv/bin/banked-lsp' } "
        .. "to require('banked').setup(). :checkhealth banked tells more.",
      vim.log.levels.ERROR
    )
    return
  end
  M.server = server
  local lsp_config = {
    name = "banked",
    cmd = server,
    cmd_env = cfg.cmd_env,
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    init_options = { banked = cfg.init_options },
    -- Neovim 0.11 has no inline completion of its own: the plugin's renderer asks for it, so say the
    -- client can take it (the server then does not also offer the classic completion menu).
    capabilities = { textDocument = { inlineCompletion = { dynamicRegistration = false } } },
    handlers = {
      ["banked/status"] = function(_, params)
        M.status = params or {}
        vim.api.nvim_exec_autocmds("User", { pattern = "BankedStatus", data = M.status, modeline = false })
      end,
      ["banked/metrics"] = function() end,
      -- The server showed part of a line, the user paused, and the model has finished it: ask again
      -- (the plugin's renderer; Neovim 0.12's built-in one asks at the next key).
      ["banked/refreshInline"] = function(_, params)
        local buf = params and vim.uri_to_bufnr(params.uri)
        if
          not M.builtin
          and buf == vim.api.nvim_get_current_buf()
          and vim.lsp.util.buf_versions[buf] == params.version
          and vim.fn.mode() == "i"
        then
          M.request(2, true)
        end
      end,
    },
  }
  if vim.lsp.config and vim.lsp.enable then -- Neovim 0.11+
    vim.lsp.config("banked", lsp_config)
    vim.lsp.enable("banked")
  else
    vim.api.nvim_create_autocmd("FileType", {
      group = vim.api.nvim_create_augroup("banked_start", { clear = true }),
      callback = function(ev)
        if cfg.filetypes and not vim.tbl_contains(cfg.filetypes, vim.bo[ev.buf].filetype) then
          return
        end
        if vim.bo[ev.buf].buftype ~= "" then
          return
        end
        local root = vim.fs.root(ev.buf, cfg.root_markers) or vim.fn.getcwd()
        vim.lsp.start(vim.tbl_extend("force", lsp_config, { root_dir = root }), { bufnr = ev.buf })
      end,
    })
  end
  if cfg.builtin_inline and vim.lsp.inline_completion and vim.lsp.inline_completion.enable then
    vim.lsp.inline_completion.enable(true) -- Neovim 0.12+: the built-in ghost text
    M.builtin = true
    local k = cfg.keymaps
    if k.accept and k.accept ~= "" and not M.tab_owner(k.accept) then
      vim.keymap.set("i", k.accept, function()
        if not vim.lsp.inline_completion.get() then
          return vim.api.nvim_replace_termcodes(k.accept, true, false, true)
        end
      end, { expr = true, silent = true, desc = "banked" })
    end
    for key, count in pairs({ next = 1, prev = -1 }) do
      if k[key] and k[key] ~= "" and vim.lsp.inline_completion.select then
        vim.keymap.set("i", k[key], function()
          vim.lsp.inline_completion.select({ count = count })
        end, { desc = "banked" })
      end
    end
  else
    attach_renderer()
    M.builtin = false
  end
  create_commands()
  -- The daemon's one cache follows the focused Neovim (terminals that report focus; see the README).
  vim.api.nvim_create_autocmd({ "FocusGained", "FocusLost" }, {
    group = vim.api.nvim_create_augroup("banked_focus", { clear = true }),
    callback = function(ev)
      local arg = { focused = ev.event == "FocusGained" }
      for _, client in ipairs(vim.lsp.get_clients({ name = "banked" })) do
        client:request("workspace/executeCommand", { command = "banked.focus", arguments = { arg } }, function() end)
      end
    end,
  })
end

return M
