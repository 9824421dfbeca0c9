// The stage: the current picture large, the before/after slider against its parent, and the
// progress of a turn that is still running.

import { $ } from "./dom.js";
import { stableUrl } from "./images.js";
import { describeTurn, isPending } from "./tree.js";

let lastHead = null;

export function initCompare() {
  const slider = $("compare");
  const apply = () => {
    $("frame").style.setProperty("--split", `${slider.value}%`);
    $("frame").classList.toggle("split", Number(slider.value) > 0);
  };
  slider.addEventListener("input", apply);
  apply();
}

function setImage(img, url) {
  const src = stableUrl(url);
  if (!src) {
    img.hidden = true;
    img.removeAttribute("src");
    return;
  }
  if (img.getAttribute("src") !== src) img.src = src;
  img.hidden = false;
}

// What the stage shows for the head: its picture once Ready; while it runs (or after it
// failed), its parent's picture, dimmed.
export function renderStage(tree) {
  const head = tree.head;
  const parent = head.parent === null ? null : tree.nodes.get(head.parent);
  const shown = head.image ? head : parent?.image ? parent : null;
  const current = $("current");
  setImage(current, shown?.image);
  current.dataset.turn = shown ? shown.number : "";
  if (!shown) current.alt = "";
  else current.alt = shown.number === 0 ? "The starting picture" : `Turn ${shown.number}: ${shown.instruction}`;

  const comparable = shown === head && Boolean(parent?.image);
  setImage($("before"), comparable ? parent.image : null);
  $("compare-row").hidden = !comparable;
  if (head.number !== lastHead) {
    lastHead = head.number;
    $("compare").value = 0;
    $("compare").dispatchEvent(new Event("input"));
  }

  const frame = $("frame");
  frame.classList.toggle("dimmed", shown !== head);
  frame.classList.toggle("empty", !shown);
  const pending = isPending(head);
  $("working").hidden = !pending;
  if (pending) {
    const progress = $("progress");
    if (head.progress === null || head.progress === undefined) progress.removeAttribute("value");
    else progress.value = head.progress;
    $("progress-label").textContent = describeTurn(head).text;
  }
  $("placeholder").hidden = Boolean(shown);
  $("placeholder").textContent = head.number === 0
    ? "Describe a picture below: the first turn makes it."
    : "No picture yet.";

  const about = describeTurn(head);
  $("caption").textContent = head.number === 0
    ? (head.image ? "The starting picture." : "")
    : `#${head.number} · ${head.instruction}${about.text && !pending ? ` · ${about.text}` : ""}`;
}
