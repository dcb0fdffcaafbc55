#!/bin/sh
# mmdebstrap's customize hook for the Debian board roots (scripts/build-debian-image.sh):
# leaves out what a gateway's root does not need: perl with usrmerge, its only user (the
# root is merged already), whatever perl's version in the suite, and udev's compiled
# hardware database. A smaller slot is a smaller bundle and a shorter install.
#   scripts/debian-slim-root.sh ROOT
set -eu
root=$1
# shellcheck disable=SC2016  # dpkg-query's fields, not the shell's
installed=$(chroot "$root" dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' usrmerge libfile-find-rule-perl \
  libnumber-compare-perl libtext-glob-perl perl 'perl-modules-*' 'libperl5*' 2>/dev/null | awk '$1 == "ii" { print $2 }')
# shellcheck disable=SC2086  # one word per package
[ -z "$installed" ] || chroot "$root" dpkg --purge $installed
rm -f "$root/usr/lib/udev/hwdb.bin" "$root/etc/udev/hwdb.bin"
