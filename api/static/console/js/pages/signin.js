// Sign in with an API key; it is kept in sessionStorage only (gone when the tab closes).

import { ApiError, get, setKey } from "../api.js";
import { h } from "../dom.js";
import { clearErrors, field, showError } from "../forms.js";

export function renderSignIn(main) {
  const input = h("input", {
    type: "password",
    name: "api_key",
    autocomplete: "off",
    required: true,
    spellcheck: "false",
    dataset: { field: "api_key" },
  });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "card narrow", novalidate: true },
    field("API key", input, "From `gisp keys create --tenant NAME`. Kept in this tab only."),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const key = input.value.trim();
    if (!key) {
      showError(form, { field: "api_key", message: "enter an API key" });
      return;
    }
    button.disabled = true;
    try {
      await get("/v1/jobs?limit=1", { key });
      setKey(key);
      const next = sessionStorage.getItem("gisp.next");
      sessionStorage.removeItem("gisp.next");
      location.hash = next && next !== "/signin" ? `#${next}` : "#/jobs";
    } catch (error) {
      const message = error instanceof ApiError && error.status === 401 ? "this key is not valid" : error.message;
      showError(form, { field: "api_key", message });
    } finally {
      button.disabled = false;
    }
  });
  main.append(h("h1", {}, "Sign in"), form);
  input.focus();
  return null;
}
