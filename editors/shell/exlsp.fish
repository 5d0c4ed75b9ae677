# exlsp.fish: command suggestions from the resident exlsp model, on a key (fish >= 3.1; 3.6 tested).
#
#   source /path/to/exlsp.fish       # in ~/.config/fish/config.fish (`exlsp shell-init fish` prints it)
#
#   Alt-/    replace the line with the model's completion of it   ($exlsp_key_suggest)
#   Ctrl-G   replace a typed description with a command           ($exlsp_key_describe)
# (Alt-/ shadows fish's redo; Ctrl-G is unbound in fish. Set the variables before sourcing to
# choose other keys, '' for none.) Fish has no API for another source of autosuggestions, so
# exlsp works on a key. The line is only edited, never run: Enter stays yours. A risky
# suggestion (risk medium/high) is announced above the prompt.
#
# Transport: the tiny C client `exlsp-client` ($EXLSP_CLIENT, on $PATH, or built by
# `exlsp shell-init fish` into ~/.local/share/exlsp/bin), else socat, else `nc -U`.

status is-interactive; or exit 0

set -q exlsp_key_suggest; or set -g exlsp_key_suggest \e/
set -q exlsp_key_describe; or set -g exlsp_key_describe \cg
set -q EXLSP_TIMEOUT_MS; or set -g EXLSP_TIMEOUT_MS 10000
set -q EXLSP_HISTORY_LINES; or set -g EXLSP_HISTORY_LINES 5
set -g __exlsp_status 0
set -g __exlsp_script_dir (string replace -r '/[^/]*$' '' -- (status filename))

function __exlsp_postexec --on-event fish_postexec
    set -g __exlsp_status $status
end

function __exlsp_socket
    if set -q EXLSP_SOCKET; and test -n "$EXLSP_SOCKET"
        set -l p (string replace -r '^~/' "$HOME/" -- $EXLSP_SOCKET)
        string match -q '/*' -- $p; or set p $PWD/$p
        echo $p
    else if string match -q '/*' -- "$XDG_RUNTIME_DIR"; and test -d "$XDG_RUNTIME_DIR"
        echo $XDG_RUNTIME_DIR/exlsp/exlsp.sock
    else
        set -l tmp /tmp
        set -q TMPDIR; and test -n "$TMPDIR"; and set tmp $TMPDIR
        echo $tmp/exlsp-(id -u)/exlsp.sock
    end
end

function __exlsp_transport
    if not set -q __exlsp_via
        set -g __exlsp_via ''
        set -g __exlsp_client ''
        set -l data $HOME/.local/share
        set -q XDG_DATA_HOME; and test -n "$XDG_DATA_HOME"; and set data $XDG_DATA_HOME
        for c in "$EXLSP_CLIENT" (command -s exlsp-client) $data/exlsp/bin/exlsp-client $__exlsp_script_dir/exlsp-client
            if test -n "$c" -a -x "$c" -a ! -d "$c"
                set -g __exlsp_via client
                set -g __exlsp_client $c
                break
            end
        end
        if test -z "$__exlsp_via"
            if command -sq socat
                set -g __exlsp_via socat
            else if command -sq nc
                set -g __exlsp_via nc
            end
        end
    end
    echo $__exlsp_via
end

function __exlsp_json --description 'a JSON string'
    set -l s (string collect -- $argv[1])
    set s (string replace -a '\\' '\\\\' -- $s | string collect)
    set s (string replace -a '"' '\\"' -- $s | string collect)
    set s (string replace -a \n '\\n' -- $s | string collect)
    set s (string replace -a \t '\\t' -- $s | string collect)
    set s (string replace -ra '[\x00-\x1f\x7f]' ' ' -- $s | string collect)
    echo -n "\"$s\""
end

function __exlsp_unjson --description 'the body of a JSON string, decoded'
    set -l s (string replace -a '\\\\' \x01 -- $argv[1])
    set s (string replace -a '\\"' '"' -- $s)
    set s (string replace -a '\\/' '/' -- $s)
    if string match -q '*\\*' -- $s
        set s (printf '%b' (string replace -a '%' '%%' -- $s) | string collect)
    end
    set s (string replace -a \x01 '\\' -- $s)
    string replace -ra '[\x00-\x1f\x7f]' ' ' -- $s
end

# Ask exlsp (argv: mode, line); prints three lines: risk, text, reason. Status 3: no exlsp running.
function __exlsp_ask
    set -l mode $argv[1]
    set -l line $argv[2]
    set -l hist
    if test "$EXLSP_HISTORY_LINES" -gt 0
        set hist (history --max $EXLSP_HISTORY_LINES)[-1..1]
    end
    set -l via (__exlsp_transport)
    set -l sock (__exlsp_socket)
    # Ours only (-O): without $XDG_RUNTIME_DIR another user may have planted it in /tmp.
    if test -e $sock; and not test -O $sock
        return 3
    end
    if test "$via" = client
        set -l args -p -s $sock -t $EXLSP_TIMEOUT_MS -S fish -C $PWD -x $__exlsp_status
        for h in $hist
            set -a args -H $h
        end
        test "$mode" = describe; or set mode suggest
        $__exlsp_client $args $mode $line 2>/dev/null
        set -l rc $status
        test $rc -eq 3; and return 3
        return $rc
    end
    test -S $sock; or return 3
    set -l req '{"type":"suggest","id":1,"buffer":'(__exlsp_json $line)',"shell":"fish","candidates":1,"exit_status":'$__exlsp_status',"cwd":'(__exlsp_json $PWD)',"history":['
    set -l items
    for h in $hist
        set -a items (__exlsp_json $h)
    end
    set -l joined (string join , -- $items)  # quoted below: an empty list must not empty $req
    set req "$req$joined]"
    test "$mode" = describe; and set req $req',"mode":"describe"'
    set -l secs (math --scale=0 "($EXLSP_TIMEOUT_MS + 999) / 1000")
    set -l out
    switch $via
        case socat
            set out (printf '%s}\n' $req | timeout $secs socat -t $secs - UNIX-CONNECT:$sock 2>/dev/null)
        case nc
            set out (printf '%s}\n' $req | timeout $secs nc -N -U $sock 2>/dev/null)
        case '*'
            return 3
    end
    set -l m (string match -r '"suggestions":\[\{"text":"((?:[^"\\\\]|\\\\.)*)","risk":"([a-z]*)","reason":"((?:[^"\\\\]|\\\\.)*)"' -- "$out")
    or return 1
    echo $m[3]
    __exlsp_unjson $m[2]
    __exlsp_unjson $m[4]
    return 0
end

function __exlsp_apply --argument-names mode
    set -l line (commandline | string collect)
    string match -qr '\S' -- $line; or return 0
    set -l out (__exlsp_ask $mode $line)
    set -l rc $status
    if test $rc -eq 3
        echo
        echo "exlsp: no exlsp process is running (socket "(__exlsp_socket)"); start it with: exlsp daemon" >&2
        commandline -f repaint
        return 0
    end
    set -l text $out[2]
    # A completion must extend what was typed (the server checks it too).
    if test $rc -ne 0 -o -z "$text"
        or begin
            test "$mode" != describe
            and test (string sub -l (string length -- $line) -- $text) != $line
        end
        echo
        echo 'exlsp: no suggestion' >&2
        commandline -f repaint
        return 0
    end
    commandline -r -- $text
    commandline -C (string length -- $text)
    if test "$out[1]" != low
        echo
        echo "exlsp: ⚠ $out[1] risk: $out[3]" >&2
    end
    commandline -f repaint
end

function __exlsp_suggest
    __exlsp_apply complete
end

function __exlsp_describe
    __exlsp_apply describe
end

for mode in default insert  # insert: vi mode
    test -n "$exlsp_key_suggest"; and bind -M $mode $exlsp_key_suggest __exlsp_suggest
    test -n "$exlsp_key_describe"; and bind -M $mode $exlsp_key_describe __exlsp_describe
end
true
