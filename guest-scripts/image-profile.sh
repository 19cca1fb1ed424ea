#!/bin/sh
# /etc/profile.d/banger-image-env.sh, written at finalisation into images whose OCI config sets an
# Env or a WorkingDir. /etc/profile runs it after setting its own PATH, so a login shell keeps the
# image's PATH (and the rest of its Env). A login shell that starts at home (a plain `vm ssh`)
# moves to the image's WorkingDir, as `docker exec` starts there; one started elsewhere (a
# workspace) stays where it is.
if [ -r /usr/lib/banger/image-env.sh ]; then
  # shellcheck disable=SC1091 # banger's own file in the guest
  . /usr/lib/banger/image-env.sh
  if [ -n "$banger_workdir" ] && [ "$PWD" = "$HOME" ]; then
    cd "$banger_workdir" || :
  fi
fi
