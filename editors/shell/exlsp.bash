# exlsp.bash: command suggestions from the resident exlsp model, on a key (bash >= 4.4; 5.2 tested).
#
#   source /path/to/exlsp.bash       # in ~/.bashrc (`exlsp shell-init bash >> ~/.bashrc` adds it)
#
#   Alt-/    replace the line with the model's completion of it     (EXLSP_KEY_SUGGEST)
#   Ctrl-G   replace a typed description with a command             (EXLSP_KEY_DESCRIBE)
# (These shadow readline's complete-filename, which Tab also does, and abort, which Ctrl-C also
# does. Set the variables before sourcing to choose other keys, '' for none.)
# The line is only edited, never run: Enter stays yours. A risky suggestion (risk medium/high)
# is announced above the prompt. Bash has no ghost text of its own; ble.sh users can bind the
# same functions (see README.md).
#
# Transport: the tiny C client `exlsp-client` ($EXLSP_CLIENT, on $PATH, or built by
# `exlsp shell-init bash` into ~/.local/share/exlsp/bin), else socat, else `nc -U`.

[[ $- == *i* ]] || return 0

: "${EXLSP_KEY_SUGGEST=\e/}"
: "${EXLSP_KEY_DESCRIBE=\C-g}"
: "${EXLSP_TIMEOUT_MS:=10000}"
: "${EXLSP_HISTORY_LINES:=5}"

_exlsp_status=0

_exlsp_socket() {  # REPLY = the socket path, resolved as lsp/socket_paths.py does
  if [[ -n ${EXLSP_SOCKET:-} ]]; then
    REPLY=$EXLSP_SOCKET
    [[ $REPLY == '~/'* ]] && REPLY=$HOME${REPLY#\~}
    [[ $REPLY == /* ]] || REPLY=$PWD/$REPLY
  elif [[ ${XDG_RUNTIME_DIR:-} == /* && -d $XDG_RUNTIME_DIR ]]; then
    REPLY=$XDG_RUNTIME_DIR/exlsp/exlsp.sock
  else
    REPLY=${TMPDIR:-/tmp}/exlsp-$UID/exlsp.sock
  fi
}

_exlsp_transport() {  # REPLY = client | socat | nc | '' (looked up once)
  if [[ -z ${_exlsp_via+x} ]]; then
    local dir=${BASH_SOURCE[0]%/*} c
    _exlsp_via='' _exlsp_client=''
    for c in "${EXLSP_CLIENT:-}" "$(type -P exlsp-client)" "${XDG_DATA_HOME:-$HOME/.local/share}/exlsp/bin/exlsp-client" "$dir/exlsp-client"; do
      if [[ -n $c && -x $c && ! -d $c ]]; then _exlsp_via=client _exlsp_client=$c; break; fi
    done
    if [[ -z $_exlsp_via ]]; then
      if type -P socat >/dev/null; then _exlsp_via=socat; elif type -P nc >/dev/null; then _exlsp_via=nc; fi
    fi
  fi
  REPLY=$_exlsp_via
}

_exlsp_json() {  # REPLY = $1 as a JSON string
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/\\t}
  s=${s//[[:cntrl:]]/ }
  REPLY="\"$s\""
}

_exlsp_unjson() {  # REPLY = the body of a JSON string ($1), decoded
  local s=${1//\\\\/$'\1'}
  s=${s//\\\"/\"}
  s=${s//\\\//\/}
  [[ $s == *\\* ]] && printf -v s '%b' "$s"  # what is left: \n \t \uXXXX ...
  s=${s//$'\1'/\\}
  REPLY=${s//[[:cntrl:]]/ }
}

# Ask exlsp about $1 (mode complete|describe); sets _exlsp_risk, _exlsp_text, _exlsp_reason.
# Returns 0 with a suggestion, 1 without, 3 when no exlsp is running.
_exlsp_ask() {
  local mode=$1 line=$2 h out rc
  local -a hist=() args=()
  _exlsp_text='' _exlsp_risk=low _exlsp_reason=''
  if (( EXLSP_HISTORY_LINES > 0 )); then
    while IFS= read -r h; do
      h=${h#"${h%%[![:space:]]*}"}
      [[ -n $h ]] && hist+=("$h")
    done < <(HISTTIMEFORMAT='' builtin fc -ln -"$EXLSP_HISTORY_LINES" 2>/dev/null)
  fi
  _exlsp_transport
  _exlsp_socket
  # Ours only (-O): without $XDG_RUNTIME_DIR another user may have planted it in /tmp.
  [[ -e $REPLY && ! -O $REPLY ]] && return 3
  if [[ $_exlsp_via == client ]]; then
    args=(-p -s "$REPLY" -t "$EXLSP_TIMEOUT_MS" -S bash -C "$PWD" -x "$_exlsp_status")
    for h in "${hist[@]}"; do args+=(-H "$h"); done
    [[ $mode == describe ]] || mode=suggest
    out=$("$_exlsp_client" "${args[@]}" "$mode" "$line" 2>/dev/null)
    rc=$?
    (( rc == 0 )) || return $(( rc == 3 ? 3 : 1 ))
    _exlsp_risk=${out%%$'\n'*}
    out=${out#*$'\n'}
    _exlsp_text=${out%%$'\n'*}
    [[ $out == *$'\n'* ]] && _exlsp_reason=${out#*$'\n'}
    [[ -n $_exlsp_text ]]
    return
  fi
  [[ -S $REPLY ]] || return 3
  local sock=$REPLY req secs=$(( (EXLSP_TIMEOUT_MS + 999) / 1000 ))
  _exlsp_json "$line"
  req="{\"type\":\"suggest\",\"id\":1,\"buffer\":$REPLY,\"shell\":\"bash\",\"candidates\":1,\"exit_status\":${_exlsp_status:-0}"
  _exlsp_json "$PWD"
  req+=",\"cwd\":$REPLY,\"history\":["
  for h in "${hist[@]}"; do _exlsp_json "$h"; req+=$REPLY,; done
  req="${req%,}]"
  [[ $mode == describe ]] && req+=',"mode":"describe"'
  case $_exlsp_via in
    socat) out=$(printf '%s}\n' "$req" | timeout "$secs" socat -t "$secs" - "UNIX-CONNECT:$sock" 2>/dev/null) ;;
    nc) out=$(printf '%s}\n' "$req" | timeout "$secs" nc -N -U "$sock" 2>/dev/null) ;;
    *) return 3 ;;
  esac
  local re='"suggestions":\[\{"text":"(([^"\\]|\\.)*)","risk":"([a-z]*)","reason":"(([^"\\]|\\.)*)"'
  [[ $out =~ $re ]] || return 1
  local text=${BASH_REMATCH[1]} risk=${BASH_REMATCH[3]} reason=${BASH_REMATCH[4]}
  _exlsp_unjson "$text"; _exlsp_text=$REPLY
  _exlsp_unjson "$reason"; _exlsp_reason=$REPLY
  _exlsp_risk=$risk
  [[ -n $_exlsp_text ]]
}

_exlsp_apply() {  # $1 mode: ask, then replace the line (never run it)
  local line=$READLINE_LINE rc
  [[ -n ${line//[[:space:]]/} ]] || return 0
  _exlsp_ask "$1" "$line"
  rc=$?
  if (( rc == 3 )); then
    _exlsp_socket
    printf 'exlsp: no exlsp process is running (socket %s); start it with: exlsp daemon\n' "$REPLY" >&2
    return 0
  fi
  if (( rc != 0 )); then
    printf 'exlsp: no suggestion\n' >&2
    return 0
  fi
  # A completion must extend what was typed (the server checks it too).
  if [[ $1 == complete && $_exlsp_text != "$line"* ]]; then
    printf 'exlsp: no suggestion\n' >&2
    return 0
  fi
  READLINE_LINE=$_exlsp_text
  READLINE_POINT=${#READLINE_LINE}
  if [[ $_exlsp_risk != low ]]; then
    printf 'exlsp: \xe2\x9a\xa0 %s risk: %s\n' "$_exlsp_risk" "$_exlsp_reason" >&2
  fi
}

_exlsp_suggest() { _exlsp_apply complete; }
_exlsp_describe() { _exlsp_apply describe; }

# $? of the last command, for the request (first in PROMPT_COMMAND, before anything changes it).
if [[ $(declare -p PROMPT_COMMAND 2>/dev/null) == 'declare -a'* ]]; then
  [[ " ${PROMPT_COMMAND[*]} " == *' _exlsp_status=$? '* ]] || PROMPT_COMMAND=('_exlsp_status=$?' "${PROMPT_COMMAND[@]}")
elif [[ ${PROMPT_COMMAND:-} != *'_exlsp_status=$?'* ]]; then
  PROMPT_COMMAND="_exlsp_status=\$?${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
fi

[[ -n $EXLSP_KEY_SUGGEST ]] && bind -x "\"$EXLSP_KEY_SUGGEST\": _exlsp_suggest"
[[ -n $EXLSP_KEY_DESCRIBE ]] && bind -x "\"$EXLSP_KEY_DESCRIBE\": _exlsp_describe"
true
