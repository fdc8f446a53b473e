// The DICOM tag browser dialog: every attribute of the image shown, filterable.

import { tagRows } from './tags.js';
import { t } from './i18n.js';

export class TagBrowser {
  /** @param {HTMLDialogElement} dialog holds #tags-filter and #tags-body */
  constructor(dialog) {
    this.dialog = dialog;
    this.filter = dialog.querySelector('#tags-filter');
    this.body = dialog.querySelector('#tags-body');
    this.meta = null;
    this.filter.addEventListener('input', () => this.render());
  }

  /** Open the dialog for one instance's DICOM JSON metadata (null: none shown). */
  show(meta) {
    this.meta = meta;
    this.filter.value = '';
    this.render();
    this.dialog.showModal();
  }

  render() {
    if (!this.meta) {
      const row = document.createElement('tr');
      const cell = document.createElement('td');
      cell.colSpan = 4;
      cell.textContent = t('tags.none');
      row.append(cell);
      this.body.replaceChildren(row);
      return;
    }
    const filter = this.filter.value.trim().toLowerCase();
    const rows = tagRows(this.meta, t('tags.bulk')).filter(
      (r) => !filter || `${r.tag} ${r.tag.replace(/[(),]/g, '')} ${r.name} ${r.vr} ${r.value}`.toLowerCase().includes(filter),
    );
    this.body.replaceChildren(
      ...rows.map((r) => {
        const tr = document.createElement('tr');
        tr.dataset.testid = 'tag-row';
        for (const [i, value] of [r.tag, r.name, r.vr, r.value].entries()) {
          const td = document.createElement('td');
          td.textContent = value;
          if (i === 1) td.style.paddingLeft = `${0.5 + r.depth}em`;
          tr.append(td);
        }
        return tr;
      }),
    );
  }
}
