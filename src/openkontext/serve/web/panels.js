// The page's furniture: the message areas (#error, #status), the API key dialog and the two
// drawers (settings, sessions).

import { apiKey } from "./api.js";
import { $, h } from "./dom.js";

// ---- messages ------------------------------------------------------------------------------

let errorTurn = null; // the turn whose failure #error shows, so it clears when it is left

export function showError(error, { fromTurn = null } = {}) {
  $("error").textContent = error instanceof Error ? error.message : String(error);
  $("error-dismiss").hidden = false;
  errorTurn = fromTurn;
}

export function clearError() {
  $("error").textContent = "";
  $("error-dismiss").hidden = true;
  errorTurn = null;
}

export const shownTurnError = () => errorTurn;

const notices = new Map(); // topic -> text
export function notice(topic, text) {
  if (text) notices.set(topic, text);
  else notices.delete(topic);
  $("status").replaceChildren(...[...notices.values()].map((t) => h("p", {}, t)));
}

// ---- the key -------------------------------------------------------------------------------

let keyPrompt = null;

// -> the key entered (now stored), or null; one dialog however many requests ask at once.
export function askForKey(message) {
  keyPrompt ??= new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-message").textContent = message;
    $("key-input").value = "";
    dialog.returnValue = "";
    dialog.addEventListener("close", () => {
      const value = $("key-input").value.trim();
      const ok = dialog.returnValue === "save" && value !== "";
      if (ok) apiKey.set(value);
      $("key-input").value = "";
      keyPrompt = null;
      resolve(ok ? value : null);
    }, { once: true });
    dialog.showModal();
  });
  return keyPrompt;
}

// ---- drawers -------------------------------------------------------------------------------

const TOGGLES = { settings: "settings-toggle", "sessions-panel": "sessions-toggle" };

export function openDrawer(id, onOpen) {
  for (const other of Object.keys(TOGGLES)) if (other !== id) closeDrawer(other, false);
  $(id).hidden = false;
  $(TOGGLES[id]).setAttribute("aria-expanded", "true");
  $(id).focus();
  onOpen?.();
}

export function closeDrawer(id, returnFocus = true) {
  if ($(id).hidden) return;
  $(id).hidden = true;
  $(TOGGLES[id]).setAttribute("aria-expanded", "false");
  if (returnFocus) $(TOGGLES[id]).focus();
}

// Toggle buttons, close buttons ([data-close]) and Escape; onOpen: {drawer id: function}.
export function wireDrawers(onOpen) {
  for (const [drawer, toggle] of Object.entries(TOGGLES)) {
    $(toggle).addEventListener("click", () =>
      ($(drawer).hidden ? openDrawer(drawer, onOpen[drawer]) : closeDrawer(drawer)));
  }
  document.addEventListener("click", (event) => {
    const close = event.target.closest("[data-close]");
    if (close) closeDrawer(close.dataset.close);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    for (const drawer of Object.keys(TOGGLES)) {
      if (!$(drawer).hidden && $(drawer).contains(document.activeElement)) closeDrawer(drawer);
    }
  });
}
