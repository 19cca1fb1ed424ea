// Where banger-helper listens: the helper, the daemon, doctor and `banger system` agree on it.

/** Where the helper listens unless BANGER_HELPER_SOCKET or `[network] helper_socket` says otherwise. */
export function defaultHelperSocket(uid: number): string {
  return `/run/banger-helper/${uid}.sock`;
}

/** The socket a daemon of this uid talks to: env first, then config, then the default. */
export function helperSocketFor(
  env: Readonly<Record<string, string | undefined>>,
  configured: string | null,
  uid: number,
): string {
  return env.BANGER_HELPER_SOCKET || configured || defaultHelperSocket(uid);
}
