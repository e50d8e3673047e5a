/// <reference lib="dom" />
/**
 * The page's elements the web app uses, looked up once by id (see
 * `src/web/page.ts` for the markup). Fails loudly when one is missing.
 *
 * Lookup only: no behaviour.
 *
 * @module
 */
import { byId } from "./dom.ts";

/** Looks up every element the app uses. */
// deno-lint-ignore explicit-module-boundary-types -- the type is derived from the lookups, see `Elements`.
export const elements = () => ({
  signin: byId("signin", HTMLElement),
  signinForm: byId("signin-form", HTMLFormElement),
  signinLead: byId("signin-lead", HTMLParagraphElement),
  signinNameField: byId("signin-name-field", HTMLLabelElement),
  signinName: byId("signin-name", HTMLInputElement),
  signinTokenField: byId("signin-token-field", HTMLLabelElement),
  signinToken: byId("signin-token", HTMLInputElement),
  signinRoom: byId("signin-room", HTMLInputElement),
  signinError: byId("signin-error", HTMLParagraphElement),
  signinSubmit: byId("signin-submit", HTMLButtonElement),
  signinStatus: byId("signin-status", HTMLParagraphElement),
  chat: byId("chat", HTMLDivElement),
  me: byId("me", HTMLElement),
  signout: byId("signout-button", HTMLButtonElement),
  roomList: byId("room-list", HTMLUListElement),
  joinForm: byId("join-form", HTMLFormElement),
  joinRoom: byId("join-room", HTMLInputElement),
  dmList: byId("dm-list", HTMLUListElement),
  dmForm: byId("dm-form", HTMLFormElement),
  dmUser: byId("dm-user", HTMLInputElement),
  connection: byId("connection", HTMLDivElement),
  connectionText: byId("connection-text", HTMLSpanElement),
  scrim: byId("scrim", HTMLDivElement),
  menuButton: byId("menu-button", HTMLButtonElement),
  title: byId("conv-title", HTMLHeadingElement),
  subtitle: byId("conv-subtitle", HTMLParagraphElement),
  membersButton: byId("members-button", HTMLButtonElement),
  membersCount: byId("members-count", HTMLSpanElement),
  leaveButton: byId("leave-button", HTMLButtonElement),
  banner: byId("banner", HTMLDivElement),
  bannerText: byId("banner-text", HTMLSpanElement),
  bannerRetry: byId("banner-retry", HTMLButtonElement),
  messages: byId("messages", HTMLDivElement),
  loadOlder: byId("load-older", HTMLButtonElement),
  historyStart: byId("history-start", HTMLParagraphElement),
  messageList: byId("message-list", HTMLOListElement),
  empty: byId("empty", HTMLDivElement),
  members: byId("members", HTMLElement),
  memberList: byId("member-list", HTMLUListElement),
  typing: byId("typing", HTMLParagraphElement),
  composer: byId("composer", HTMLFormElement),
  input: byId("composer-input", HTMLTextAreaElement),
  toasts: byId("toasts", HTMLDivElement),
});

/** The elements, by role. */
export type Elements = ReturnType<typeof elements>;
