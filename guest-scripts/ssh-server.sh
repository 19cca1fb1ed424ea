#!/usr/lib/banger/bin/sh
# banger's SSH server (/usr/lib/banger/ssh-server), run in the foreground by banger's init or by
# banger-ssh.service: the image's own sshd when it has one, else banger's dropbear, whose copy
# names banger's loader (/usr/lib/banger/lib/ld.so) and finds its libraries beside it, so it runs
# whatever libc the image has. dropbear clears the environment of its sessions: LD_LIBRARY_PATH
# stays with dropbear (and its re-exec per connection).
if [ -x /usr/sbin/sshd ]; then
  mkdir -p /run/sshd
  exec /usr/sbin/sshd -D -e
fi
# -s -g: no password logins at all; -E: log to stderr (the console or the journal).
LD_LIBRARY_PATH=/usr/lib/banger/lib exec /usr/lib/banger/bin/dropbear -F -E -s -g -p 22 \
  -r /var/lib/banger/dropbear_ed25519_host_key
