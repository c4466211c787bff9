#!/bin/busybox sh
# /init of the real-kernel test guest (integration/vm). The console (first
# serial port) carries the kernel log and this script's own messages; the
# results go to the second serial port, framed by ATREST-VM-* markers that
# the host parses (results.go).
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /mnt /root
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
set -f
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/cryptsetup /dev/shm
R=/dev/ttyS1
stty -F $R raw -echo 2>/dev/null
say() { echo "$*" > $R; }

say "ATREST-VM-BOOTED $(uname -r)"
while read -r m; do
	[ -n "$m" ] || continue
	insmod "$m" || say "ATREST-VM-MODULE-FAILED $m"
done < /etc/atrest-vm/modules

export HOME=/root TMPDIR=/tmp ATREST_VM_GUEST=1 ATREST_TEST_STRICT=1
while read -r name args; do
	[ -n "$name" ] || continue
	say "ATREST-VM-BEGIN $name"
	mkdir -p "/work/$name"
	cd "/work/$name"
	# shellcheck disable=SC2086 # args are flags, split on purpose (globbing is off)
	"/tests/$name.test" $args < /dev/null > $R 2>&1
	rc=$?
	cd /
	say "ATREST-VM-END $name $rc"
done < /etc/atrest-vm/tests

sync
say "ATREST-VM-DONE"
poweroff -f
