// Showing the API's 422 answers next to the field they name.

import { h } from "./dom.js";

/** Remove every error shown in the form. */
export function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((el) => el.remove());
  form.querySelectorAll("[aria-invalid]").forEach((el) => {
    el.removeAttribute("aria-invalid");
    const described = (el.getAttribute("aria-describedby") || "").split(" ").filter((id) => !id.startsWith("err-"));
    if (described.length) el.setAttribute("aria-describedby", described.join(" "));
    else el.removeAttribute("aria-describedby");
  });
}

/**
 * The input that stands for an API field path: exact data-field match, else the path with its last part
 * or index removed ("sparsities[1]" -> "sparsities", "calibration.name.x" -> "calibration.name"), ...
 */
export function inputFor(form, field) {
  let path = field || "";
  while (path) {
    const input = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
    if (input) return input;
    const cut = Math.max(path.lastIndexOf("."), path.lastIndexOf("["));
    path = cut > 0 ? path.slice(0, cut) : "";
  }
  return null;
}

/** Show an error message next to the field it names (or at the top of the form); focus that field. */
export function showError(form, error) {
  const input = inputFor(form, error.field);
  const id = `err-${Math.random().toString(36).slice(2, 9)}`;
  const text = error.field ? `${error.message} (${error.field})` : error.message;
  const message = h("p", { class: "field-error", id, role: "alert" }, text);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    const described = input.getAttribute("aria-describedby");
    input.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
    (input.closest(".field") || input.parentElement).append(message);
    input.focus();
  } else {
    form.prepend(message);
  }
  return message;
}

/** A labelled field: <div class=field><label>..</label>control<p class=hint>..</p></div>. */
export function field(label, control, hint) {
  if (!control.id) control.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  const parts = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hintId = `${control.id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("p", { class: "hint", id: hintId }, hint));
  }
  return h("div", { class: "field" }, ...parts);
}
