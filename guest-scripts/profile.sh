#!/bin/sh
# /etc/profile, written at finalisation only into images that have none but whose OCI config sets
# an Env or a WorkingDir (the busybox image, scratch images with their own shell): a login shell
# reads nothing else, so this gives it /etc/profile.d, banger-image-env.sh included, as other
# images' profiles do.
for banger_profile in /etc/profile.d/*.sh; do
  # shellcheck disable=SC1090 # the image's own profile.d
  [ -r "$banger_profile" ] && . "$banger_profile"
done
unset banger_profile
