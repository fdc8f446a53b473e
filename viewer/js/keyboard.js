// Keyboard-first reading (issue #14): every shortcut of the study viewer, in ONE table.
// The key handler dispatches from it and the help overlay ('?' or F1) lists it, so what
// the overlay says is what the keys do. Labels and descriptions come from i18n.js.

import { CT_PRESETS } from './lut.js';
import { t } from './i18n.js';

const TOOL_KEYS = [
  ['w', 'wl'],
  ['z', 'zoom'],
  ['p', 'pan'],
  ['s', 'scroll'],
  ['l', 'length'],
  ['a', 'angle'],
  ['r', 'ellipse'],
  ['R', 'rectangle'],
];

/**
 * group: help section; keys: what event.key matches (single letters case-insensitively,
 * except 'R' = Shift+R); label: how the overlay writes the keys; text: i18n key of what it
 * does; run(viewer, viewport, key).
 */
export const SHORTCUTS = Object.freeze([
  { group: 'stack', keys: ['ArrowUp'], label: '↑', text: 'keys.prevImage', run: (v, vp) => vp.scrollBy(-1) },
  { group: 'stack', keys: ['ArrowDown'], label: '↓', text: 'keys.nextImage', run: (v, vp) => vp.scrollBy(1) },
  { group: 'stack', keys: ['PageUp'], label: 'PageUp', text: 'keys.back10', run: (v, vp) => vp.scrollBy(-10) },
  { group: 'stack', keys: ['PageDown'], label: 'PageDown', text: 'keys.forward10', run: (v, vp) => vp.scrollBy(10) },
  { group: 'stack', keys: ['Home'], label: 'Home', text: 'keys.first', run: (v, vp) => vp.setIndex(0) },
  { group: 'stack', keys: ['End'], label: 'End', text: 'keys.last', run: (v, vp) => vp.setIndex(vp.stack.length - 1) },
  { group: 'stack', keys: ['ArrowLeft'], label: '←', text: 'keys.prevSeries', run: (v) => v.stepSeries(-1) },
  { group: 'stack', keys: ['ArrowRight'], label: '→', text: 'keys.nextSeries', run: (v) => v.stepSeries(1) },
  { group: 'stack', keys: ['c'], label: 'C', text: 'keys.cine', run: (v, vp) => vp.toggleCine() },
  ...TOOL_KEYS.map(([key, tool]) => ({ group: 'tools', keys: [key], label: key === 'R' ? 'Shift+R' : key.toUpperCase(), text: `keys.tool.${tool}`, run: (v) => v.setTool(tool) })),
  ...CT_PRESETS.map((preset, i) => ({ group: 'window', keys: [String(i + 1)], label: String(i + 1), text: `preset.${preset.id}`, run: (v) => v.applyPreset(preset.id) })),
  { group: 'window', keys: ['0'], label: '0', text: 'action.presets.default', run: (v) => v.applyPreset('default') },
  { group: 'window', keys: ['i'], label: 'I', text: 'keys.invert', run: (v, vp) => vp.toggleInvert() },
  { group: 'image', keys: ['f'], label: 'F', text: 'keys.fit', run: (v, vp) => vp.fit() },
  { group: 'image', keys: ['t'], label: 'T', text: 'keys.rotate', run: (v, vp) => vp.rotate() },
  { group: 'image', keys: ['h'], label: 'H', text: 'keys.flipH', run: (v, vp) => vp.flip(true) },
  { group: 'image', keys: ['v'], label: 'V', text: 'keys.flipV', run: (v, vp) => vp.flip(false) },
  { group: 'image', keys: ['Backspace'], label: 'Backspace', text: 'keys.reset', run: (v, vp) => vp.reset() },
  { group: 'image', keys: ['Delete'], label: 'Delete', text: 'keys.clear', run: (v, vp) => vp.clearMeasurements() },
  { group: 'other', keys: ['k'], label: 'K', text: 'keys.keyImage', run: (v) => v.keyImages.toggle() },
  { group: 'other', keys: ['Escape'], label: 'Esc', text: 'keys.escape', run: (v, vp) => v.escape(vp) },
  { group: 'other', keys: ['?', 'F1'], label: '? / F1', text: 'keys.help', run: () => showHelp() },
]);

export const GROUPS = Object.freeze(['stack', 'window', 'tools', 'image', 'other']);

/** The table's entry for a key event, or undefined. */
export function shortcutFor(key) {
  const lower = key.length === 1 && key !== 'R' ? key.toLowerCase() : key;
  return SHORTCUTS.find((s) => s.keys.includes(lower));
}

/** Fill the help overlay from SHORTCUTS (again after a language switch). */
export function renderHelp(container = document.getElementById('help-keys')) {
  if (!container) return;
  container.replaceChildren();
  for (const group of GROUPS) {
    const heading = document.createElement('h3');
    heading.textContent = t(`keys.group.${group}`);
    const table = document.createElement('table');
    table.className = 'help-keys';
    for (const shortcut of SHORTCUTS.filter((s) => s.group === group)) {
      const row = table.insertRow();
      row.dataset.testid = 'help-shortcut';
      row.dataset.keys = shortcut.keys.join(' ');
      const key = document.createElement('kbd');
      key.textContent = shortcut.label;
      row.insertCell().append(key);
      row.insertCell().textContent = t(shortcut.text);
    }
    container.append(heading, table);
  }
}

export function showHelp() {
  renderHelp();
  const dialog = document.getElementById('help-dialog');
  if (!dialog.open) dialog.showModal();
}
