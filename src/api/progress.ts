// The progress protocol's two names, apart from methods.ts: the CLI needs them to call the daemon,
// and importing methods.ts would evaluate every zod schema at CLI start-up.

/** Notification the daemon sends while a long request runs; `token` ties it to the request. */
export const PROGRESS_NOTIFICATION = "progress";

/** Requests may carry this key next to their params to ask for progress. */
export const PROGRESS_TOKEN_KEY = "$progressToken";
