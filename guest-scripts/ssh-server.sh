#!/usr/lib/banger/bin/sh
# banger's SSH server (/usr/lib/banger/ssh-server), run in the foreground by banger's init or by
# banger-ssh.service: the image's own sshd when it has one, else banger's dropbear, which brings
# its own libraries and loader under /usr/lib/banger/lib (it runs whatever libc the image has).
if [ -x /usr/sbin/sshd ]; then
  mkdir -p /run/sshd
  exec /usr/sbin/sshd -D -e
fi
# -s -g: no password logins at all; -E: log to stderr (the console or the journal).
exec /usr/lib/banger/lib/ld-linux-x86-64.so.2 --library-path /usr/lib/banger/lib \
  /usr/lib/banger/bin/dropbear -F -E -s -g -p 22 -r /var/lib/banger/dropbear_ed25519_host_key
