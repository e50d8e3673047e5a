/**
 * The whole wire format in one import, for code that handles both
 * directions (storage adapters, the cluster bus, tests): client frames and
 * their decoder from `client_frames.ts`, server frames and their encoders
 * from `server_frames.ts`. Code that runs in a browser imports
 * `server_frames.ts` alone (no zod).
 *
 * @module
 */
export * from "./client_frames.ts";
export * from "./server_frames.ts";
