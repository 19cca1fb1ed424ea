import os from "node:os";
import path from "node:path";

/** Every path banger reads or writes. Derived once from the environment; nothing else builds paths. */
export interface Layout {
  configDir: string;
  configFile: string;
  stateDir: string;
  dbFile: string;
  imagesDir: string;
  kernelsDir: string;
  vmsDir: string;
  /** Saved VM states, one `<id>/` each (0700: they hold guest memory). */
  snapshotsDir: string;
  /** Archives piped into `banger image import -`, saved by the CLI while the daemon reads them. */
  importsDir: string;
  sshDir: string;
  cacheDir: string;
  ociBlobsDir: string;
  runtimeDir: string;
  socketFile: string;
  pidFile: string;
  lockFile: string;
  /** A second lock beside the state: two daemons whose runtime dirs differ never share it. */
  stateLockFile: string;
  daemonLogFile: string;
}

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * BANGER_HOME puts everything under one directory (tests use a fresh one each);
 * otherwise the XDG variables and their standard fallbacks apply.
 */
export function resolveLayout(env: Env = process.env, homeDir: string = os.homedir()): Layout {
  const bangerHome = env.BANGER_HOME;
  let configDir: string;
  let stateDir: string;
  let cacheDir: string;
  let runtimeDir: string;
  if (bangerHome) {
    const root = path.resolve(bangerHome);
    configDir = path.join(root, "config");
    stateDir = path.join(root, "state");
    cacheDir = path.join(root, "cache");
    runtimeDir = path.join(root, "run");
  } else {
    const xdg = (name: string, fallback: string): string => {
      const value = env[name];
      return value && path.isAbsolute(value) ? value : fallback;
    };
    configDir = path.join(xdg("XDG_CONFIG_HOME", path.join(homeDir, ".config")), "banger");
    stateDir = path.join(xdg("XDG_STATE_HOME", path.join(homeDir, ".local", "state")), "banger");
    cacheDir = path.join(xdg("XDG_CACHE_HOME", path.join(homeDir, ".cache")), "banger");
    // Without XDG_RUNTIME_DIR (root shells, CI) keep the socket under state, which is private to the user.
    const xdgRuntime = env.XDG_RUNTIME_DIR;
    runtimeDir =
      xdgRuntime && path.isAbsolute(xdgRuntime)
        ? path.join(xdgRuntime, "banger")
        : path.join(stateDir, "run");
  }
  return {
    configDir,
    configFile: path.join(configDir, "config.toml"),
    stateDir,
    dbFile: path.join(stateDir, "banger.db"),
    imagesDir: path.join(stateDir, "images"),
    kernelsDir: path.join(stateDir, "kernels"),
    vmsDir: path.join(stateDir, "vms"),
    snapshotsDir: path.join(stateDir, "snapshots"),
    importsDir: path.join(stateDir, "imports"),
    sshDir: path.join(stateDir, "ssh"),
    cacheDir,
    ociBlobsDir: path.join(cacheDir, "oci", "blobs", "sha256"),
    runtimeDir,
    socketFile: path.join(runtimeDir, "bangerd.sock"),
    pidFile: path.join(runtimeDir, "bangerd.pid"),
    lockFile: path.join(runtimeDir, "bangerd.lock"),
    stateLockFile: path.join(stateDir, "bangerd.lock"),
    daemonLogFile: path.join(stateDir, "bangerd.log"),
  };
}
