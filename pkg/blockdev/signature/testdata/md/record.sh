#!/usr/bin/env bash
# Records real md RAID member images with Debian's mdadm, once, in a QEMU
# guest running Debian's kernel: the development and CI kernels have no md
# driver, and mdadm cannot write a superblock without one. The tests use
# the recorded images (md-*.img.gz); rerun this script to refresh them.
#
# Needs: qemu-system-x86 busybox-static kmod mdadm (and apt access for the
# kernel package). Run as root from anywhere; writes next to this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

abi=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}' | sed 's/^linux-image-//')
apt-get download "linux-image-$abi" >/dev/null 2>&1
dpkg -x linux-image-"$abi"_*.deb k
depmod -b k "$abi"

root=initramfs
mkdir -p $root/{bin,sbin,dev,proc,sys,tmp,run,etc,lib/modules,lib64,lib/x86_64-linux-gnu}
cp /bin/busybox $root/bin/
cp /usr/sbin/mdadm $root/sbin/
for lib in $(ldd /usr/sbin/mdadm | awk '/=>/{print $3} /ld-linux/{print $1}'); do
  cp -L "$lib" "$root$lib"
done
for m in md-mod raid1 loop; do
  modprobe -d k -S "$abi" --show-depends $m | awk '{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" $root/lib/modules/
  echo "$(basename "$ko")" >> $root/lib/modules/order
done

# Member size: not a multiple of 4 KiB or 64 KiB, so the end-of-device
# superblock offsets (0.90, 1.0) exercise the rounding.
size=$((4 * 1024 * 1024 + 22 * 1024))
cat > $root/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for ko in \$(cat /lib/modules/order); do insmod /lib/modules/\$ko; done
i=0
for meta in 0.90 1.0 1.1 1.2; do
  a=/tmp/a-\$meta.img; b=/tmp/b-\$meta.img
  truncate -s $size \$a; truncate -s $size \$b
  losetup /dev/loop\$i \$a; losetup /dev/loop\$((i+1)) \$b
  mdadm --create /dev/md\$i --run --assume-clean --metadata=\$meta --level=1 \
    --raid-devices=2 --name=atrest-\$meta --homehost=atrest /dev/loop\$i /dev/loop\$((i+1)) </dev/null
  mdadm --examine /dev/loop\$i | sed -n '1,12p'
  mdadm --stop /dev/md\$i
  losetup -d /dev/loop\$i; losetup -d /dev/loop\$((i+1))
  echo "BEGIN md-\$meta.img.gz" > /dev/ttyS1
  gzip -9 -c \$a | base64 > /dev/ttyS1
  echo "END" > /dev/ttyS1
  i=\$((i+2))
done
echo "mdadm \$(mdadm --version 2>&1)" > /dev/ttyS1
echo "kernel \$(uname -r)" > /dev/ttyS1
poweroff -f
INIT
chmod +x $root/init
(cd $root && find . | cpio -o -H newc --quiet) > initramfs.cpio

qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
  -kernel k/boot/vmlinuz-"$abi" -initrd initramfs.cpio \
  -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=4" \
  -nographic -no-reboot -monitor none -serial stdio -serial file:out.txt -nic none

tr -d '\r' < out.txt > out.clean
awk -v dir="$here" '
  /BEGIN /{ name=$2; sub(/.*BEGIN /, "", name); file=dir"/"name".b64"; printf "" > file; next }
  /^END/{ close(file); file=""; next }
  file != "" { print >> file }
  /^(mdadm|kernel) /{ print > "/dev/stderr" }
' out.clean 2> "$here/VERSIONS"
for f in "$here"/*.b64; do base64 -d "$f" > "${f%.b64}"; rm "$f"; done
ls -l "$here"
