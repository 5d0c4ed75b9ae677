// exlsp chat panel (runs inside the webview; no Node, no VS Code API beyond postMessage).
// All HTML it shows comes from the extension, rendered there by markdown-it with raw HTML escaped.
(function () {
  // eslint-disable-next-line no-undef
  const vscode = acquireVsCodeApi();
  const log = document.getElementById('log');
  const input = document.getElementById('input');
  const send = document.getElementById('send');
  const stop = document.getElementById('stop');
  const slash = document.getElementById('slash');
  let busy = false;

  function turnElement(index) {
    let el = log.querySelector(`[data-turn="${index}"]`);
    if (!el) {
      el = document.createElement('div');
      el.dataset.turn = String(index);
      el.innerHTML = '<div class="who"></div><div class="body"></div><div class="footer"></div>';
      log.appendChild(el);
    }
    return el;
  }

  function showTurn(index, turn) {
    const el = turnElement(index);
    el.className = `turn ${turn.role}` + (turn.streaming ? ' streaming' : '') + (turn.error ? ' error' : '');
    el.querySelector('.who').textContent = turn.role === 'user' ? 'You' : 'exlsp';
    el.querySelector('.body').innerHTML = turn.html;
    el.querySelector('.footer').textContent = turn.footer || '';
  }

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  }

  function setBusy(value) {
    busy = value;
    send.disabled = value;
    stop.classList.toggle('hidden', !value);
    for (const b of slash.querySelectorAll('button')) b.disabled = value;
  }

  function showAll(turns, notice) {
    log.textContent = '';
    if (notice) {
      const note = document.createElement('div');
      note.className = 'notice';
      note.textContent = notice;
      log.appendChild(note);
    }
    if (!turns.length) {
      const empty = document.createElement('div');
      empty.className = 'empty';
      empty.textContent =
        'Ask about your code. /explain, /fix and /test work on the selection in the editor (or the whole file).';
      log.appendChild(empty);
    }
    turns.forEach((t, i) => showTurn(i, t));
    log.scrollTop = log.scrollHeight;
  }

  window.addEventListener('message', (event) => {
    const msg = event.data;
    switch (msg.type) {
      case 'state':
        showAll(msg.turns, msg.notice);
        setBusy(msg.busy);
        break;
      case 'turn': {
        const stick = atBottom();
        const empty = log.querySelector('.empty');
        if (empty) empty.remove();
        showTurn(msg.index, msg.turn);
        if (stick) log.scrollTop = log.scrollHeight;
        break;
      }
      case 'busy':
        setBusy(msg.busy);
        break;
      case 'prefill':
        input.value = msg.text;
        input.focus();
        break;
      case 'focus':
        input.focus();
        break;
    }
  });

  function submit() {
    const text = input.value.trim();
    if (!text || busy) return;
    vscode.postMessage({ type: 'send', text });
    input.value = '';
  }

  send.addEventListener('click', submit);
  stop.addEventListener('click', () => vscode.postMessage({ type: 'stop' }));
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });
  slash.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-command]');
    if (!b || busy) return;
    const extra = input.value.trim();
    vscode.postMessage({ type: 'send', text: `/${b.dataset.command}${extra ? ' ' + extra : ''}` });
    input.value = '';
  });
  log.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (!b) return;
    const turn = b.closest('[data-turn]');
    if (!turn) return;
    vscode.postMessage({ type: b.dataset.action, turn: Number(turn.dataset.turn), block: Number(b.dataset.block) });
  });

  vscode.postMessage({ type: 'ready' });
})();
