"""Where a bundle runs: the runtimes on this host (`runtimes`), a runtime in its own environment
(`envs`), the aarch64 runtimes under qemu user mode (`emulator`), a device over ssh (`device`),
the standalone runner each of those executes (`device_runner`), and the checks that compare a
file's answers with PyTorch's (`checks`)."""
