"""Where a bundle runs: the runtimes on this host (`runtimes`), a runtime in its own environment
(`envs`), the aarch64 runtimes under qemu user mode (`emulator`, in the userland `sysroot` sets
up), a device over ssh (`device`), the standalone runner each of those executes
(`device_runner`), and the step model's own session (`incremental`)."""
