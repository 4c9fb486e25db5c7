//! Where tasks run: the GPU when libtorch sees one, otherwise the CPU.

use tch::Device;

/// The device inner tasks should run on: CUDA device 0 when available, else the CPU.
pub fn default_device() -> Device {
    Device::cuda_if_available()
}

/// Per-thread libtorch set-up for a worker that owns one task: a single intra-op thread, so
/// parallel workers do not oversubscribe the cores (and runs stay reproducible).
pub fn init_worker_thread() {
    tch::set_num_threads(1);
}
