# exlsp.zsh: ghost-text command suggestions from the resident exlsp model (zsh >= 5.3; 5.9 tested).
#
#   source /path/to/exlsp.zsh        # in ~/.zshrc (`exlsp shell-init zsh >> ~/.zshrc` adds it)
#
# As you type, the line goes to the running `exlsp daemon` over its Unix socket (zsh/net/socket:
# no fork, no Python); the answer shows as grey text after the cursor.
#   → or End (at the end of the line)   accept the whole suggestion
#   Alt-F (forward-word)                 accept its next word
#   Ctrl-G                               turn the typed description into a command (replaces the line)
# A risky suggestion (risk medium/high, from the server's parse) is coloured and marked ⚠.
# Nothing is ever executed: accepting only edits the line; Enter stays yours.
# With zsh-autosuggestions (source it first), add `exlsp` to ZSH_AUTOSUGGEST_STRATEGY instead: its
# ghost text is then used and exlsp's own is off (EXLSP_ZSH_GHOST=0, the default in that case).
# No exlsp running: nothing happens (Ctrl-G says so).

[[ -o interactive ]] || return 0
zmodload zsh/net/socket 2>/dev/null || return 0
zmodload zsh/datetime zsh/parameter 2>/dev/null
autoload -Uz add-zle-hook-widget add-zsh-hook

: ${EXLSP_GHOST_STYLE:=fg=8}            # region_highlight style of the ghost text
: ${EXLSP_MEDIUM_RISK_STYLE:=fg=yellow}
: ${EXLSP_HIGH_RISK_STYLE:=fg=red,bold}
: ${EXLSP_HISTORY_LINES:=5}             # recent commands sent with a request (0: none)
: ${EXLSP_KEY_DESCRIBE='^G'}           # '' : no key
if [[ -z ${EXLSP_RISK_MARK+x} ]]; then
  if [[ ${LC_ALL:-${LC_CTYPE:-$LANG}} == *[Uu][Tt][Ff]8* || ${LC_ALL:-${LC_CTYPE:-$LANG}} == *[Uu][Tt][Ff]-8* ]]; then EXLSP_RISK_MARK='⚠'; else EXLSP_RISK_MARK='!'; fi
fi
if [[ -z ${EXLSP_ZSH_GHOST+x} ]]; then
  (( ${+functions[_zsh_autosuggest_start]} )) && EXLSP_ZSH_GHOST=0 || EXLSP_ZSH_GHOST=1
fi

typeset -g _exlsp_fd=''         # the connection, opened on the first keystroke of a line
typeset -gi _exlsp_id=0         # the last request id sent
typeset -g _exlsp_want=''       # the id whose answer is still wanted ('' : none)
typeset -g _exlsp_want_mode='' _exlsp_want_buffer=''
typeset -g _exlsp_text='' _exlsp_risk='' _exlsp_reason=''   # the current suggestion
typeset -g _exlsp_seen='' _exlsp_seen_cursor='' _exlsp_accepted='' _exlsp_hl=''
typeset -gi _exlsp_status=0 _exlsp_msg=0
typeset -g _exlsp_r_type='' _exlsp_r_id='' _exlsp_r_text='' _exlsp_r_risk='' _exlsp_r_reason=''

# ---- the protocol (docs/protocol.md): one JSON object per line ----------------------------------

_exlsp_socket() {  # REPLY = the socket path, resolved as lsp/socket_paths.py does
  emulate -L zsh
  if [[ -n $EXLSP_SOCKET ]]; then
    REPLY=$EXLSP_SOCKET
    [[ $REPLY == '~/'* ]] && REPLY=$HOME${REPLY#\~}
    [[ $REPLY == /* ]] || REPLY=$PWD/$REPLY
  elif [[ $XDG_RUNTIME_DIR == /* && -d $XDG_RUNTIME_DIR ]]; then
    REPLY=$XDG_RUNTIME_DIR/exlsp/exlsp.sock
  else
    REPLY=${TMPDIR:-/tmp}/exlsp-$UID/exlsp.sock
  fi
}

_exlsp_json() {  # REPLY = $1 as a JSON string
  emulate -L zsh
  setopt extendedglob
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//(#m)[[:cntrl:]]/\\u${(l:4::0:)$(( [##16] #MATCH ))}}
  REPLY="\"$s\""
}

_exlsp_request() {  # REPLY = a suggest request line; $1 mode, $2 buffer, $3 id
  emulate -L zsh
  local mode=$1 buf=$2 id=$3 req hist='' key
  local -a keys
  if (( EXLSP_HISTORY_LINES > 0 )); then
    keys=(${${(kOn)history}[1,EXLSP_HISTORY_LINES]})
    for key in ${(Oa)keys}; do
      _exlsp_json "${history[$key]}"
      hist+=${hist:+,}$REPLY
    done
  fi
  _exlsp_json "$buf"
  req="{\"type\":\"suggest\",\"id\":$id,\"buffer\":$REPLY,\"cursor\":${#buf},\"shell\":\"zsh\""
  _exlsp_json "$PWD"
  req+=",\"cwd\":$REPLY,\"history\":[$hist],\"exit_status\":$_exlsp_status,\"candidates\":1"
  [[ $mode == describe ]] && req+=',"mode":"describe"'
  REPLY="$req}"
}

_exlsp_unescape() {  # REPLY = a JSON string's body ($1, with \\ and \" already made \1 and \2)
  emulate -L zsh
  setopt extendedglob
  local s=$1
  if [[ $s == *\\* ]]; then
    s=${s//(#m)\\u[0-9a-fA-F](#c4)/${(#):-0x${MATCH[3,6]}}}
    s=${s//\\[nrtbf]/ }
    s=${s//\\\//\/}
  fi
  s=${s//$'\1'/\\}
  REPLY=${s//$'\2'/\"}
}

_exlsp_parse() {  # a reply line -> _exlsp_r_type, _exlsp_r_id and the first suggestion's fields
  emulate -L zsh
  local rest=$1 key
  _exlsp_r_type='' _exlsp_r_id='' _exlsp_r_text='' _exlsp_r_risk=low _exlsp_r_reason=''
  [[ $rest == '{"type":"'* ]] || return 1
  rest=${rest#'{"type":"'}
  _exlsp_r_type=${rest%%\"*}
  rest=${rest#*\"}
  [[ $rest == ',"id":'* ]] || return 1
  rest=${rest#',"id":'}
  _exlsp_r_id=${rest%%[,\}]*}
  [[ $_exlsp_r_type == done && $rest == *'"suggestions":[{"'* ]] || return 0
  rest=${rest#*'"suggestions":[{'}
  rest=${rest//\\\\/$'\1'}   # msgspec escapes " and \ inside strings; no control byte is raw
  rest=${rest//\\\"/$'\2'}
  while [[ $rest == \"* ]]; do  # the suggestion's "key":"value" pairs, in any order
    rest=${rest#\"}
    key=${rest%%\"*}
    rest=${rest#*\"}
    [[ $rest == ':"'* ]] || break
    rest=${rest#:\"}
    _exlsp_unescape "${rest%%\"*}"
    rest=${rest#*\"}
    case $key in
      text) _exlsp_r_text=$REPLY ;;
      risk) _exlsp_r_risk=$REPLY ;;
      reason) _exlsp_r_reason=$REPLY ;;
    esac
    rest=${rest#,}
  done
  return 0
}

# ---- the connection -------------------------------------------------------------------------------

_exlsp_connect() {
  emulate -L zsh
  [[ -n $_exlsp_fd ]] && return 0
  _exlsp_socket
  [[ -S $REPLY && -O $REPLY ]] || return 1  # -O: ours, not one another user planted in /tmp
  zsocket $REPLY 2>/dev/null || return 1
  _exlsp_fd=$REPLY
  zle -F -w $_exlsp_fd _exlsp_on_reply
}

_exlsp_disconnect() {  # closing cancels the connection's requests on the server
  emulate -L zsh
  [[ -n $_exlsp_fd ]] || return 0
  zle -F $_exlsp_fd 2>/dev/null
  exec {_exlsp_fd}>&-
  _exlsp_fd='' _exlsp_want=''
}

_exlsp_write() {  # SIGPIPE ignored here only: a write to a closed socket would kill the shell
  emulate -L zsh
  trap '' PIPE
  print -rn -u $_exlsp_fd -- "$1"$'\n' 2>/dev/null
}

_exlsp_cancel() {  # stop the request in flight; its late answer is ignored anyway
  emulate -L zsh
  [[ -n $_exlsp_want && -n $_exlsp_fd ]] || { _exlsp_want=''; return 0 }
  (( ++_exlsp_id ))
  _exlsp_write "{\"type\":\"cancel\",\"id\":$_exlsp_id,\"target\":$_exlsp_want}"
  _exlsp_want=''
}

_exlsp_send() {  # ask about $BUFFER; $1 = complete | describe
  emulate -L zsh
  _exlsp_connect || return 1
  _exlsp_cancel
  (( ++_exlsp_id ))
  _exlsp_request $1 "$BUFFER" $_exlsp_id
  local req=$REPLY
  if ! _exlsp_write "$req"; then  # the server went away since: one fresh try
    _exlsp_disconnect
    _exlsp_connect && _exlsp_write "$req" || { _exlsp_disconnect; return 1 }
  fi
  _exlsp_want=$_exlsp_id _exlsp_want_mode=$1 _exlsp_want_buffer=$BUFFER
}

# ---- ghost text -----------------------------------------------------------------------------------

_exlsp_clear() {
  emulate -L zsh
  if [[ -n $_exlsp_hl ]]; then
    region_highlight=("${(@)region_highlight:#${(b)_exlsp_hl}}")
    _exlsp_hl=''
  fi
  POSTDISPLAY=''
}

_exlsp_show() {  # the current suggestion's remainder after $BUFFER, if it still fits
  emulate -L zsh
  _exlsp_clear
  (( EXLSP_ZSH_GHOST )) || return 0
  [[ -n $_exlsp_text && CURSOR -eq $#BUFFER && $_exlsp_text == "$BUFFER"?* ]] || return 0
  local style=$EXLSP_GHOST_STYLE
  POSTDISPLAY=${_exlsp_text:$#BUFFER}
  case $_exlsp_risk in
    medium) style=$EXLSP_MEDIUM_RISK_STYLE ;|
    high) style=$EXLSP_HIGH_RISK_STYLE ;|
    medium|high) POSTDISPLAY+="  $EXLSP_RISK_MARK $_exlsp_risk risk${_exlsp_reason:+: ${_exlsp_reason[1,60]}}" ;;
  esac
  _exlsp_hl="$#BUFFER $(( $#BUFFER + $#POSTDISPLAY )) $style"
  region_highlight+=("$_exlsp_hl")
}

_exlsp_forget() {
  emulate -L zsh
  _exlsp_text='' _exlsp_risk='' _exlsp_reason=''
  _exlsp_clear
}

# ---- hooks and widgets ----------------------------------------------------------------------------

_exlsp_precmd() { _exlsp_status=$? }

_exlsp_line_init() {
  emulate -L zsh
  _exlsp_seen=$BUFFER _exlsp_seen_cursor=$CURSOR _exlsp_accepted=''
  _exlsp_forget
  _exlsp_disconnect  # left open when the last line ended without line-finish (Ctrl-C)
}

_exlsp_line_finish() {  # Enter, Ctrl-C ...: no ghost left on screen, nothing left in flight
  emulate -L zsh
  _exlsp_forget
  _exlsp_disconnect
}

_exlsp_pre_redraw() {  # every redraw: a changed buffer asks again
  emulate -L zsh
  if [[ $BUFFER == "$_exlsp_seen" ]]; then
    [[ $CURSOR == $_exlsp_seen_cursor ]] || { _exlsp_seen_cursor=$CURSOR; _exlsp_show }
    return 0
  fi
  _exlsp_seen=$BUFFER _exlsp_seen_cursor=$CURSOR
  (( _exlsp_msg )) && { _exlsp_msg=0; zle -M '' }  # an exlsp message is gone with the next edit
  _exlsp_show  # typing what the ghost shows keeps the rest of it until the new answer
  if [[ $BUFFER == "$_exlsp_accepted" || CURSOR -ne $#BUFFER || -z ${BUFFER//[[:space:]]/} || $BUFFER == *$'\n'* ]]; then
    _exlsp_cancel
    return 0
  fi
  _exlsp_send complete || _exlsp_want=''
}

_exlsp_on_reply() {  # zle -F -w: the socket is readable (or closed)
  emulate -L zsh
  local line
  if [[ -n $2 ]] || ! read -r -u $1 line; then
    _exlsp_disconnect  # the server went away; the next keystroke reconnects
    return 0
  fi
  _exlsp_parse "$line" || return 0
  [[ -n $_exlsp_want && $_exlsp_r_id == $_exlsp_want ]] || return 0  # stale: superseded
  _exlsp_want=''
  [[ $BUFFER == "$_exlsp_want_buffer" ]] || return 0
  if [[ $_exlsp_want_mode == describe ]]; then
    # (One zle -M per call: two in a row lose the prompt from the display, zsh 5.9.)
    if [[ $_exlsp_r_type != done || -z $_exlsp_r_text ]]; then
      zle -M 'exlsp: no suggestion'
      _exlsp_msg=1
      return 0
    fi
    _exlsp_forget
    BUFFER=$_exlsp_r_text
    CURSOR=$#BUFFER
    _exlsp_seen=$BUFFER _exlsp_seen_cursor=$CURSOR _exlsp_accepted=$BUFFER
    if [[ $_exlsp_r_risk == low ]]; then
      zle -M ''
    else
      zle -M "exlsp: $EXLSP_RISK_MARK $_exlsp_r_risk risk: $_exlsp_r_reason"
      _exlsp_msg=1
    fi
  else
    [[ $_exlsp_r_type == done ]] || return 0
    if [[ $_exlsp_r_text == "$BUFFER"* ]]; then
      _exlsp_text=$_exlsp_r_text _exlsp_risk=$_exlsp_r_risk _exlsp_reason=$_exlsp_r_reason
    else
      _exlsp_text='' _exlsp_risk='' _exlsp_reason=''
    fi
    _exlsp_show
  fi
  zle -R
}

_exlsp_accept() {  # → / End at the end of the line: take the whole suggestion
  emulate -L zsh
  if [[ -n $POSTDISPLAY && CURSOR -eq $#BUFFER && $_exlsp_text == "$BUFFER"?* ]]; then
    BUFFER=$_exlsp_text
    CURSOR=$#BUFFER
    _exlsp_seen=$BUFFER _exlsp_seen_cursor=$CURSOR _exlsp_accepted=$BUFFER
    _exlsp_cancel
    _exlsp_forget
    return 0
  fi
  zle _exlsp_orig_$WIDGET -- "$@"
}

_exlsp_accept_word() {  # forward-word at the end of the line: take the suggestion's next word
  emulate -L zsh
  setopt extendedglob
  if [[ -n $POSTDISPLAY && CURSOR -eq $#BUFFER && $_exlsp_text == "$BUFFER"?* ]]; then
    local rest=${_exlsp_text:$#BUFFER}
    local word=${(M)rest##[[:space:]]#[^[:space:]]##}
    BUFFER+=${word:-$rest}
    CURSOR=$#BUFFER
    _exlsp_seen=$BUFFER _exlsp_seen_cursor=$CURSOR
    [[ $BUFFER == "$_exlsp_text" ]] && _exlsp_accepted=$BUFFER
    _exlsp_cancel
    _exlsp_show
    return 0
  fi
  zle _exlsp_orig_$WIDGET -- "$@"
}

_exlsp_describe() {  # Ctrl-G: the typed text is a description; its command replaces the line
  emulate -L zsh
  [[ -n ${BUFFER//[[:space:]]/} ]] || return 0
  _exlsp_forget
  if ! _exlsp_send describe; then
    _exlsp_socket
    zle -M "exlsp: no exlsp process is running (socket $REPLY); start it with: exlsp daemon"
    _exlsp_msg=1
    return 0
  fi
  zle -M "exlsp: asking for a command (type to cancel)"
  _exlsp_msg=1
}

_exlsp_wrap() {  # $1 handler, the rest widget names; keeps a user's own widget of that name
  emulate -L zsh
  local handler=$1 w
  shift
  for w in "$@"; do
    [[ ${widgets[$w]} == user:_exlsp_* ]] && continue
    if [[ ${widgets[$w]} == user:* ]]; then
      zle -A $w _exlsp_orig_$w
    else
      zle -A .$w _exlsp_orig_$w
    fi
    zle -N $w $handler
  done
}

# ---- zsh-autosuggestions strategy: ZSH_AUTOSUGGEST_STRATEGY=(exlsp history) ------------------------
# Synchronous (zsh-autosuggestions' async mode runs it in a child it kills on the next key: the
# closed connection cancels the request on the server).

_zsh_autosuggest_strategy_exlsp() {
  emulate -L zsh
  local prefix=$1 line fd
  [[ -n ${prefix//[[:space:]]/} && $prefix != *$'\n'* ]] || return
  _exlsp_socket
  [[ -S $REPLY && -O $REPLY ]] || return
  zsocket $REPLY 2>/dev/null || return
  fd=$REPLY
  _exlsp_request complete "$prefix" 1
  trap '' PIPE  # local (emulate -L): a closed socket must not kill the shell
  if print -rn -u $fd -- "$REPLY"$'\n' 2>/dev/null; then
    # Seconds to wait: short when zsh-autosuggestions waits for it (sync mode) before drawing.
    local -F deadline=$(( EPOCHREALTIME + ${EXLSP_STRATEGY_TIMEOUT:-$(( ${+ZSH_AUTOSUGGEST_USE_ASYNC} ? 5 : 0.5 ))} ))
    while (( EPOCHREALTIME < deadline )) && read -t $(( deadline - EPOCHREALTIME )) -r -u $fd line; do
      _exlsp_parse "$line" && [[ $_exlsp_r_id == 1 && $_exlsp_r_type != delta ]] || continue
      [[ $_exlsp_r_type == done && $_exlsp_r_text == "$prefix"* ]] && suggestion=$_exlsp_r_text
      break
    done
  fi
  exec {fd}>&-
}

# ---- install --------------------------------------------------------------------------------------

zle -N _exlsp_on_reply
zle -N _exlsp_describe
zle -N _exlsp_line_init
zle -N _exlsp_line_finish
zle -N _exlsp_pre_redraw
if (( EXLSP_ZSH_GHOST )); then
  _exlsp_wrap _exlsp_accept forward-char end-of-line vi-forward-char vi-end-of-line vi-add-eol
  _exlsp_wrap _exlsp_accept_word forward-word emacs-forward-word vi-forward-word
  add-zle-hook-widget line-init _exlsp_line_init
  add-zle-hook-widget line-pre-redraw _exlsp_pre_redraw
fi
add-zle-hook-widget line-finish _exlsp_line_finish
precmd_functions=(_exlsp_precmd ${precmd_functions:#_exlsp_precmd})  # first: it must see $?
[[ -n $EXLSP_KEY_DESCRIBE ]] && bindkey -M emacs "$EXLSP_KEY_DESCRIBE" _exlsp_describe \
  && bindkey -M viins "$EXLSP_KEY_DESCRIBE" _exlsp_describe
true
