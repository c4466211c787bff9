#!/bin/sh
# Run before systemd's emergency and rescue shells in the boot tier's
# guest (integration/boot): report why the boot failed on the results port
# and power off instead of waiting for a root password nobody will type.
exec 3>/dev/ttyS1
stty raw -echo <&3 2>/dev/null
printf 'ATREST-BOOT-EMERGENCY %s\n' "$1" >&3
systemctl --failed --no-legend --plain --no-pager >&3 2>&1
journalctl -b -p err --no-pager -o short-monotonic 2>&1 | tail -n 40 >&3
printf '\nATREST-BOOT-EMERGENCY-END\n' >&3
sync
systemctl --no-block poweroff
