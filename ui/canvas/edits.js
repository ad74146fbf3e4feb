// ---- sending edits --------------------------------------------------------------------------------------

function seenFor(kind, fields) {  // [[id, rev]] of the objects the edit touches as this page last drew them
  const objects = value.objects || [];
  if (kind === 'undo' || kind === 'redo') return objects.map((o) => [o.id, o.rev]);  // what it may take back
  const ids = new Set(fields.object_ids || (fields.object_id != null ? [fields.object_id] : []));
  return objects.filter((o) => ids.has(o.id)).map((o) => [o.id, o.rev]);
}

function send(kind, fields) {
  if (!value) return;
  fields = fields || {};
  const payload = Object.assign({ kind, image_id: value.image_id, seq: ++seq, prev: lastSent, window: windowId,
    base: value.revision, seen: seenFor(kind, fields) }, fields);
  lastSent = payload.seq;
  pending.push({ payload, at: performance.now(), picked });
  trigger('edit', payload);
  root.dataset.sentAt = String(performance.now());
  status();
  requestRender();
}

const createsObject = (p) => (p.kind === 'click' || p.kind === 'stroke') && p.object_id == null;
// a click or stroke that creates an object and is not answered yet (an answered stroke may still be drawn from
// `pending` while its overlay loads: the object it made is known by then)
const creating = () => pending.some((e) => createsObject(e.payload) && e.payload.seq > acked);

function sendOrHold(kind, fields) {  // a click right after a click that creates an object refines that object
  if (held.length || creating()) held.push({ kind, fields });
  else send(kind, fields);
}

function flushHeld() {
  if (creating()) return;
  while (held.length) {
    const { kind, fields } = held.shift();
    const o = singleSelected(effectiveObjects());
    send(kind, Object.assign({}, fields, { object_id: o ? o.id : null }));
    if (createsObject(pending[pending.length - 1].payload)) return;
  }
}

function selectedIds() {
  return Array.from(selection).filter((id) => id != null);
}

function findSimilar(scope) {  // x: SAM 3 finds more like the selected boxes (one class); Alt-marked: not these.
  // scope 'project' (Shift+X): the project's other images, as a job of the server
  const shown = new Set((value && value.objects || []).map((o) => o.id));
  const pos = selectedIds().filter((id) => shown.has(id) && !negatives.has(id));
  const neg = Array.from(negatives).filter((id) => shown.has(id));
  if (!pos.length) { note = 'select a box of the class first (Alt-click: a box of what it is not), then x'; status(); return; }
  note = null;
  send('similar', { object_ids: pos.concat(neg), positive_ids: pos, negative_ids: neg, scope: scope || 'image' });
  negatives.clear();
}

function undo() { if (value) send('undo'); }
function redo() { if (value) send('redo'); }

function chooseClass(index) {
  const classes = (value && value.classes) || [];
  if (index >= classes.length) return false;
  setClass(classes[index].name);
  const ids = selectedIds();
  if (ids.length) send('relabel', { object_ids: ids, class_name: classes[index].name });
  return true;
}

function setClass(name) {
  currentClass = name;
  if (ui.cls.value !== name) ui.cls.value = name;
}

function deleteHidden() {
  const ids = effectiveObjects().filter((o) => !o.temp && isHidden(o)).map((o) => o.id);
  if (ids.length) send('delete', { object_ids: ids });
}

function status() {  // the status line: the message, and how many edits are in flight (data-pending)
  const msg = note || (value && value.message) || (value ? '' : 'No image');
  ui.message.textContent = msg;
  ui.message.classList.toggle('gc-has-message', !!msg);
  const n = pending.length + held.length;
  ui.pending.textContent = n ? `saving ${n}…` : '';
  root.dataset.pending = String(n);
}
