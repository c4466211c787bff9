#!/bin/busybox sh
# /init of the boot tier's initramfs (integration/boot): load the virtio
# and ext4 modules, mount virtio disk 0 and hand over to systemd. Progress
# goes to the results port (second serial port) as ATREST-BOOT-* markers
# that the host parses (results.go); a failure here powers off at once.
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
R=/dev/ttyS1
stty -F $R raw -echo 2>/dev/null
say() { echo "$*" > $R; }
fail() {
	say "ATREST-BOOT-INITRAMFS-FAILED $*"
	poweroff -f
}

say "ATREST-BOOT-INITRAMFS $(uname -r)"
while read -r m; do
	[ -n "$m" ] || continue
	insmod "$m" || fail "insmod $m"
done < /etc/atrest-boot/modules
i=0
while [ ! -b /dev/vda ]; do
	i=$((i + 1))
	[ $i -le 100 ] || fail "no /dev/vda after 10 s"
	sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "mount /dev/vda"
[ -L /newroot/sbin/init ] || [ -x /newroot/sbin/init ] || fail "/dev/vda has no /sbin/init"
say "ATREST-BOOT-SWITCHROOT"
mount --move /dev /newroot/dev
umount /sys /proc
exec switch_root /newroot /sbin/init
