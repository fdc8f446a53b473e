// One line of feedback at the bottom of the page (errors, download progress).

let hideTimer = 0;

/**
 * Show `message`; it fades after `timeout` ms (0 keeps it until the next message).
 * @param {'info'|'error'} kind
 */
export function showStatus(message, kind = 'info', timeout = 5000) {
  const el = document.getElementById('status');
  if (!el) return;
  clearTimeout(hideTimer);
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = !message;
  if (message && timeout) hideTimer = setTimeout(() => (el.hidden = true), timeout);
}

export function hideStatus() {
  showStatus('', 'info', 0);
}
