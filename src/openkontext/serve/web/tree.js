// A session's turns as a tree, and the history list drawn from it.
//
// Drawing: a line of turns that each have one child stays at one level; where a turn has
// several children (a branch, "Try again", or num_images > 1) they follow it indented, one
// list per branch, and branches that are single turns sit side by side as tiles.

import { h, replaceKeepingFocus } from "./dom.js";
import { stableUrl } from "./images.js";

export const CANCELLED = "cancelled by request";

// -> {nodes: Map number -> turn, children: Map number -> [numbers], path: Set of the numbers
// from turn 0 to the head, head: the head turn}. Turn 0 is made here from session.original.
export function treeOf(session) {
  const root = {
    number: 0,
    parent: null,
    instruction: session.original ? "the original picture" : "from words alone",
    status: "Ready",
    image: session.original,
    references: [],
  };
  const nodes = new Map([[0, root]]);
  for (const turn of session.turns) if (turn.number !== 0) nodes.set(turn.number, turn);
  const children = new Map([...nodes.keys()].map((n) => [n, []]));
  for (const turn of nodes.values()) children.get(turn.parent)?.push(turn.number);
  const head = nodes.get(session.head) ?? root;
  const path = new Set();
  for (let n = head.number; n !== null && nodes.has(n) && !path.has(n); n = nodes.get(n).parent) {
    path.add(n);
  }
  return { nodes, children, path, head };
}

export const isPending = (turn) => turn.status === "Pending";
export const hasPending = (session) => session.turns.some(isPending);

// -> {failed: bool, text} saying what became of a turn, in words.
export function describeTurn(turn) {
  const details = turn.details ?? {};
  const why = details.reason || details.error || "";
  const because = why ? `: ${why}` : "";
  const ok = (text) => ({ failed: false, text });
  const failed = (text) => ({ failed: true, text });
  switch (turn.status) {
    case "Pending":
      return ok(turn.progress ? `Working… ${Math.round(turn.progress * 100)} %` : "Waiting in the queue…");
    case "Ready": {
      const seed = turn.seed === null || turn.seed === undefined ? "" : `seed ${turn.seed}`;
      const time = typeof turn.seconds === "number" ? `${turn.seconds.toFixed(1)} s` : "";
      return ok([seed, time].filter(Boolean).join(" · "));
    }
    case "Request Moderated":
      return failed(`Refused by moderation before it ran${because}. Try other words or another picture.`);
    case "Content Moderated":
      return failed(`The result was withheld by moderation${because}. Try again or change the instruction.`);
    default:
      return failed(details.error === CANCELLED ? "Cancelled." : `Failed${because || "."}`);
  }
}

function thumb(turn) {
  const src = stableUrl(turn.image);
  return src ? h("img", { class: "thumb", src, alt: "", loading: "lazy" })
    : h("span", { class: "thumb empty", "aria-hidden": "true" }, turn.number === 0 ? "Aa" : "…");
}

function turnItem(turn, tree) {
  const n = turn.number;
  const isHead = n === tree.head.number;
  const about = describeTurn(turn);
  const pending = isPending(turn);
  const classes = ["turn", tree.path.has(n) && "on-path", isHead && "head", about.failed && "failed",
    pending && "pending"];
  const select = h("button", { type: "button", class: "turn-select", dataset: { focus: `turn-${n}` } },
    thumb(turn),
    h("span", { class: "turn-text" },
      h("span", { class: "turn-title" }, h("b", {}, n === 0 ? "Start" : `#${n}`), " ", turn.instruction),
      h("span", { class: "turn-meta" }, about.text)));
  const running = pending && [
    h("progress", { max: 1, value: turn.progress ?? null, "aria-label": `Progress of turn ${n}` }),
    h("button", { type: "button", class: "turn-cancel", dataset: { cancel: n, focus: `cancel-${n}` },
      "aria-label": `Cancel turn ${n}` }, "Cancel"),
  ];
  const references = turn.references?.length > 0 && h("span", { class: "refs" },
    turn.references.map((url, i) =>
      h("img", { src: stableUrl(url), alt: `reference picture ${i + 1}`, loading: "lazy" })));
  return h("li", { class: classes.filter(Boolean).join(" "), dataset: { turn: n },
    "aria-current": isHead ? "true" : null }, select, running, references);
}

function chain(tree, start, nested) {
  const items = [];
  for (let n = start; ;) {
    items.push(turnItem(tree.nodes.get(n), tree));
    const kids = tree.children.get(n);
    if (kids.length === 1) {
      n = kids[0];
      continue;
    }
    if (kids.length > 1) {
      const leaves = kids.every((k) => tree.children.get(k).length === 0);
      items.push(h("li", { class: leaves ? "fork leaves" : "fork" },
        h("span", { class: "fork-label" }, `${kids.length} versions from ${n === 0 ? "the start" : `#${n}`}`),
        kids.map((k) => chain(tree, k, true))));
    }
    return h("ol", { class: nested ? "chain branch" : "chain" }, items);
  }
}

export function renderTree(container, tree) {
  replaceKeepingFocus(container, [chain(tree, 0, false)]);
}

// The head's siblings (other versions made from the same parent) as tiles to pick from.
export function renderVariants(container, tree) {
  const head = tree.head;
  const siblings = head.parent === null ? [] : tree.children.get(head.parent);
  container.hidden = siblings.length < 2;
  replaceKeepingFocus(container, siblings.length < 2 ? [] : siblings.map((n) => {
    const turn = tree.nodes.get(n);
    return h("button", {
      type: "button",
      class: "variant",
      dataset: { variant: n, focus: `variant-${n}` },
      "aria-pressed": n === head.number ? "true" : "false",
      "aria-label": `Version #${n}: ${describeTurn(turn).text}`,
    }, thumb(turn), h("span", {}, `#${n}`));
  }));
}
