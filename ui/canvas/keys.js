// ---- keys -----------------------------------------------------------------------------------------------

// text fields keep every key; other inputs (checkboxes, sliders, buttons) pass the canvas' keys on
const NOT_TEXT = ['button', 'checkbox', 'radio', 'range', 'color', 'file', 'submit', 'reset', 'image'];
const isTextField = (t) => !!t && (t.isContentEditable || ['TEXTAREA', 'SELECT'].includes(t.tagName)
  || (t.tagName === 'INPUT' && !NOT_TEXT.includes((t.type || 'text').toLowerCase())));

function onKey(e) {
  if (isTextField(e.target)) return;
  const k = e.key;
  const lower = k.length === 1 ? k.toLowerCase() : k;
  const ctrl = e.ctrlKey || e.metaKey;
  let used = true;
  if (ctrl && lower === 'z') { if (e.shiftKey) redo(); else undo(); }
  else if (ctrl && lower === 'y') redo();
  else if (ctrl || e.altKey) used = false;
  else if (k === 'Delete' || k === 'Backspace') {
    const ids = selectedIds();
    if (ids.length) { send('delete', { object_ids: ids }); selection.clear(); } else used = false;
  } else if (/^[1-9]$/.test(k)) used = chooseClass(Number(k) - 1);
  else if (k === 'Escape') {
    if (drag) cancelDrag();
    else if (selection.size || negatives.size || pending.length || held.length) {  // ends a chain
      selection.clear(); negatives.clear(); picked++;
    }
    else used = false;  // nothing to deselect: the page's own Esc
  } else if (k === ' ') { spaceHeld = true; setCursor(hover); }
  else if (lower === 'x') findSimilar(e.shiftKey ? 'project' : 'image');
  else if (TOOL_KEYS[lower] && !e.shiftKey) setTool(TOOL_KEYS[lower]);
  else if (k === '[' || k === ']') setRadius(k === ']' ? radius * 1.25 : radius / 1.25);
  else if (lower === 'f') { fitView(); }
  else used = false;
  if (used) {
    e.preventDefault();
    e.stopPropagation();
    requestRender();
  }
}
root.addEventListener('keydown', onKey);
// the canvas' keys also work while the focus is elsewhere on the page (a button just clicked, the page itself),
// as long as the canvas is shown and the focus is not in a text field. Space and Enter stay with a focused button.
function onPageKey(e) {
  if (!root.isConnected) { document.removeEventListener('keydown', onPageKey); return; }  // remounted: a new canvas
  if (e.defaultPrevented || root.contains(e.target) || !root.getClientRects().length) return;
  if (e.key === ' ' || e.key === 'Enter') return;
  onKey(e);
}
document.addEventListener('keydown', onPageKey);
root.addEventListener('keyup', (e) => {
  if (e.key === ' ') { spaceHeld = false; setCursor(hover); e.preventDefault(); e.stopPropagation(); }
});
root.addEventListener('blur', () => { spaceHeld = false; }, true);
