// The sessions list: every session on the server (of this key), to reopen, rename or delete.

import { h } from "./dom.js";

function ago(unixSeconds) {
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(unixSeconds * 1000).toLocaleDateString();
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// actions: {open(id), rename(id, name) -> Promise, remove(id) -> Promise}
export function renderSessions(container, sessions, currentId, actions) {
  if (!sessions.length) {
    container.replaceChildren(h("li", { class: "none" }, "No sessions yet."));
    return;
  }
  container.replaceChildren(...sessions.map((s) => item(s, s.id === currentId, actions)));
}

function item(session, isOpen, actions) {
  const name = session.name || "Untitled";
  const title = h("button", { type: "button", class: "session-open", dataset: { action: "open" } },
    session.thumbnail ? h("img", { class: "thumb", src: session.thumbnail, alt: "", loading: "lazy" })
      : h("span", { class: "thumb empty", "aria-hidden": "true" }, "Aa"),
    h("span", { class: "turn-text" }, h("span", { class: "turn-title" }, name),
      h("span", { class: "turn-meta" }, `${plural(session.turns, "turn")} · ${ago(session.updated_at)}`)));
  const rename = h("button", { type: "button", dataset: { action: "rename" }, "aria-label": `Rename ${name}` },
    "Rename");
  const remove = h("button", { type: "button", class: "danger", dataset: { action: "delete" },
    "aria-label": `Delete ${name}` }, "Delete");
  const li = h("li", { class: isOpen ? "session open" : "session", dataset: { session: session.id },
    "aria-current": isOpen ? "true" : null }, title, h("span", { class: "session-actions" }, rename, remove));

  title.addEventListener("click", () => actions.open(session.id));
  rename.addEventListener("click", () => editName(li, session, name, actions));
  // Two steps, no browser dialog: the first click asks, a second within 4 s deletes.
  let armed = null;
  remove.addEventListener("click", async () => {
    if (!armed) {
      remove.textContent = "Really delete?";
      armed = setTimeout(() => {
        armed = null;
        remove.textContent = "Delete";
      }, 4000);
      return;
    }
    clearTimeout(armed);
    remove.disabled = true;
    await actions.remove(session.id);
  });
  return li;
}

function editName(li, session, name, actions) {
  const input = h("input", { type: "text", value: name, "aria-label": "New name", maxlength: 200,
    dataset: { testid: "session-rename-input" } });
  const form = h("form", { class: "rename" }, input, h("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (input.value.trim() && input.value !== name) await actions.rename(session.id, input.value.trim());
    else actions.refresh();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      actions.refresh();
    }
  });
  li.querySelector(".session-actions").replaceWith(form);
  input.focus();
  input.select();
}
