// One i18n instance for the whole application; views import `i18n` or use useI18n().
import { createI18n } from "vue-i18n";
import en from "./en";
import zh from "./zh";

export type Lang = "zh" | "en";
export const LANG_KEY = "fw.lang";

export function initialLang(stored: string | null): Lang {
  return stored === "en" ? "en" : "zh";
}

export const i18n = createI18n({
  legacy: false,
  locale: initialLang(typeof localStorage === "undefined" ? null : localStorage.getItem(LANG_KEY)),
  fallbackLocale: "zh",
  messages: { zh, en },
});

/** Translate outside components (stores, the map layer). */
export function t(key: string, named?: Record<string, unknown>): string {
  return named ? i18n.global.t(key, named) : i18n.global.t(key);
}

export function currentLang(): Lang {
  return i18n.global.locale.value as Lang;
}

export function setLang(lang: Lang): void {
  i18n.global.locale.value = lang;
  localStorage.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang === "en" ? "en" : "zh-CN";
}
