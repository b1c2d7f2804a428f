-- :checkhealth banked — is banked-lsp there, does the daemon answer, which model, which ghost-text path, and
-- is anything else holding the keys. The daemon side comes from `banked doctor --json` (the CLI beside
-- banked-lsp), so the editor and the shell tell the same story.
local M = {}

local function doctor(server)
  local banked = vim.fn.fnamemodify(server, ":h") .. "/banked"
  if vim.fn.executable(banked) ~= 1 then
    return nil, "no `banked` beside " .. server
  end
  local out = vim.fn.system({ banked, "doctor", "--json" })
  local ok, checks = pcall(vim.json.decode, out)
  if not ok or type(checks) ~= "table" then
    return nil, "`banked doctor` printed no report: " .. out:sub(1, 200)
  end
  return checks
end

function M.check()
  local h = vim.health
  local banked = require("banked")
  h.start("banked: the language server")
  local server = banked.server and banked.server[1]
  if not server then
    local cmd = banked.find_server(banked.config.cmd)
    server = cmd and cmd[1]
  end
  if banked.problem then
    h.error(banked.problem, { "run `make install` in the banked checkout", "or setup{ cmd = { '/path/to/.venv/bin/banked-lsp' } }" })
  end
  if server then
    local version = vim.trim(vim.fn.system({ server, "--version" }))
    if vim.v.shell_error == 0 then
      h.ok(server .. " " .. version)
    else
      h.error(server .. " does not run: " .. version, { "reinstall with `make install`" })
    end
    local clients = vim.lsp.get_clients({ name = "banked" })
    if #clients > 0 then
      h.ok("attached (" .. #clients .. " client" .. (#clients > 1 and "s" or "") .. ")")
    else
      h.info("not attached yet: it starts with the first buffer of a matching filetype")
    end
  elseif not banked.problem then
    h.error("banked-lsp not found", { "run `make install` in the banked checkout" })
  end

  h.start("banked: the daemon, the model and the engine")
  if server then
    local checks, why = doctor(server)
    if not checks then
      h.warn(why)
    else
      for _, c in ipairs(checks) do
        local say = c.name .. ": " .. c.detail
        if c.status == "ok" then
          h.ok(say)
        elseif c.status == "warn" then
          h.warn(say, c.fix ~= "" and { c.fix } or nil)
        else
          h.error(say, c.fix ~= "" and { c.fix } or nil)
        end
      end
    end
  end

  h.start("banked: Neovim")
  local v = vim.version()
  h.ok(string.format("Neovim %d.%d.%d", v.major, v.minor, v.patch))
  if banked.builtin then
    h.ok("ghost text: Neovim's own vim.lsp.inline_completion")
  else
    h.ok("ghost text: the plugin's renderer (highlight BankedSuggestion)")
  end
  local k = banked.config.keymaps
  local owner = banked.tab_owner(k.accept)
  if owner then
    h.warn(
      k.accept .. " is owned by " .. owner .. ": banked does not map it",
      { "accept with another key: setup{ keymaps = { accept = '<M-l>' } } (copilot.lua's layout)" }
    )
  elseif k.accept and k.accept ~= "" then
    h.ok(k.accept .. " accepts a suggestion (and keeps its usual meaning when none is shown)")
  end
end

return M
