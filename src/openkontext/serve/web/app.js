// openkontext's web page: a conversational image editor with branching history, on the API of
// docs/web.md. Plain ES modules, no build step, nothing from other servers.
//
// Modules: api.js (requests, key, errors), settings.js (the settings drawer), tree.js (the
// history tree), stage.js (picture, compare slider, progress), sessions.js (the sessions
// list), panels.js (messages, key dialog, drawers), images.js (files, drops, URLs,
// downloads), dom.js (element helper). This file holds the state and the actions.
//
// Stable hooks for browser tests (ids unless said otherwise):
//   start view       #start; #upload (file input), #image-url + #image-url-go (web address),
//                    #drop-zone (drop target; drops and pastes work anywhere on the page)
//   composer         #instruction (Enter sends, Shift+Enter new line), #send, #num-images,
//                    #reference-upload (file input), #references (li[data-reference="i"] chips,
//                    each with a "Remove" button), #composer-hint
//   picture          #current (src = the shown turn's image URL; data-turn = that turn; while
//                    the head runs or after it failed it shows the parent's picture and
//                    #frame has class "dimmed"), #before, #compare (range 0..100: 0 all after),
//                    #compare-row, #caption, #working, #progress, #progress-label, #cancel
//   versions         #variants > button[data-variant="N"] (aria-pressed on the head)
//   tools            #undo, #try-again, #download, #download-zip
//   history          #turns; li[data-turn="N"] (turn 0 = the start) with class "head" and
//                    aria-current="true" on the head, "on-path", "pending", "failed";
//                    its button.turn-select selects it; button[data-cancel="N"] cancels it
//   settings         #settings-toggle, #settings (drawer), #set-seed-fixed, #set-seed,
//                    #set-steps, #set-guidance, #set-aspect ("" | "W:H" | "custom"),
//                    #set-width, #set-height, #set-format, #set-safety, #set-style,
//                    #set-upsampling, #settings-reset
//   sessions         #sessions-toggle, #sessions-panel, #sessions > li[data-session="ID"]
//                    with buttons [data-action="open"|"rename"|"delete"] (delete asks once
//                    more: click twice); #session-name (rename the open one); #new-session
//   messages         #error (role="alert"), #error-dismiss, #status (role="status":
//                    connection and model-loading notices), #model-state
//   key              #key-dialog, #key-input, #key-save, #key-cancel, #key-button
// The open session's id is kept in localStorage and in the URL hash (#session=ID).

import { ApiError, api, apiKey, onKeyNeeded } from "./api.js";
import { $, h } from "./dom.js";
import { checkFile, extensionOf, fileStem, picturesIn, saveBlob, toDataUrl } from "./images.js";
import { askForKey, clearError, closeDrawer, notice, showError, shownTurnError, wireDrawers } from "./panels.js";
import { renderSessions } from "./sessions.js";
import { initSettings, requestFields } from "./settings.js";
import { initCompare, renderStage } from "./stage.js";
import { describeTurn, hasPending, isPending, renderTree, renderVariants, treeOf } from "./tree.js";

const SESSION_STORE = "openkontext.session";
const MAX_REFERENCES = 3;

const state = {
  info: null,
  session: null,
  tree: null,
  references: [], // [{value: data URL or http(s) URL, name}]
  busy: false, // a request that changes the session is on its way
  pollTimer: null,
  pollFailures: 0,
  failureShown: null, // "session/turn" of the failed head last reported in #error
};

// ---- doing things ------------------------------------------------------------------------

// Run `work`, showing what went wrong; -> its result, or undefined after an error.
async function attempt(work) {
  try {
    return await work();
  } catch (error) {
    if (!(error instanceof ApiError)) console.error(error);
    showError(error);
    return undefined;
  }
}

// Changes to the session go one at a time; the controls are disabled meanwhile.
async function change(work) {
  if (state.busy) return undefined;
  state.busy = true;
  render();
  try {
    return await attempt(work);
  } finally {
    state.busy = false;
    render();
  }
}

// ---- the server's model ----------------------------------------------------------------

async function loadInfo() {
  let info;
  try {
    info = await api.info();
  } catch (error) {
    notice("model", `${error.message} Trying again…`);
    setTimeout(loadInfo, 3000);
    return;
  }
  const first = !state.info;
  if (first) {
    initSettings(info);
    $("key-button").hidden = !info.auth_required;
  }
  state.info = info;
  $("model-state").textContent = `${info.model ?? "model"} · ${info.state === "ok" ? "ready" : info.state}`;
  $("model-state").dataset.state = info.state;
  if (info.state === "loading") {
    notice("model", "The model is still loading: what you send waits in the queue until it is ready.");
    setTimeout(loadInfo, 2000);
  } else if (info.state === "error") {
    notice("model", "The model failed to load: turns will fail. The server's log says why.");
  } else {
    notice("model", null);
  }
  if (first && info.auth_required && !apiKey.get()) await askForKey("This server needs an API key.");
}

// ---- the open session ------------------------------------------------------------------

function remember(id) {
  localStorage.setItem(SESSION_STORE, id);
  if (location.hash !== `#session=${id}`) history.replaceState(null, "", `#session=${encodeURIComponent(id)}`);
}

function forget() {
  clearTimeout(state.pollTimer);
  state.session = state.tree = null;
  localStorage.removeItem(SESSION_STORE);
  history.replaceState(null, "", location.pathname + location.search);
  render();
}

function setSession(session) {
  const previous = state.session;
  state.session = session;
  state.tree = treeOf(session);
  remember(session.id);
  if (previous?.id !== session.id) {
    state.pollFailures = 0;
    state.references = [];
    clearError();
  }
  render();
  if (hasPending(session)) poll.schedule(500);
}

const GONE = "That session no longer exists (deleted, or made with another key).";

async function openSession(id) {
  clearTimeout(state.pollTimer);
  try {
    setSession(await api.getSession(id));
  } catch (error) {
    if (error.status === 404) forget();
    showError(error.status === 404 ? GONE : error);
  }
}

// While a turn runs: read the session every 0.5 s; when the server cannot be reached, wait
// 1, 2, 4 … 15 s between tries and say so.
const poll = {
  schedule(ms) {
    clearTimeout(state.pollTimer);
    state.pollTimer = setTimeout(() => poll.run(), ms);
  },
  async run() {
    const id = state.session?.id;
    if (!id) return;
    try {
      const session = await api.getSession(id);
      if (state.session?.id !== id) return;
      state.pollFailures = 0;
      notice("connection", null);
      setSession(session);
    } catch (error) {
      if (state.session?.id !== id) return;
      const reachable = !(error.offline || error.status >= 500);
      if (reachable) notice("connection", null);
      if (error.status === 404) {
        forget();
        showError(GONE);
        return;
      }
      if (!reachable || error.status === 429) {
        state.pollFailures += 1;
        const wait = Math.min(15, 2 ** (state.pollFailures - 1));
        const why = error.offline ? "Lost the connection to the server"
          : error.status === 429 ? "The server is busy" : `The server answered ${error.status}`;
        notice("connection", `${why}: trying again in ${wait} s…`);
        poll.schedule(wait * 1000);
        return;
      }
      showError(error);
    }
  },
};

// ---- drawing ---------------------------------------------------------------------------

function render() {
  const { session, tree } = state;
  $("start").hidden = Boolean(session);
  $("editor").hidden = !session;
  $("session-name").hidden = !session;
  if (session && document.activeElement !== $("session-name")) $("session-name").value = session.name ?? "";
  document.title = session?.name ? `${session.name} · openkontext` : "openkontext";
  if (tree) {
    renderTree($("turns"), tree);
    renderStage(tree);
    renderVariants($("variants"), tree);
    // A failed head says why in #error, once; the message goes when another turn is picked.
    const head = tree.head;
    const about = describeTurn(head);
    const failure = about.failed ? `${session.id}/${head.number}` : null;
    if (failure !== state.failureShown) {
      state.failureShown = failure;
      if (shownTurnError() !== null) clearError();
      if (failure) showError(`Turn #${head.number}: ${about.text}`, { fromTurn: head.number });
    }
  } else {
    $("turns").replaceChildren(h("p", { class: "hint" }, "Turns appear here."));
  }
  renderReferences();
  renderControls();
}

// The turn the next instruction continues from: the head; after a failed turn, its parent;
// none while the head is still running.
function nextParent() {
  if (!state.tree) return 0;
  const head = state.tree.head;
  if (isPending(head)) return null;
  return describeTurn(head).failed ? head.parent : head.number;
}

function renderControls() {
  const { tree, busy } = state;
  const head = tree?.head;
  const parent = nextParent();
  $("send").disabled = busy || parent === null;
  $("undo").disabled = busy || !head || head.number === 0;
  $("try-again").disabled = busy || !head || head.number === 0 || isPending(head);
  $("download").disabled = !head?.image;
  $("download-zip").disabled = !state.session;
  $("cancel").disabled = busy;
  let hint = "Enter sends, Shift+Enter starts a new line.";
  if (!tree) hint = "Sending starts a new session from words alone. " + hint;
  else if (parent === null) hint = `Waiting for #${head.number} to finish (or pick another turn).`;
  else if (parent === 0 && !state.session.original) hint = "This makes a picture from words. " + hint;
  else hint = `Continues from ${parent === 0 ? "the starting picture" : `#${parent}`}. ` + hint;
  $("composer-hint").textContent = hint;
}

function renderReferences() {
  $("references").replaceChildren(...state.references.map((ref, i) => h("li", { dataset: { reference: i } },
    h("img", { src: ref.value, alt: `reference ${i + 1}: ${ref.name}` }),
    h("button", { type: "button", class: "plain", "aria-label": `Remove reference ${i + 1}`,
      onclick: () => { state.references.splice(i, 1); renderReferences(); } }, "Remove"))));
  $("reference-upload").disabled = state.references.length >= MAX_REFERENCES;
}

// ---- starting a session ----------------------------------------------------------------

async function fileToDataUrl(file) {
  const problem = checkFile(file, state.info?.max_input_bytes);
  if (problem) throw new ApiError(problem, { field: "input_image" });
  return toDataUrl(file);
}

function startWith(inputImage, name) {
  return change(async () => {
    const session = await api.createSession({ name, input_image: inputImage });
    clearError();
    setSession(session);
    $("instruction").focus();
  });
}

async function startFromFile(file) {
  const dataUrl = await attempt(() => fileToDataUrl(file));
  if (dataUrl) await startWith(dataUrl, file.name.replace(/\.[^.]+$/, "") || "Pasted picture");
}

function startFromUrl(url) {
  let name;
  try {
    name = decodeURIComponent(new URL(url).pathname.split("/").pop() || "") || new URL(url).hostname;
  } catch {
    showError("That is not a web address (it should start with https://).");
    return undefined;
  }
  return startWith(url, name);
}

// A picture dropped or pasted: a new session from the start view, else a reference.
async function receivePictures({ files, url }) {
  if (!state.session) {
    if (files.length) await startFromFile(files[0]);
    else if (url) await startFromUrl(url);
    return;
  }
  await addReferences(files, url);
}

async function addReferences(files, url) {
  const room = MAX_REFERENCES - state.references.length;
  if (room <= 0 || files.length + (url ? 1 : 0) > room) {
    showError(`A turn takes at most ${MAX_REFERENCES} reference pictures.`);
  }
  for (const file of files.slice(0, Math.max(0, room))) {
    const value = await attempt(() => fileToDataUrl(file));
    if (value) state.references.push({ value, name: file.name });
  }
  if (url && state.references.length < MAX_REFERENCES) state.references.push({ value: url, name: url });
  renderReferences();
}

// ---- turns -----------------------------------------------------------------------------

function referenceFields(values) {
  return Object.fromEntries(values.map((value, i) => [`input_image_${i + 2}`, value]));
}

async function send() {
  const prompt = $("instruction").value;
  if (!prompt.trim()) {
    showError("Write an instruction first.");
    $("instruction").focus();
    return;
  }
  const parent = nextParent();
  if (parent === null) return;
  await change(async () => {
    const fields = {
      ...requestFields(),
      prompt,
      parent,
      num_images: Number.parseInt($("num-images").value, 10),
      ...referenceFields(state.references.map((r) => r.value)),
    };
    let id = state.session?.id;
    if (!id) {
      const session = await api.createSession({ name: prompt.trim().slice(0, 60) });
      setSession(session);
      id = session.id;
    }
    const answer = await api.addTurns(id, fields);
    $("instruction").value = "";
    state.references = [];
    clearError();
    setSession(answer.session);
  });
}

// Signed reference URLs point at this server, which does not fetch its own addresses: send
// the pictures themselves.
async function referencesOf(turn) {
  const values = [];
  for (const url of turn.references ?? []) {
    const response = await fetch(url);
    if (!response.ok) {
      throw new ApiError(`Could not read turn #${turn.number}'s reference picture (${response.status}).`);
    }
    values.push(await toDataUrl(await response.blob()));
  }
  return values;
}

const RERUN_SETTINGS = ["steps", "guidance", "aspect_ratio", "width", "height", "output_format",
  "output_quality", "safety_tolerance", "prompt_upsampling", "style_preset"];

// The selected turn's instruction, from its parent, with a new random seed: a sibling.
function tryAgain() {
  const turn = state.tree?.head;
  if (!turn || turn.number === 0) return undefined;
  return change(async () => {
    const settings = turn.settings ?? {};
    const fields = {};
    for (const name of RERUN_SETTINGS) {
      if (settings[name] !== null && settings[name] !== undefined) fields[name] = settings[name];
    }
    if (fields.aspect_ratio) {
      delete fields.width;
      delete fields.height;
    }
    // Reference URLs signed just now, in case the page sat idle past their expiry.
    const fresh = turn.references?.length
      ? treeOf(await api.getSession(state.session.id)).nodes.get(turn.number) : turn;
    const references = referenceFields(await referencesOf(fresh));
    const answer = await api.addTurns(state.session.id,
      { ...fields, ...references, prompt: turn.instruction, parent: turn.parent, num_images: 1 });
    setSession(answer.session);
  });
}

function select(number) {
  if (!state.session || number === state.tree.head.number) return undefined;
  return change(async () => setSession(await api.setHead(state.session.id, number)));
}

function undo() {
  const head = state.tree?.head;
  if (head && head.number !== 0) select(head.parent);
}

function cancel(number) {
  return attempt(async () => setSession(await api.cancelTurn(state.session.id, number)));
}

// ---- keeping it ------------------------------------------------------------------------

async function downloadPicture() {
  await attempt(async () => {
    const fresh = await api.getSession(state.session.id); // image URLs signed just now
    setSession(fresh);
    const head = state.tree.head;
    if (!head.image) return;
    const response = await fetch(head.image);
    if (!response.ok) throw new ApiError(`Could not download the picture (${response.status}).`);
    const blob = await response.blob();
    saveBlob(blob, `${fileStem(fresh.name)}-${head.number}.${extensionOf(blob, head.image)}`);
  });
}

async function downloadZip() {
  await attempt(async () => saveBlob(await api.zip(state.session.id), `${fileStem(state.session.name)}.zip`));
}

async function refreshSessions() {
  const list = await attempt(() => api.listSessions());
  if (!list) return;
  renderSessions($("sessions"), list.sessions, state.session?.id, {
    open: async (id) => {
      closeDrawer("sessions-panel");
      await openSession(id);
    },
    rename: async (id, name) => {
      const session = await attempt(() => api.renameSession(id, name));
      if (session && session.id === state.session?.id) setSession(session);
      await refreshSessions();
    },
    remove: async (id) => {
      if ((await attempt(() => api.deleteSession(id))) === undefined) return;
      if (id === state.session?.id) forget();
      await refreshSessions();
    },
    refresh: refreshSessions,
  });
}

// ---- wiring ----------------------------------------------------------------------------

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("instruction").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $("upload").addEventListener("change", async (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) await startFromFile(file);
  });
  $("url-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const url = $("image-url").value.trim();
    if (!/^https?:\/\//i.test(url)) showError("Give a web address starting with http:// or https://.");
    else startFromUrl(url);
  });
  $("reference-upload").addEventListener("change", async (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    await addReferences(files, null);
  });

  $("turns").addEventListener("click", (event) => {
    const cancelButton = event.target.closest("[data-cancel]");
    if (cancelButton) return cancel(Number(cancelButton.dataset.cancel));
    const item = event.target.closest("[data-turn]");
    if (item) select(Number(item.dataset.turn));
  });
  $("variants").addEventListener("click", (event) => {
    const tile = event.target.closest("[data-variant]");
    if (tile) select(Number(tile.dataset.variant));
  });
  $("cancel").addEventListener("click", () => isPending(state.tree.head) && cancel(state.tree.head.number));
  $("undo").addEventListener("click", undo);
  $("try-again").addEventListener("click", tryAgain);
  $("download").addEventListener("click", downloadPicture);
  $("download-zip").addEventListener("click", downloadZip);
  $("error-dismiss").addEventListener("click", clearError);
  $("new-session").addEventListener("click", () => {
    forget();
    clearError();
    $("upload").focus();
  });
  $("session-name").addEventListener("change", () => {
    const name = $("session-name").value.trim();
    if (name && state.session && name !== state.session.name) {
      attempt(async () => setSession(await api.renameSession(state.session.id, name)));
    }
  });
  $("key-button").addEventListener("click", () => askForKey("Enter the API key to use."));

  wireDrawers({ "sessions-panel": refreshSessions });
  document.addEventListener("keydown", (event) => {
    const undoKey = (event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z";
    if (undoKey && !isTyping(event.target) && !$("key-dialog").open) {
      event.preventDefault();
      undo();
    }
  });

  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    document.body.classList.remove("dragging");
    const found = picturesIn(event.dataTransfer);
    if (!found.files.length && !found.url) return; // text dropped into a field: the browser's
    event.preventDefault();
    receivePictures(found);
  });
  document.addEventListener("paste", (event) => {
    const found = picturesIn(event.clipboardData);
    if (found.files.length) {
      event.preventDefault();
      receivePictures({ files: found.files, url: null });
    }
  });
  window.addEventListener("hashchange", () => {
    const id = idFromHash();
    if (id && id !== state.session?.id) openSession(id);
  });
}

function idFromHash() {
  const match = /^#session=(.+)$/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

async function boot() {
  onKeyNeeded(askForKey);
  wire();
  initCompare();
  render();
  await loadInfo();
  const id = idFromHash() ?? localStorage.getItem(SESSION_STORE);
  if (id) await openSession(id);
}

boot();
