-- exlsp user commands (the server itself starts with require('exlsp').setup()).
if vim.g.loaded_exlsp then
  return
end
vim.g.loaded_exlsp = 1

if vim.fn.has('nvim-0.10') == 0 then
  return
end

local cmd = vim.api.nvim_create_user_command

cmd('ExlspChat', function(c)
  require('exlsp.chat').command(c)
end, {
  nargs = '*',
  range = true,
  complete = function(lead)
    return vim.tbl_filter(function(c)
      return vim.startswith(c, lead)
    end, { '/explain', '/fix', '/test', '/doc' })
  end,
  desc = 'exlsp: ask a question (from a range: about the selection); the answer streams into the chat buffer',
})

cmd('ExlspChatStop', function()
  require('exlsp.chat').stop()
end, { desc = 'exlsp: stop the answer being written' })

cmd('ExlspChatReset', function()
  require('exlsp.chat').reset()
end, { desc = 'exlsp: start a new conversation (a new chat session; the old one stays saved)' })

cmd('ExlspStatus', function(c)
  require('exlsp').status(c.bang)
end, { bang = true, desc = 'exlsp: show exlsp/status in a float (with !: as a message)' })
