/**
 * Editing and deleting your own messages in the chat: the Edit and Delete actions on a row,
 * the inline editor, and the "(edited)" mark. The broker checks authorship (only the user who
 * wrote a message may change it, SPEC.md 4.11); the actions are shown on those rows only.
 */
import { h } from "./view.js";

/** What a row's actions do: each resolves once the broker stored the change. */
export interface RowActions {
  edit(text: string): Promise<unknown>;
  remove(): Promise<unknown>;
  /** A refused change: shown to the user. */
  failed(e: unknown): void;
}

/** Adds Edit and Delete to a row (once); a deleted row gets none. */
export function addActions(li: HTMLLIElement, actions: RowActions): void {
  if (li.classList.contains("deleted") || li.querySelector(":scope > .actions") !== null) return;
  const bar = h("div", "actions");
  const edit = h("button", "act edit", "Edit");
  edit.type = "button";
  edit.title = "Edit your message";
  const del = h("button", "act delete", "Delete");
  del.type = "button";
  del.title = "Delete your message";
  bar.append(edit, del);
  li.append(bar);
  edit.addEventListener("click", () => openEditor(li, actions));
  del.addEventListener("click", () => {
    if (!window.confirm("Delete this message for everyone?")) return;
    del.disabled = true;
    actions.remove().catch((e: unknown) => {
      del.disabled = false;
      actions.failed(e);
    });
  });
}

/** Drops a row's actions and its "(edited)" mark: it was deleted. */
export function removeActions(li: HTMLElement): void {
  li.querySelector(":scope > .edited")?.remove();
  li.querySelector(":scope > .actions")?.remove();
  li.querySelector(":scope > .editor")?.remove();
  li.classList.remove("editing");
}

/** Shows a row's new text, marked "(edited)". */
export function markEdited(li: HTMLElement, text: string): void {
  const p = li.querySelector(":scope > .text");
  if (p !== null) p.textContent = text;
  if (li.querySelector(":scope > .edited") === null) {
    const mark = h("span", "edited", "(edited)");
    mark.title = "This message was edited";
    p?.after(mark);
  }
}

/** The inline editor: Enter or Save stores the new text, Escape or Cancel leaves it. */
function openEditor(li: HTMLLIElement, actions: RowActions): void {
  if (li.classList.contains("editing")) return;
  const p = li.querySelector<HTMLElement>(":scope > .text");
  const before = p?.textContent ?? "";
  li.classList.add("editing");
  const form = h("form", "editor");
  const box = h("textarea");
  box.value = before;
  box.rows = Math.min(8, before.split("\n").length + 1);
  box.setAttribute("aria-label", "Edit message");
  const save = h("button", "primary", "Save");
  save.type = "submit";
  const cancel = h("button", undefined, "Cancel");
  cancel.type = "button";
  const buttons = h("div", "editor-buttons");
  buttons.append(cancel, save);
  form.append(box, buttons);
  p?.after(form);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
  const close = (): void => {
    form.remove();
    li.classList.remove("editing");
  };
  cancel.addEventListener("click", close);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") close();
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = box.value.trim();
    if (text === "" || text === before) return close();
    save.disabled = true;
    actions.edit(text).then(
      () => {
        close();
        // The `edited` event shows it for everyone; shown here at once too.
        markEdited(li, text);
      },
      (err: unknown) => {
        save.disabled = false;
        actions.failed(err);
      },
    );
  });
}
