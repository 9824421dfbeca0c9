// The settings drawer: filled from GET /v1/info, kept in localStorage, read into the fields
// of a new turn's request.

const STORE = "openkontext.settings";
const $ = (id) => document.getElementById(id);

// setting -> [element id, the property holding its value]
const FIELDS = {
  seedFixed: ["set-seed-fixed", "checked"],
  seed: ["set-seed", "value"],
  steps: ["set-steps", "value"],
  guidance: ["set-guidance", "value"],
  aspect: ["set-aspect", "value"],
  width: ["set-width", "value"],
  height: ["set-height", "value"],
  format: ["set-format", "value"],
  safety: ["set-safety", "value"],
  style: ["set-style", "value"],
  upsampling: ["set-upsampling", "checked"],
};

let defaults = {};

function options(select, values, labels = (v) => v) {
  for (const value of values) {
    select.append(new Option(labels(value), value));
  }
}

export function initSettings(info) {
  const custom = $("set-aspect").querySelector('option[value="custom"]');
  for (const ratio of info.aspect_ratios ?? []) {
    $("set-aspect").insertBefore(new Option(ratio, ratio), custom);
  }
  options($("set-style"), info.style_presets ?? []);
  for (const id of ["set-width", "set-height"]) {
    if (info.max_side) $(id).max = info.max_side;
  }
  const side = String(info.native_size ?? 1024);
  defaults = {
    seedFixed: false,
    seed: "0",
    steps: String(info.default_steps ?? ""),
    guidance: String(info.default_guidance ?? ""),
    aspect: "",
    width: side,
    height: side,
    format: "png",
    safety: "2",
    style: "",
    upsampling: false,
  };
  const upsampling = $("set-upsampling");
  upsampling.disabled = !info.prompt_upsampling;
  $("set-upsampling-note").textContent = info.prompt_upsampling
    ? "The server rewrites the instruction in more detail before the model sees it."
    : "Not available: this server has no prompt upsampler.";

  write({ ...defaults, ...saved() });
  $("settings-form").addEventListener("input", changed);
  $("settings-form").addEventListener("change", changed);
  $("settings-reset").addEventListener("click", (event) => {
    event.preventDefault();
    write(defaults);
    changed();
  });
  sync();
}

function saved() {
  try {
    return JSON.parse(localStorage.getItem(STORE) || "{}");
  } catch {
    return {};
  }
}

function write(values) {
  for (const [name, [id, prop]] of Object.entries(FIELDS)) {
    const el = $(id);
    if (!(name in values)) continue;
    el[prop] = values[name];
    // A value this server does not offer (a saved style preset it lacks): back to the default.
    if (el.tagName === "SELECT" && el.value !== values[name]) el.value = defaults[name];
  }
  if ($("set-upsampling").disabled) $("set-upsampling").checked = false;
}

function read() {
  const values = {};
  for (const [name, [id, prop]] of Object.entries(FIELDS)) values[name] = $(id)[prop];
  return values;
}

function changed() {
  localStorage.setItem(STORE, JSON.stringify(read()));
  sync();
}

// Controls that only matter with another one set.
function sync() {
  $("set-seed").disabled = !$("set-seed-fixed").checked;
  const custom = $("set-aspect").value === "custom";
  $("set-width").disabled = $("set-height").disabled = !custom;
  $("set-safety-value").textContent = $("set-safety").value;
}

function number(text, parse) {
  if (text.trim() === "") return undefined;
  const value = parse(text);
  return Number.isFinite(value) ? value : undefined;
}

// -> the KontextRequest fields of a new turn (a number left empty: the server's default).
export function requestFields() {
  const v = read();
  const fields = {
    output_format: v.format,
    safety_tolerance: Number.parseInt(v.safety, 10),
    steps: number(v.steps, (t) => Number.parseInt(t, 10)),
    guidance: number(v.guidance, Number.parseFloat),
  };
  if (v.seedFixed) fields.seed = number(v.seed, (t) => Number.parseInt(t, 10));
  if (v.aspect === "custom") {
    fields.width = number(v.width, (t) => Number.parseInt(t, 10));
    fields.height = number(v.height, (t) => Number.parseInt(t, 10));
  } else if (v.aspect) {
    fields.aspect_ratio = v.aspect;
  }
  if (v.style) fields.style_preset = v.style;
  if (v.upsampling && !$("set-upsampling").disabled) fields.prompt_upsampling = true;
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined));
}
