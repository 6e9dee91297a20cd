#!/bin/busybox sh
# tapnet's test guest: /init of the initramfs built by scripts/guest/build.mjs.
# Mounts the pseudo file systems, loads the virtio modules, configures eth0 from the kernel's `ip=`
# argument (Debian's cloud kernel has CONFIG_IP_PNP off, so the kernel itself ignores it), serves a page
# with the VM's name (`tapnet.name=`) on port 80, prints the ready marker on the serial console, then
# runs commands read from the console (the launcher's exec()).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts
hostname tapnet-guest
ip link set lo up

name=guest
ipcfg=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    ip=*) ipcfg="${arg#ip=}" ;;
    tapnet.name=*) name="${arg#tapnet.name=}" ;;
  esac
done

# The module list and order were written by the builder (dependencies first).
for m in $(cat /etc/tapnet-modules); do
  insmod "/lib/modules/$m.ko" 2>/dev/null
done
echo "TAPNET-BOOTED name=$name"

addr=
if [ -n "$ipcfg" ]; then
  # ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>
  old_ifs="$IFS"
  IFS=:
  set -- $ipcfg
  IFS="$old_ifs"
  addr="$1"; gw="$3"; mask="$4"; host="$5"; dev="${6:-eth0}"; dns0="$8"; dns1="$9"
  i=0
  while [ ! -e "/sys/class/net/$dev" ] && [ $i -lt 200 ]; do
    sleep 0.05
    i=$((i + 1))
  done
  [ -n "$host" ] && hostname "$host"
  if [ -n "$mask" ]; then
    ifconfig "$dev" "$addr" netmask "$mask" up
  else
    ifconfig "$dev" "$addr" up
  fi
  [ -n "$gw" ] && route add default gw "$gw" "$dev"
  : > /etc/resolv.conf
  [ -n "$dns0" ] && echo "nameserver $dns0" >> /etc/resolv.conf
  [ -n "$dns1" ] && echo "nameserver $dns1" >> /etc/resolv.conf
fi

mkdir -p /www
echo "tapnet guest $name" > /www/index.html
httpd -p 80 -h /www
# No echo on the console from here on (before the ready marker: commands may follow it at once).
stty -echo 2>/dev/null
echo "TAPNET-READY name=$name ip=$addr"

# The console is the launcher's command channel: each line is `<id> <command>`; the command runs in a
# subshell (stdin /dev/null, stderr to stdout), then a newline and `@@TAPNET-DONE <id> <status>`. No
# echo, no prompt: what comes back is only the commands' output. PID 1 must never exit: loop for ever.
while :; do
  while IFS= read -r line; do
    id="${line%% *}"
    cmd="${line#* }"
    ( eval "$cmd" ) </dev/null 2>&1
    # A newline first: the output may not end with one.
    printf '\n@@TAPNET-DONE %s %s\n' "$id" "$?"
  done
  sleep 1
done
