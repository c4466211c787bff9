#!/bin/sh
# The boot tier's check runner (integration/boot), run by
# atrest-boot-runner.service once the boot's target is reached. Each check
# runs in turn; its output and exit status go to the results port (the
# second serial port) between ATREST-BOOT-* markers, then the guest powers
# off. The END marker carries the output's exact length in bytes.
exec 3>/dev/ttyS1
stty raw -echo <&3 2>/dev/null
say() { printf '%s\n' "$*" >&3; }
dir=/etc/atrest-boot/checks
out=/run/atrest-boot
mkdir -p "$out"
say "ATREST-BOOT-REACHED $(cat /etc/atrest-boot/after)"
# The runner's own start job is done once it runs (Type=exec): wait for
# the rest of the boot, so that checks see a finished boot (and
# systemd-analyze can tell its time), and report the system's state.
# Guest uptimes (seconds) say where a boot's time went.
uptime() { cut -d' ' -f1 /proc/uptime; }
state=$(systemctl is-system-running --wait 2>/dev/null)
say "ATREST-BOOT-STATE $state $(uptime)"
export HOME=/root ATREST_BOOT_GUEST=1 ATREST_TEST_STRICT=1
while read -r name; do
	[ -n "$name" ] || continue
	say "ATREST-BOOT-BEGIN $name"
	"$dir/$name" </dev/null >"$out/$name.out" 2>&1
	rc=$?
	cat "$out/$name.out" >&3
	say ""
	say "ATREST-BOOT-END $name $rc $(wc -c <"$out/$name.out")"
done < /etc/atrest-boot/checks.list
sync
say "ATREST-BOOT-DONE $(uptime)"
systemctl --no-block poweroff
