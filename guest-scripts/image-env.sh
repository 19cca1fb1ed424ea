#!/usr/lib/banger/bin/sh
# shellcheck disable=SC2034 # banger_workdir is read by the command that sources this
# /usr/lib/banger/image-env.sh: sourced (never run) before what banger runs for the user: vm run,
# vm ssh, sessions, and login shells (/etc/profile.d/banger-image-env.sh, login-shell). It exports
# each line of image.env (the image's OCI Env, written at finalisation, one KEY=VALUE a line) as
# it is, never evaluated, and sets banger_workdir to the image's WorkingDir (image.workdir), or "",
# made when it is missing (the work disk mounted on /root hides what the image has there).
if [ -r /usr/lib/banger/image.env ]; then
  while IFS= read -r banger_line || [ -n "$banger_line" ]; do
    # shellcheck disable=SC2163 # the line is NAME=VALUE: export sets it, literally
    case $banger_line in
    # Tried in a subshell first: a name the shell refuses (bash's read-only UID) must not
    # end the shell that sources this (a POSIX shell exits on a failed special built-in).
    [A-Za-z_]*=*) (export "$banger_line") 2>/dev/null && export "$banger_line" ;;
    esac
  done </usr/lib/banger/image.env
  unset banger_line
  # The image's PATH wins; banger's own tools stay reachable after it.
  case ":$PATH:" in
  *:/usr/lib/banger/bin:*) ;;
  *) PATH="${PATH:+$PATH:}/usr/lib/banger/bin" && export PATH ;;
  esac
fi
banger_workdir=
if [ -r /usr/lib/banger/image.workdir ]; then
  IFS= read -r banger_workdir </usr/lib/banger/image.workdir || :
  # As container runtimes make WORKDIR when a container starts.
  [ -z "$banger_workdir" ] || [ -d "$banger_workdir" ] || mkdir -p "$banger_workdir" 2>/dev/null ||
    /usr/lib/banger/bin/mkdir -p "$banger_workdir" 2>/dev/null || :
fi
