// The page's words: every string a participant reads comes from the catalogue (texts/en.json, and a
// study's translations of it, crowdplay/texts.py). Elements of index.html name their text with
// data-text="key" (their content) or data-text-aria-label="key" (their label).

let english = {};
let chosen = {};

// The language the participant reads: ?lang= when the study offers it, else the first of the
// browser's languages it offers, else the study's own.
export function chooseLanguage(study, params) {
  const offered = study.languages || ["en"];
  const wanted = [params.get("lang"), ...(navigator.languages || [navigator.language])].filter(Boolean);
  for (const tag of wanted) {
    const exact = offered.find((language) => language.toLowerCase() === tag.toLowerCase());
    if (exact) return exact;
    const primary = offered.find((language) => language.split("-")[0] === tag.split("-")[0].toLowerCase());
    if (primary) return primary;
  }
  return study.language || "en";
}

// Load the catalogue for the study's chosen language and put it on the page.
export async function loadTexts(study, params) {
  english = await (await fetch("/static/texts/en.json")).json();
  const language = chooseLanguage(study, params);
  chosen = (study.texts || {})[language] || {};
  document.documentElement.lang = language;
  applyTexts(document);
  return language;
}

// The text of `key` with its {placeholders} filled from `values`.
export function t(key, values = {}) {
  const text = chosen[key] ?? english[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));
}

// `key`_one for one, `key`_other for any other count (n is among the values).
export function tn(key, n, values = {}) {
  return t(`${key}_${n === 1 ? "one" : "other"}`, { n, ...values });
}

export function applyTexts(root) {
  for (const element of root.querySelectorAll("[data-text]")) element.textContent = t(element.dataset.text);
  for (const element of root.querySelectorAll("[data-text-aria-label]")) element.setAttribute("aria-label", t(element.dataset.textAriaLabel));
}
