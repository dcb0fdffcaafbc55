#!/usr/bin/env bash
# Cross-builds the agent with Debian's rustc 1.85 (scripts/setup-cross.sh).
#   scripts/cross-build.sh TARGET [cargo build args...]
#   TARGET: aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf (static, what the
#           QEMU boards run), aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf
#           (glibc, dynamically linked); aarch64 and armv7 are short for the gnu ones.
#   scripts/cross-build.sh TARGET --variant FEATURES
#           a test variant with those cargo features, as target/variant-FEATURES/TARGET/release/gwe;
#           built in the same target dir as the real agent (the standard library and every
#           crate but gwe are shared: a minute, not three), which cargo then puts back.
# Prints the path of the stripped release binary and its size. Its software bill of
# materials (scripts/sbom.py) is written beside it: gwe.cdx.json.
set -euo pipefail
cd "$(dirname "$0")/.."
musl=""
case "${1:-}" in
  aarch64|aarch64-unknown-linux-gnu) target=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu ;;
  armv7|armv7-unknown-linux-gnueabihf) target=armv7-unknown-linux-gnueabihf; gcc=arm-linux-gnueabihf ;;
  aarch64-unknown-linux-musl) target=$1; gcc=aarch64-linux-gnu; musl=aarch64-linux-musl ;;
  armv7-unknown-linux-musleabihf) target=$1; gcc=arm-linux-gnueabihf; musl=arm-linux-musleabihf ;;
  *) echo "usage: $0 aarch64|armv7|TRIPLE [cargo args]" >&2; exit 2 ;;
esac
shift
variant=""
if [ "${1:-}" = --variant ]; then variant=$2; shift 2; fi
scripts/setup-cross.sh >/dev/null
# Cargo builds in target/cross, apart from the native builds (CI runs cross builds in its
# background lane, beside native release builds that would otherwise wait on the same
# build-directory lock), and the stripped binary is placed in target/TARGET/release. With
# CARGO_TARGET_DIR set, both are there.
out_root=${CARGO_TARGET_DIR:-target}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
t_env=${target//-/_}
T_ENV=${t_env^^}
# No unwind tables in the C code the agent compiles in (ring's): with panic = "abort"
# nothing unwinds through it.
cflags="-fno-asynchronous-unwind-tables -fno-unwind-tables"
# Linked by lld (Debian's lld-16).
rustflags_var=CARGO_TARGET_${T_ENV}_RUSTFLAGS
rustflags="${!rustflags_var:-} -C link-arg=-B/usr/lib/llvm-16/bin -C link-arg=-fuse-ld=lld"
if [ -z "$musl" ]; then
  # Packed relative relocations (DT_RELR, glibc 2.36 and newer): the position-independent
  # binary's relocation table goes from 145 KB to 2 KB on aarch64, and so does what the
  # loader reads of it at start. Binutils 2.40 cannot pack them for aarch64.
  rustflags+=" -C link-arg=-Wl,-z,pack-relative-relocs"
else
  # Static with musl (Debian's musl-dev for the target): no C library to map beside the
  # agent, whose resident memory on the board goes from 5.2 MB (glibc) to 3.3 MB. The GNU
  # cross compiler builds and links against musl through musl's gcc specs file. Rust's musl
  # std links libunwind; with panic = "abort" nothing unwinds, and gcc's unwinder stands in
  # (its glibc-only _dl_find_object lookup is stubbed to "not found": it then falls back to
  # dl_iterate_phdr, which musl has).
  specs=/usr/lib/$musl/musl-gcc.specs
  cflags+=" -specs=$specs"
  unw=$CARGO_TARGET_DIR/$target/unwind
  mkdir -p "$unw"
  printf 'int _dl_find_object(void *pc, void *result) { (void)pc; (void)result; return -1; }\n' > "$unw/dlfo.c"
  "$gcc-gcc" -O2 -c "$unw/dlfo.c" -o "$unw/dlfo.o"
  cp "$("$gcc-gcc" -print-file-name=libgcc_eh.a)" "$unw/libunwind.a"
  chmod u+w "$unw/libunwind.a"
  "$gcc-ar" rs "$unw/libunwind.a" "$unw/dlfo.o" 2>/dev/null
  rustflags+=" -C link-self-contained=no -C link-arg=-specs=$specs -L $PWD/$unw -C link-arg=-Wl,--no-dynamic-linker"
  export "CC_$t_env=$gcc-gcc" "CARGO_TARGET_${T_ENV}_LINKER=$gcc-gcc"
fi
export "CFLAGS_$t_env=$cflags" "$rustflags_var=$rustflags"
# The standard library is compiled from source with the agent (Debian's rust-web-src and
# cargo-web, both from scripts/setup-cross.sh): optimized for size and link-time optimized
# together with the agent, without backtrace symbolization (a panic still prints its message
# and location). -654 KB on aarch64. -Z build-std is unstable, so this build sets
# RUSTC_BOOTSTRAP=1 for that one compiler. GWE_PREBUILT_STD=1 links Debian's precompiled std
# instead (gnu targets only), as the Yocto and Buildroot recipes do.
build() {
  if [ "${GWE_PREBUILT_STD:-0}" = 1 ]; then
    RUSTC=/usr/bin/rustc cargo build --locked --release --target "$target" --bin gwe "$@"
  else
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --locked --release \
      --target "$target" --bin gwe -Z build-std=std,panic_abort -Z build-std-features= "$@"
  fi
}
built=$CARGO_TARGET_DIR/$target/release/gwe
# place FILE: the stripped binary as FILE, its software bill of materials (CycloneDX: every
# crate linked in) beside it.
place() {
  mkdir -p "$(dirname "$1")"
  "$gcc-strip" -o "$1.tmp" "$built"
  mv "$1.tmp" "$1"
  python3 scripts/sbom.py --target "$target" --out "$1.cdx.json" >/dev/null
}
bin=$out_root/$target/release/gwe
shown=$bin
if [ -n "$variant" ]; then
  shown=$out_root/variant-$variant/$target/release/gwe
  build --features "$variant" "$@"
  place "$shown"
  # The real agent's build is still fresh: cargo only puts it back in place.
fi
build "$@"
place "$bin"
echo "$shown $(stat -c %s "$shown") bytes"
