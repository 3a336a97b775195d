# Cross-building for ARM64 (AArch64) Linux on an x86-64 Debian machine: Debian's
# g++-aarch64-linux-gnu, the arm64 libraries installed beside the amd64 ones
# (multiarch, /usr/lib/aarch64-linux-gnu), and qemu-user to run what is built
# (tests, gtest's test discovery). scripts/test-arm64.sh sets it all up.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
# Programs (pkg-config, help2man) are the build machine's; libraries and headers the target's.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
