// Attachments for the chat: classify picked or dropped files into `images` and `files` (PROTOCOL §6.1),
// check the host's limits with the exact §6.2 texts before anything is sent, and read them as data URLs.
import { el } from "./dom.js";

const MB = 1048576;
// Types the host passes to the model as image parts. Anything else (SVG included: HARDENING H26) travels
// as a file, which the host saves to disk instead.
const MODEL_IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"]);

/** Limits from /info `accepted_inputs`; defaults are the host's own (§6.2). */
export function limitsFrom(acceptedInputs) {
  const files = acceptedInputs?.files || {};
  const positive = (value, fallback) => (Number(value) > 0 ? Number(value) : fallback);
  return {
    maxFileSizeMb: positive(files.max_file_size_mb, 10),
    maxFiles: positive(files.max_files_per_request, 10),
    images: acceptedInputs?.images !== false,
  };
}

/**
 * `bytes` in MB with one decimal, rounded like Python's `f"{x:.1f}"` (ties to even), so the texts match
 * the host's byte for byte: bytes / 2^20 is exact in binary, so a tie is exactly representable.
 */
export function formatMb(bytes) {
  const scaled = bytes * 10;
  let tenths = Math.floor(scaled / MB);
  const rest = scaled - tenths * MB;
  if (rest * 2 > MB || (rest * 2 === MB && tenths % 2 === 1)) tenths += 1;
  return `${Math.floor(tenths / 10)}.${tenths % 10}`;
}

/** A file name as the host quotes it in messages: long names cut at 100 characters. */
function shownName(name) {
  return name.length > 100 ? `${name.slice(0, 100)}…` : name;
}

/** Whether this File goes in `images` (true) or `files` (false). */
export function isModelImage(file, limits) {
  return limits.images && MODEL_IMAGE_TYPES.has(file.type);
}

/**
 * The first §6.2 violation for these attachments, in the host's order, or null.
 * `items`: [{file, kind: "image" | "file"}].
 */
export function limitError(items, limits) {
  const files = items.filter((item) => item.kind === "file");
  const images = items.filter((item) => item.kind === "image");
  const maxBytes = limits.maxFileSizeMb * MB;
  const max = limits.maxFileSizeMb;
  if (files.length > limits.maxFiles) {
    return `Too many files: ${files.length} (max: ${limits.maxFiles}). Increase max_files_per_request in host.yaml`;
  }
  for (const { file } of files) {
    if (file.size > maxBytes) {
      return `File too large: ${shownName(file.name)} (${formatMb(file.size)}MB, max: ${max}MB). Increase max_file_size in host.yaml`;
    }
  }
  if (images.length > limits.maxFiles) {
    return `Too many images: ${images.length} (max: ${limits.maxFiles}). Increase max_files_per_request in host.yaml`;
  }
  for (const [index, { file }] of images.entries()) {
    if (file.size > maxBytes) {
      return `Image too large: image ${index} (${formatMb(file.size)}MB, max: ${max}MB). Increase max_file_size in host.yaml`;
    }
  }
  return null;
}

export function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error || new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

/**
 * The tray of pending attachments under the prompt box: chips with a thumbnail or a name, a remove button,
 * and a live line with the first limit violation.
 */
export class AttachmentTray {
  constructor({ tray, warning, getLimits, onChange = () => {} }) {
    this.tray = tray;
    this.warning = warning;
    this.getLimits = getLimits;
    this.onChange = onChange;
    this.items = [];
  }

  add(fileList) {
    const limits = this.getLimits();
    for (const file of Array.from(fileList || [])) {
      const kind = isModelImage(file, limits) ? "image" : "file";
      const preview = kind === "image" ? URL.createObjectURL(file) : null;
      this.items.push({ file, kind, preview });
    }
    this.render();
  }

  remove(item) {
    this.items = this.items.filter((other) => other !== item);
    if (item.preview) URL.revokeObjectURL(item.preview);
    this.render();
  }

  /** Forget the items without revoking their previews (the sent user message still shows them). */
  take() {
    const items = this.items;
    this.items = [];
    this.render();
    return items;
  }

  clear() {
    for (const item of this.items) if (item.preview) URL.revokeObjectURL(item.preview);
    this.items = [];
    this.render();
  }

  error() {
    return limitError(this.items, this.getLimits());
  }

  /** {images: [dataUrl], files: [{name, data}]} ready for INPUT. */
  async payload(items = this.items) {
    const images = [];
    const files = [];
    for (const item of items) {
      const data = await readAsDataUrl(item.file);
      if (item.kind === "image") images.push(data);
      else files.push({ name: item.file.name, data });
    }
    return { images, files };
  }

  render() {
    this.tray.replaceChildren(...this.items.map((item) => attachmentChip(item, () => this.remove(item))));
    this.tray.hidden = this.items.length === 0;
    const problem = this.error();
    this.warning.textContent = problem || "";
    this.warning.hidden = !problem;
    this.onChange(this.items);
  }
}

function extensionOf(name) {
  const match = /\.([A-Za-z0-9]{1,4})$/.exec(name);
  return match ? match[1].toUpperCase() : "FILE";
}

/** A chip for one attachment; `onRemove` adds a remove button. */
export function attachmentChip(item, onRemove = null) {
  const label = `${item.file.name} (${formatMb(item.file.size)} MB)`;
  return el(
    "li",
    { class: `chip chip-${item.kind}`, testid: "attachment-chip", title: label },
    item.preview
      ? el("img", { class: "chip-thumb", src: item.preview, alt: item.file.name })
      : el("span", { class: "chip-icon", "aria-hidden": "true", text: extensionOf(item.file.name) }),
    el("span", { class: "chip-name", text: item.file.name }),
    onRemove &&
      el("button", {
        type: "button",
        class: "chip-remove",
        testid: "attachment-remove",
        "aria-label": `Remove ${item.file.name}`,
        text: "×",
        on: { click: onRemove },
      }),
  );
}
