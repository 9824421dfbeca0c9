// h("li", {class: "turn", dataset: {turn: 3}}, "text", child): an element. Text is always
// set as text, never parsed as HTML, so instructions and names cannot inject markup.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

// Replace `container`'s children, keeping keyboard focus on the element with the same
// data-focus key (polling re-renders twice a second).
export function replaceKeepingFocus(container, children) {
  const key = document.activeElement?.closest?.("[data-focus]")?.dataset.focus;
  const inside = key && container.contains(document.activeElement);
  container.replaceChildren(...children);
  if (inside) container.querySelector(`[data-focus="${CSS.escape(key)}"]`)?.focus();
}
