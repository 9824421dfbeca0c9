// Pictures in and out of the page: files and clipboard/drop contents to data URLs, signed
// image URLs kept stable between polls, and saving a Blob as a download.

// -> an error message for a file the server would refuse, or null.
export function checkFile(file, maxBytes) {
  if (!file.type.startsWith("image/")) {
    return `"${file.name}" is not a picture (it is ${file.type || "of an unknown type"}).`;
  }
  if (maxBytes && file.size > maxBytes) {
    const limit = megabytes(maxBytes);
    return `"${file.name}" is ${megabytes(file.size)}; this server takes pictures of at most ${limit}.`;
  }
  return null;
}

function megabytes(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function toDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

// The picture files of a drop or paste (DataTransfer), and, when there are none, a dragged
// image's web address (an <img> dragged from another page).
export function picturesIn(transfer) {
  const files = [...(transfer?.files ?? [])];
  const url = (transfer?.getData("text/uri-list") || "").split("\n").find((l) => /^https?:/i.test(l));
  return { files, url: url?.trim() || null };
}

// Image URLs are signed afresh on every read of a session; keeping the first one seen until
// it nears expiry stops <img> elements from downloading the same picture every poll.
const seen = new Map(); // path (no query) -> URL
export function stableUrl(fresh) {
  if (!fresh) return null;
  const url = new URL(fresh, document.baseURI);
  const path = url.origin + url.pathname;
  const kept = seen.get(path);
  if (kept && secondsLeft(kept) > 60) return kept;
  seen.set(path, url.href);
  return url.href;
}

function secondsLeft(href) {
  const exp = Number(new URL(href).searchParams.get("exp"));
  return Number.isFinite(exp) && exp > 0 ? exp - Date.now() / 1000 : Infinity;
}

export function saveBlob(blob, filename) {
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}

// A name that is safe as a file name.
export function fileStem(text) {
  const stem = (text || "").replace(/[^\p{L}\p{N}._-]+/gu, "-").replace(/^-+|-+$/g, "").slice(0, 60);
  return stem || "openkontext";
}

export function extensionOf(blob, url) {
  const fromType = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" }[blob.type];
  if (fromType) return fromType;
  const match = /\.(png|jpe?g|webp)$/i.exec(new URL(url, document.baseURI).pathname);
  return match ? match[1].toLowerCase() : "png";
}
