/// <reference lib="dom" />
/**
 * Small DOM helpers for the web client. Text goes in as text nodes, never
 * as HTML: nothing here parses markup.
 *
 * @module
 */

/** Attributes and text of an element made by {@linkcode h}. */
export interface ElementProps {
  /** The `class` attribute. */
  class?: string;
  /** Other attributes, set as they are (never event handlers from data). */
  attrs?: Record<string, string>;
}

/**
 * Makes an element with `props` and children; strings become text nodes.
 *
 * @example
 * ```ts
 * import { h } from "./dom.ts";
 * const item = h("li", { class: "message" }, "<b>stays text</b>");
 * ```
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: ElementProps = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (props.class) element.className = props.class;
  for (const [name, value] of Object.entries(props.attrs ?? {})) {
    element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

/** The element with `id`, which must exist and be a `type`. */
export function byId<T extends HTMLElement>(
  id: string,
  type: new () => T,
): T {
  const element = document.getElementById(id);
  if (!(element instanceof type)) {
    throw new Error(`the page has no ${type.name} #${id}`);
  }
  return element;
}
